"""What each message says, as data. The outbox carries these payloads; notifiers render them.

Outbox kinds (the contract every ``Notifier`` implements):

* ``approval_request`` — ``{request, layer, approver, note?}``: ask one approver to decide a layer;
  ``note`` says why they are asked again (a reminder) or at all (an escalation). Or
  ``{request, layer, channel, approvers, note?}``: post the ask in the layer's channel (a later one with a
  ``note`` replies in the first post's thread); ``approvers`` are DMed instead if the post fails.
* ``approval_update``  — ``{request, layer, outcome}``: every copy of a layer's approval message
  now shows ``outcome`` and loses its buttons.
* ``requester``        — ``{request, event, text}``: tell the requester what happened.
* ``audit``            — ``{request, event, actor, text}``: one line in the audit channel, threaded under
  the request's root; several lines waiting together go out as one digest (``deliver_batch``).
* ``alert``            — ``{request, text}``: something needs a human (failed grant, overdue revoke,
  break-glass use). Goes to the audit channel and the security channel.
* ``review_request``   — ``{request, reviewer, note?}``: ask one reviewer to acknowledge or flag a
  break-glass use after the fact.
* ``review_update``    — ``{request, outcome}``: every copy of the review request shows ``outcome``.
* ``report``           — ``{text, since, until, weekly}``: the scheduled access review (Markdown) for the
  audit channel; ``weekly`` is ``[[week, granted_h, baseline_h], …]`` (bot/services/background/scheduled.py).
* ``transition_notice``— ``{email, eligibility, text}``: DM a standing member before their standing
  access ends (bot/services/transition.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.domain.policy import ApprovalLayer
from bot.services.auditing.audit import append_event
from bot.services.outbox import sql as outbox_sql
from bot.services.outbox.dispatcher import AUDIT_LANE, enqueue
from bot.services.runtime import Runtime
from storage.core_tx import CoreTx, Writer
from storage.tables import AccessRequest, ApprovalVote, Grant

SYSTEM = "jitbot"


def snapshot(req: AccessRequest, votes: Sequence[ApprovalVote] = (), grant: Grant | None = None,
             *, description: str = "", target: str = "") -> dict[str, Any]:
    """The request as messages show it, frozen at the moment the message is written."""
    return {
        "id": req.id,
        "kind": req.kind,
        "parent_id": req.parent_id,
        "eligibility": req.eligibility,
        "description": description,
        "target": target,
        "requester": req.requester,
        "requester_slack": req.requester_slack,
        "submitted_by": req.submitted_by,
        "submitted_by_slack": req.submitted_by_slack,
        "starts_at": req.starts_at.isoformat() if req.starts_at else None,
        "duration_s": req.duration_s,
        "justification": req.justification,
        "ticket": req.ticket,
        "status": req.status,
        "layer": req.layer,
        "layers": req.layers,
        "created_at": req.created_at.isoformat(),
        "approvals": [{"layer": v.layer, "approver": v.approver, "decision": v.decision}
                      for v in votes],
        "expires_at": grant.expires_at.isoformat() if grant and grant.expires_at else None,
        "granted_at": grant.granted_at.isoformat() if grant and grant.granted_at else None,
        "context": req.context,  # approval context: the Jira ticket, the on-call shift (services/context/tickets.py)
    }


def describe(rt: Runtime, req: AccessRequest, votes: Sequence[ApprovalVote] = (),
             grant: Grant | None = None) -> dict[str, Any]:
    elig = rt.eligibility(req.eligibility)
    target = f"{elig.target.kind} {elig.target.ref}" if elig else ""
    return snapshot(req, votes, grant, description=elig.description if elig else "", target=target)


def audit_key(request_id: str) -> str:
    """The order key of a request's alerts. They keep their own order (the thread root first) apart from
    the request's DMs, so a slow audit channel never holds up a person's message."""
    return f"{request_id}:audit"


async def record(
    rt: Runtime,
    session: Writer,
    *,
    at: datetime,
    kind: str,
    actor: str,
    req: AccessRequest | None,
    snap: dict[str, Any] | None,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: dict[str, Any] | None = None,
    text: str = "",
) -> None:
    """Append the event to the audit chain and queue its audit-channel line, in the caller's transaction."""
    request_id = req.id if req is not None else None
    await append_event(session, at=at, kind=kind, actor=actor, request_id=request_id,
                       from_state=from_state, to_state=to_state, detail=detail)
    # One lane for the whole audit channel: posted in order, as digests when lines pile up (outbox.py).
    enqueue(session, at=at, order_key=AUDIT_LANE, kind="audit",
            payload={"request": snap, "event": kind, "actor": actor, "text": text})


def requester_key(request_id: str) -> str:
    """The order key of what a request tells its requester: in order among themselves, apart from the
    approvers' messages and their updates (a slow or failing update of an approver's DM, or a chain of
    them in another replica, never holds up "You now have …"). Nothing of the requester's is ever
    updated, so nothing else needs to come after it."""
    return f"{request_id}:requester"


