"""Fencing claims: a worker acts on, and records, a claimed row only while its claim is still the row's.

Every claim raises the row's ``claim_token`` by one (bot/services/claims.py, bot/services/outbox/sql.py)
and hands the claimer the new value. A worker paused past its lease (a VM pause, SIGSTOP, a partition)
may resume after another worker claimed the row: the token it holds is then stale. So

* before each identity-provider call for a grant the worker checks the token (``holds``) and does not
  make the call with a stale one;
* every outcome is recorded only under the token (the record reads the row under the membership's lock
  and compares): a stale outcome is not recorded as the grant's;
* a grant call whose grant was stopped (cancelled, revoked, refused) while it was in flight, under a
  valid token, is audited and its membership handed to the revocation pipeline (``granted_after_stop``);
* a grant call that went through with a stale token (the pause fell between the check and the call) is
  undone (``undo_stale_grant``): the membership it added is removed, unless a live grant of the same
  membership needs it or it was there before the call (the call did not add it). Either way the event is
  audited (``stale_claim``) and, when something was removed or could not be, the audit channel alerted.

The outbox is fenced the same way (bot/services/outbox/fence.py). What is not fenced is stated in
docs/reliability.md ("Fencing").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from bot.services import notices
from bot.services.claims import HOLDER_BOUND, holder_params, lock_holder
from bot.services.requesting.not_started import not_started
from bot.services.requesting.request_rows import read_request, read_votes
from bot.services.runtime import Runtime
from connectors.base import ConnectorError, IdpUser, Target, TargetKind
from storage.records import Unit
from storage.tables import Grant

log = logging.getLogger(__name__)

_GRANTS = Grant.__table__  # type: ignore[attr-defined]
_TOKEN = select(_GRANTS.c.claim_token).where(_GRANTS.c.id == bindparam("b_id"))
# The grants of the same membership as a given one (``holder_params``) that may hold it, and the grant itself.
_SAME_MEMBERSHIP = select(_GRANTS).where(*HOLDER_BOUND, _GRANTS.c.status.in_(["active", "granting"]))
_GRANT_ROW = select(_GRANTS).where(_GRANTS.c.id == bindparam("b_id"))


@dataclass(frozen=True, slots=True)
class Fence:
    """The claim a worker holds on one grant: its id and the token its claim set."""

    grant_id: str
    token: int

    def valid(self, row: Any) -> bool:
        """Whether ``row`` (the grant as just read) still carries this claim's token."""
        return int(row.claim_token) == self.token


async def holds(rt: Runtime, fence: Fence) -> bool:
    """Whether the grant still carries ``fence``'s token (no other worker claimed it since): checked before
    each identity-provider call. A stale fence is logged; nothing was done under it, nothing to undo."""
    async with rt.db.core_reads() as reads:
        tokens = await reads.scalars(_TOKEN, {"b_id": fence.grant_id})
    if tokens and int(tokens[0]) == fence.token:
        return True
    log.warning("grant %s: claim token %d is stale (now %s); another worker took the grant over, this one "
                "stops before calling the identity provider", fence.grant_id, fence.token, tokens[:1])
    return False


async def granted_after_stop(rt: Runtime, unit: Unit, session: Any, g: Grant, req: Any, user: IdpUser, *,
                             added: bool, now: datetime) -> None:
    """The IdP call of a grant stopped meanwhile went through: the request stays as it was stopped, and
    a membership the call added (``added``, or the person was no member before it) is removed by the
    revocation pipeline. Audited, never raised: the membership must not be left behind."""
    ours = added or g.pre_member is False
    was = g.status
    if ours and not (g.status == "revoking" and g.owns_membership):
        if g.status != "revoking":  # a revocation already under way keeps its claim and schedule
            g.claimed_until, g.next_attempt_at, g.ended_at = None, now, None
        g.status, g.owns_membership = "revoking", True
        g.end_reason = g.end_reason or "revoked"
    g.user_idp_id = g.user_idp_id or user.id
    snap = notices.describe(rt, req, await read_votes(unit, req.id), g)
    await notices.record(rt, session, at=now, kind="granted_after_stop", actor=notices.SYSTEM, req=req,
                         snap=snap, detail={"grant": g.id, "was": was, "added": added,
                                            "cleanup": "membership removal scheduled" if ours
                                            else "none: the person was a member before"},
                         text=f"the identity provider carried out the grant after it was {req.status}"
                              + ("; removing the membership" if ours else ""))
    await unit.flush()
    rt.wake.set()


async def live_holders(unit: Unit, row: Any, now: Any) -> list[str]:
    """The grants (``row`` included) that hold or are being granted ``row``'s membership now: a grant
    active, or being carried out (started: ``not_started``), of the same (connector, target, user)."""
    same = await unit.all(Grant, _SAME_MEMBERSHIP, {**holder_params(row), "h_id": ""})
    return sorted(g.id for g in same if not not_started(g, now))


