"""An approved extension request (``extension.reapproval``) moves its grant's expiry, or does nothing.

Called by ``approve_final`` (final_approval.py) inside the transaction that approved the request's last
layer (``bot/services/extensions.py`` creates the request). The expiry moves by a compare-and-set on
the grant row: only while the grant is still ``active`` and not yet due. Expiry claims the same row
the same way (``status = 'active' AND expires_at <= now`` → ``revoking``), so exactly one of the two
wins: an extension approved after the grant ended, or after its expiry was claimed, changes nothing
and never grants anything again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update

from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility
from bot.domain.requests import Status, check_transition
from bot.services import notices
from bot.services.context.grant_context import capped_expiry
from bot.services.requesting.request_rows import close_schedule
from bot.services.runtime import Runtime
from storage.records import Unit
from storage.tables import AccessRequest, ApprovalVote, Grant

_GRANTS = Grant.__table__  # type: ignore[attr-defined]
_REQUESTS = AccessRequest.__table__  # type: ignore[attr-defined]
_VOTES = ApprovalVote.__table__  # type: ignore[attr-defined]
_PARENT = select(_REQUESTS).where(_REQUESTS.c.id == bindparam("b_id"))
_ACTIVE_GRANT = select(_GRANTS).where(_GRANTS.c.request_id == bindparam("b_request"), _GRANTS.c.status == "active")
_MOVE_EXPIRY = (update(_GRANTS)
                .where(_GRANTS.c.id == bindparam("b_id"), _GRANTS.c.status == "active",
                       _GRANTS.c.expires_at == bindparam("b_old"), _GRANTS.c.expires_at > bindparam("b_now"))
                .values(expires_at=bindparam("v_expires"), warn_at=bindparam("v_warn"))
                .returning(_GRANTS.c.id))
_VOTE_ROWS = select(_VOTES).where(_VOTES.c.request_id == bindparam("b_id")).order_by(_VOTES.c.id)


def deadline_of(req: AccessRequest) -> datetime | None:
    """When an extension request must be decided by: the grant's expiry when it was asked."""
    ext = (req.context or {}).get("extends") or {}
    until = ext.get("until")
    return datetime.fromisoformat(until) if isinstance(until, str) else None


async def approve_extension(rt: Runtime, unit: Unit, req: AccessRequest, elig: Eligibility, *, actor: str,
                            auto: bool = False, votes: list[ApprovalVote] | None = None) -> None:
    """``req`` (an extension request) passed its last layer: move the parent grant's expiry by
    ``req.duration_s`` if it is still active, else end ``req`` as lapsed with nothing changed."""
    now, session = rt.clock.now(), unit.tx
    check_transition(Status(req.status), Status.APPROVED)
    votes = votes if votes is not None else await unit.all(ApprovalVote, _VOTE_ROWS, {"b_id": req.id})
    parent = await unit.first(AccessRequest, _PARENT, {"b_id": req.parent_id})
    grant = await unit.first(Grant, _ACTIVE_GRANT, {"b_request": req.parent_id}) if parent else None
    by = timedelta(seconds=req.duration_s)
    moved: list[Any] = []
    old = new = grant.expires_at if grant is not None else None
    allowed = elig.extension.allowed and elig.extension.reapproval  # the policy in force now decides
    if allowed and parent is not None and grant is not None and old is not None and old > now:
        new = capped_expiry(parent, capped_expiry(req, old + by))  # on-call shifts cap either
        warn = new - elig.warn_before if new - elig.warn_before > now else None
        if new > old:  # the compare-and-set: still active, still this expiry, not yet due
            moved = await session.rows(_MOVE_EXPIRY, {"b_id": grant.id, "b_old": old, "b_now": now,
                                                      "v_expires": new, "v_warn": warn})
    req.decided_at, req.updated_at, req.version = now, now, req.version + 1
    close_schedule(req)
    if not moved or parent is None or grant is None or old is None or new is None:
        req.status = Status.LAPSED.value
        snap = notices.describe(rt, req, votes)
        why = ("the policy no longer allows extensions beyond the maximum" if not allowed else
               "the extension would not move the expiry (an on-call shift caps it)" if old is not None and old > now
               and new is not None and new <= old else
               "the access it extends ended (or reached its expiry) before the extension was approved")
        await notices.record(rt, session, at=now, kind="extension_void", actor=actor, req=req, snap=snap,
                             from_state=Status.PENDING.value, to_state=Status.LAPSED.value,
                             detail={"extends": req.parent_id, "auto": auto}, text=f"extension not applied: {why}")
        notices.tell_requester(session, at=now, snap=snap, event="extension_void",
                               text=f"Your extension {req.id} of {req.parent_id} was not applied: {why}. "
                                    "Nothing changed; request the access again with /jit if you need it.")
        return
    grant.expires_at, grant.warn_at = new, new - elig.warn_before if new - elig.warn_before > now else None
    req.status = Status.APPROVED.value
    snap = notices.describe(rt, req, votes)
    detail = {"extends": parent.id, "grant": grant.id, "by": format_duration(by), "from": old.isoformat(),
              "to": new.isoformat(), "auto": auto}
    await notices.record(rt, session, at=now, kind="extension_approved", actor=actor, req=req, snap=snap,
                         from_state=Status.PENDING.value, to_state=Status.APPROVED.value, detail=detail,
                         text=f"extension of {parent.id} by {format_duration(by)} approved: access now ends "
                              f"{new:%Y-%m-%d %H:%M} UTC")
    parent_snap = notices.describe(rt, parent, (), grant)
    await notices.record(rt, session, at=now, kind="extended", actor=actor, req=parent, snap=parent_snap,
                         detail={**detail, "extension": req.id},
                         text=f"extended by {format_duration(by)} to {new:%Y-%m-%d %H:%M} UTC "
                              f"(extension {req.id}, approved)")
    notices.tell_requester(session, at=now, snap=parent_snap, event="extended",
                           text=f"Your extension {req.id} was approved: {parent.eligibility} ({parent.id}) now ends "
                                f"{new:%Y-%m-%d %H:%M} UTC.")