def layer_key(request_id: str, layer: int) -> str:
    """The order key of an approval layer's messages: its approvers' DMs, then their updates (which need
    the DMs' refs). Layers keep their own order, so a failing update of layer 1's messages never holds
    up the DMs that ask layer 2."""
    return f"{request_id}:layer{layer}"


def tell_requester(session: Writer, *, at: datetime, snap: dict[str, Any], event: str, text: str) -> None:
    enqueue(session, at=at, order_key=requester_key(snap["id"]), kind="requester",
            payload={"request": snap, "event": event, "text": text})


def ask_key(request_id: str, layer: int, approver: str) -> str:
    """The order key of one approver's asks for a layer: each approver is asked apart from the others,
    so a large group is asked in parallel (within Slack's limits, which the dispatcher keeps), not one
    after the other on the layer's key."""
    return f"{layer_key(request_id, layer)}:a{zlib.crc32(approver.lower().encode()):08x}"


def asks_params(request_id: str, layer: int) -> dict[str, str]:
    """What finds every ``ask_key`` of the layer (``ASKS_LEFT``, ``WITHDRAW_ASKS``): the keys from
    ``<layer key>:a`` up to ``<layer key>:b``, a seek on the (order_key, status, id) index (order keys
    sort byte by byte: storage/tables.py), and the LIKE pattern they all match."""
    prefix = f"{layer_key(request_id, layer)}:a"
    return {"b_lo": prefix, "b_hi": f"{layer_key(request_id, layer)}:b", "b_prefix": prefix + "%"}


def ask_approvers(session: Writer, *, at: datetime, snap: dict[str, Any], layer: int,
                  approvers: Sequence[str], note: str | None = None) -> None:
    for approver in sorted(approvers):
        payload: dict[str, Any] = {"request": snap, "layer": layer, "approver": approver}
        if note:
            payload["note"] = note
        enqueue(session, at=at, order_key=ask_key(snap["id"], layer, approver), kind="approval_request",
                payload=payload)


def channel_key(request_id: str, layer: int, channel: str) -> str:
    """The order key of a layer's channel post and its thread replies (an ask like an approver's: a
    decision withdraws what is not yet posted)."""
    return ask_key(request_id, layer, f"channel:{channel}")


def ask_layer(session: Writer, *, at: datetime, snap: dict[str, Any], layer: int, spec: ApprovalLayer | None,
              approvers: Sequence[str], note: str | None = None, escalation: bool = False) -> None:
    """Ask ``approvers`` to decide ``layer`` where the layer says (``approvers.channel`` / ``notify``): one
    post in its channel (later asks — reminders, an escalation — reply in that post's thread), and/or a
    DM each. An escalation always DMs the people it adds. A channel post that fails falls back to DMs
    (``approvers`` travel with it) and an alert (bot/slack/channel_asks.py)."""
    channel = spec.approvers.post_channel if spec is not None else None
    if channel is not None:
        payload: dict[str, Any] = {"request": snap, "layer": layer, "channel": channel,
                                   "approvers": sorted(approvers)}
        if note:
            payload["note"] = note
        enqueue(session, at=at, order_key=channel_key(snap["id"], layer, channel), kind="approval_request",
                payload=payload)
    if channel is None or escalation or (spec is not None and spec.approvers.dm):
        ask_approvers(session, at=at, snap=snap, layer=layer, approvers=approvers, note=note)


def ask_reviewers(session: Writer, *, at: datetime, snap: dict[str, Any], reviewers: Sequence[str],
                  note: str | None = None) -> None:
    for reviewer in sorted(reviewers):
        payload: dict[str, Any] = {"request": snap, "reviewer": reviewer}
        if note:
            payload["note"] = note
        enqueue(session, at=at, order_key=snap["id"], kind="review_request", payload=payload)


def update_reviews(session: Writer, *, at: datetime, snap: dict[str, Any], outcome: str) -> None:
    enqueue(session, at=at, order_key=snap["id"], kind="review_update", payload={"request": snap, "outcome": outcome})


async def update_approvals(session: Writer, *, at: datetime, snap: dict[str, Any], layer: int,
                           outcome: str) -> None:
    """The layer is decided: its asks not yet delivered are withdrawn (in this transaction), and every
    copy delivered is updated (after the asks still in flight: bot/slack/notifier.py)."""
    params = {**asks_params(snap["id"], layer), "b_now": at}
    if isinstance(session, CoreTx):
        await session.many(outbox_sql.WITHDRAW_ASKS, [params])
    else:
        await session.execute(outbox_sql.WITHDRAW_ASKS, params)
    enqueue(session, at=at, order_key=layer_key(snap["id"], layer), kind="approval_update",
            payload={"request": snap, "layer": layer, "outcome": outcome, "at": at.isoformat()})


def alert(session: Writer, *, at: datetime, snap: dict[str, Any] | None, text: str) -> None:
    enqueue(session, at=at, order_key=audit_key(snap["id"]) if snap else "alert", kind="alert",
            payload={"request": snap, "text": text})