async def undo_stale_grant(rt: Runtime, fence: Fence, row: Any, user: IdpUser, *, added: bool) -> None:
    """A grant call made under ``fence`` went through after another worker claimed the grant; its outcome
    was not recorded. Under the membership's lock (``lock_holder``, the order of every ownership decision)
    the membership is removed when the call added it and no live grant of it needs it; audited
    (``stale_claim``) either way, alerted when removed or when removing failed. The removal is made right
    after the audit's commit, never inside the transaction: an IdP call (up to a minute with its retries)
    would outlast ``idle_in_transaction_session_timeout`` (storage/db.py), and the server ending the
    transaction would take the audit with it — the late add, and its removal, left unaudited."""
    now = rt.clock.now()
    async with rt.db.core_transaction() as session:
        await lock_holder(rt.db, session, row)
        unit = Unit(session)
        g = await unit.first(Grant, _GRANT_ROW, {"b_id": row.id})
        assert g is not None
        live = await live_holders(unit, g, now)
        req = await read_request(unit, g.request_id, lock=True)
        if not added:
            action = "none: the call added nothing (the person was a member already)"
        elif live:
            action = f"none: the membership is needed by live grant(s) {', '.join(live)}"
        else:
            action = "removed"
        snap = notices.describe(rt, req, await read_votes(unit, req.id), g)
        await notices.record(rt, session, at=now, kind="stale_claim", actor=notices.SYSTEM, req=req, snap=snap,
                             detail={"grant": g.id, "token": fence.token, "current_token": int(g.claim_token),
                                     "status": g.status, "added": added, "undo": action},
                             text="a worker whose claim had passed to another carried out the grant late; "
                                  f"undo: {action}")
        if added and not live:
            notices.alert(session, at=now, snap=snap,
                          text=f"A paused worker added {g.user_email} to {g.target_id} at {g.connector} after its "
                               f"claim on {g.id} ({req.id}) had passed to another worker; undo: {action}.")
        await unit.flush()
    if added and not live:
        action = await _remove(rt, g, user)
        if action != "removed":
            async with rt.db.core_transaction() as session:
                notices.alert(session, at=now, snap=snap, text=f"Removing the membership a paused worker added "
                              f"late for {g.id} ({req.id}) failed: {action}. Remove it by hand.")
    log.warning("grant %s: stale claim token %d (now %d); undo: %s", g.id, fence.token, g.claim_token, action)


async def _remove(rt: Runtime, g: Any, user: IdpUser) -> str:
    try:
        await rt.connector(g.connector).revoke(user, _target(g), grant_id=g.id)
    except ConnectorError as exc:
        return f"removal failed: {exc.user_message}"
    return "removed"




def _target(g: Any) -> Target:
    return Target(kind=TargetKind(g.target_kind), id=g.target_id)


async def undo_stale_revoke(rt: Runtime, fence: Fence, row: Any, user: IdpUser) -> None:
    """A revocation call made under ``fence`` removed the membership after another worker had claimed the
    revocation (and may have handed the membership on, or a new grant of it may have added it since). Under
    the membership's lock: when a live grant of it holds it, the membership is added back for that grant;
    audited (``stale_claim``), alerted when it had to be added back or adding it back failed. On SQLite the
    call follows the audit's commit (one writer), as in ``undo_stale_grant``."""
    now, hold = rt.clock.now(), not rt.db.is_sqlite
    action = "none: no live grant holds the membership"
    async with rt.db.core_transaction() as session:
        await lock_holder(rt.db, session, row)
        unit = Unit(session)
        g = await unit.first(Grant, _GRANT_ROW, {"b_id": row.id})
        assert g is not None
        heirs = [h for h in await unit.all(Grant, _SAME_MEMBERSHIP, {**holder_params(row), "h_id": row.id})
                 if h.status == "active" or not not_started(h, now)]
        heir = heirs[0] if heirs else None
        if heir is not None:
            action = f"added back for live grant {heir.id}"
            if hold:
                action = await _add_back(rt, heir, user, action)
        req = await read_request(unit, g.request_id, lock=True)
        snap = notices.describe(rt, req, await read_votes(unit, req.id), g)
        await notices.record(rt, session, at=now, kind="stale_claim", actor=notices.SYSTEM, req=req, snap=snap,
                             detail={"grant": g.id, "token": fence.token, "current_token": int(g.claim_token),
                                     "status": g.status, "removed": True, "undo": action},
                             text="a worker whose claim had passed to another removed the membership late; "
                                  f"undo: {action}")
        if heir is not None:
            notices.alert(session, at=now, snap=snap,
                          text=f"A paused worker removed {g.user_email} from {g.target_id} at {g.connector} after "
                               f"its claim on {g.id} ({req.id}) had passed to another worker; undo: {action}.")
        await unit.flush()
    if heir is not None and not hold:
        action = await _add_back(rt, heir, user, action)
        if action.startswith("adding back failed"):
            async with rt.db.core_transaction() as session:
                notices.alert(session, at=now, snap=snap, text=f"Adding back the membership of live grant "
                              f"{heir.id} that a paused worker removed failed: {action}. Add it by hand.")
    log.warning("grant %s: stale revocation claim token %d (now %d); undo: %s", g.id, fence.token,
                g.claim_token, action)


async def _add_back(rt: Runtime, heir: Any, user: IdpUser, done: str) -> str:
    try:
        await rt.connector(heir.connector).grant(user, _target(heir), grant_id=heir.id,
                                                 expires_at=heir.expires_at or rt.clock.now())
    except ConnectorError as exc:
        return f"adding back failed: {exc.user_message}"
    return done
