"""What becomes of one grant carried out at the identity provider, recorded under its claim's fence.
Before the IdP call, ``not_allowed`` asks whether the policy still allows it and ``refuse`` ends it when not
(the request becomes REVOKED, whatever it may own at the IdP is removed). After the call, ``grant_done``
records it active, or reports a stale claim so that the caller undoes what it added; ``grant_failed``
schedules a transient failure again with backoff until the grant's deadline (``grant_window.py``) and fails
the request, audited and alerted once, when the provider refuses or the deadline has passed. The carrying
out itself, claims and concurrency, is ``GrantService`` in ``grants.py``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.requests import BREAKGLASS, Status, check_transition
from bot.services import notices
from bot.services.access.fencing import Fence, granted_after_stop
from bot.services.access.grant_window import grant_deadline, grant_expiry, window_end
from bot.services.access.revocation_outcomes import backoff
from bot.services.claims import lock_holder
from bot.services.context.grant_context import capped_expiry
from bot.services.requesting.request_rows import load_request, load_votes, read_request, read_votes
from bot.services.runtime import Runtime
from connectors.base import ConnectorError, IdpUser, RateLimited
from storage.records import Unit
from storage.tables import AccessRequest, Grant

log = logging.getLogger(__name__)

# A transient grant failure is tried again at most this long after the last try (a requester is waiting).
GRANT_BACKOFF_CAP_S = 60.0
_GRANT_LOCKED = select(Grant).where(Grant.id == bindparam("b_id")).with_for_update()  # built once
_GRANTS = Grant.__table__  # type: ignore[attr-defined]
_GRANT_ROW = select(_GRANTS).where(_GRANTS.c.id == bindparam("b_id")).with_for_update()  # PostgreSQL: locked


async def locked_grant(session: AsyncSession, grant_id: str) -> Grant:
    """The grant ``grant_id``, its row locked (PostgreSQL) for the transaction."""
    row = (await session.execute(_GRANT_LOCKED, {"b_id": grant_id})).scalar_one()
    return row


async def snapshot(rt: Runtime, session: AsyncSession, req: AccessRequest, grant: Grant | None) -> dict[str, object]:
    """The request as notices describe it (``notices.describe``), with its votes and ``grant``."""
    return notices.describe(rt, req, await load_votes(session, req.id), grant)


async def not_allowed(rt: Runtime, req: Any, g: Any) -> str | None:
    """Why the policy *now* no longer allows carrying out an approved grant (its eligibility is gone, now
    grants another target, no longer allows break-glass, the requester is no longer a requestor), or its
    approved window is over; None when it may go ahead."""
    now, eligibility, requester = rt.clock.now(), req.eligibility, req.requester
    elig = rt.eligibility(eligibility)
    if elig is None:
        return f"{eligibility} is no longer in the access policy"
    if (elig.connector, elig.target.kind, elig.target.ref) != (g.connector, g.target_kind, g.target_id):
        return (f"{eligibility} now grants {elig.target.kind} {elig.target.ref} at {elig.connector}, "
                f"not the {g.target_kind} {g.target_id} at {g.connector} that was approved; request it again")
    if req.kind == BREAKGLASS and elig.break_glass is None:
        return f"{eligibility} no longer allows break-glass access"
    if (end := window_end(req)) <= now:
        return f"its approved window ended at {end:%Y-%m-%d %H:%M} UTC before it could be granted"
    if not await rt.directory.contains(rt.policy, elig.requestors, requester):
        return f"{requester} is no longer allowed to request {eligibility}"
    return None


async def refuse(rt: Runtime, row: Any, why: str, fence: Fence) -> None:
    """End a grant the policy no longer allows, before its IdP call: the request becomes REVOKED, the
    requester is told why, and whatever the grant may own at the IdP is removed."""
    now = rt.clock.now()
    async with rt.db.transaction() as session:
        await lock_holder(rt.db, session, row)
        g = await locked_grant(session, row.id)
        if g.status != "granting" or not fence.valid(g):
            return
        req = await load_request(session, g.request_id, lock=True)
        g.claimed_until, g.warn_at, g.end_reason = None, None, "ineligible"
        if g.owns_membership or g.pre_member is False:  # inherited, or added by an earlier attempt
            g.status, g.owns_membership, g.next_attempt_at = "revoking", True, now
        else:
            g.status, g.ended_at, g.next_attempt_at = "ended", now, None
        from_state = req.status
        check_transition(Status(req.status), Status.REVOKED)
        req.status, req.updated_at, req.version = Status.REVOKED.value, now, req.version + 1
        snap = await snapshot(rt, session, req, g)
        await notices.record(rt, session, at=now, kind="grant_refused", actor=notices.SYSTEM, req=req, snap=snap,
                             from_state=from_state, to_state=Status.REVOKED.value,
                             detail={"grant": g.id, "reason": why}, text=f"not granted: {why}")
        notices.tell_requester(session, at=now, snap=snap, event="revoked",
                               text=f"Your request {req.id} for {req.eligibility} was not carried out: {why}.")
    rt.wake.set()


async def grant_done(rt: Runtime, row: Any, user: IdpUser, *, added: bool, fence: Fence) -> bool:
    """Record a grant's IdP call; False (nothing recorded) when ``fence`` is stale (fencing.py)."""
    now = rt.clock.now()
    rt.directory.forget_person(row.user_email)  # the target may be a group the policy names for people
    async with rt.db.core_transaction() as session:  # the rows as objects, without the ORM's session
        # Serialised with the membership's ownership decisions (the revocation's, under the same lock):
        # what this grant owns is read now, under the lock. A revocation may have handed it the
        # membership while its IdP call was in flight (owns_membership, pre_member False).
        await lock_holder(rt.db, session, row)
        unit = Unit(session)
        g = await unit.first(Grant, _GRANT_ROW, {"b_id": row.id})
        assert g is not None  # claimed by this worker: never deleted
        if not fence.valid(g):
            return False
        owns = added or g.pre_member is False or g.owns_membership
        req = await read_request(unit, g.request_id, lock=True)
        if g.status != "granting":  # stopped (cancelled, revoked, refused) while its IdP call was in flight
            await granted_after_stop(rt, unit, session, g, req, user, added=added, now=now)
            return True
        elig = rt.eligibility(req.eligibility)
        warn_before = elig.warn_before if elig else timedelta(minutes=15)
        g.status, g.owns_membership, g.user_idp_id, g.granted_at = "active", owns, user.id, now
        # the maximum in force now, within the approved window, never past the shift or ticket behind it
        g.expires_at = capped_expiry(req, grant_expiry(req, elig, now))
        g.warn_at = g.expires_at - warn_before if g.expires_at - warn_before > now else None
        g.claimed_until, g.next_attempt_at, g.last_error = None, None, None
        from_state = req.status
        check_transition(Status(req.status), Status.ACTIVE)
        req.status, req.updated_at, req.version = Status.ACTIVE.value, now, req.version + 1
        snap = notices.describe(rt, req, await read_votes(unit, req.id), g)
        await notices.record(rt, session, at=now, kind="granted", actor=notices.SYSTEM, req=req, snap=snap,
                             from_state=from_state, to_state=Status.ACTIVE.value,
                             detail={"grant": g.id, "owns_membership": owns, "expires_at": g.expires_at.isoformat(),
                                     "standing_before": g.pre_member},
                             text=f"granted until {g.expires_at:%Y-%m-%d %H:%M} UTC")
        notices.tell_requester(session, at=now, snap=snap, event="active",
                               text=f"You now have {req.eligibility} until {g.expires_at:%Y-%m-%d %H:%M} UTC.")
        await unit.flush()
    return True


async def grant_failed(rt: Runtime, grant_id: str, exc: ConnectorError, *, holder: Any = None,
                       fence: Fence | None = None) -> None:
    """A grant's IdP call failed. A transient failure is tried again with backoff until the grant's
    deadline (``grant_deadline``); the requester is told once that the grant waits on the IdP. A
    permanent failure, or the deadline passed, fails the request: logged once at ERROR, audited and
    alerted with the technical cause."""
    now = rt.clock.now()
    async with rt.db.transaction() as session:
        if holder is not None:  # the membership's lock before the row's, as the revocation takes them
            await lock_holder(rt.db, session, holder)
        g = await locked_grant(session, grant_id)
        if fence is not None and not fence.valid(g):  # another worker's now: its outcome is recorded
            log.warning("grant %s: a failure under a stale claim is not recorded: %s", grant_id, exc)
            return
        g.attempts += 1
        g.last_error, g.claimed_until, g.claimed_by = str(exc)[:500], None, None
        req = await load_request(session, g.request_id, lock=True)
        deadline = grant_deadline(rt, req)
        if exc.retryable and now < deadline:
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            g.next_attempt_at = min(now + backoff(g.attempts, cap=GRANT_BACKOFF_CAP_S, retry_after=retry_after),
                                    deadline)
            log.warning("grant %s attempt %d failed, retrying until %s: %s", g.id, g.attempts,
                        f"{deadline:%Y-%m-%d %H:%M:%S}", exc)
            if g.attempts == 1:  # said once, at the first failure: the grant waits on the IdP
                snap = await snapshot(rt, session, req, g)
                await notices.record(rt, session, at=now, kind="grant_waiting", actor=notices.SYSTEM, req=req,
                                     snap=snap, detail={"grant": g.id, "attempts": g.attempts, "cause": str(exc),
                                                        "retry_until": deadline.isoformat()},
                                     text=f"waiting on {g.connector}: {exc.user_message} "
                                          f"(retrying until {deadline:%Y-%m-%d %H:%M} UTC)")
                notices.tell_requester(session, at=now, snap=snap, event="waiting",
                                       text=f"Your {req.eligibility} access ({req.id}) is approved, but "
                                            f"{g.connector} is not answering. jitbot keeps trying until "
                                            f"{deadline:%Y-%m-%d %H:%M} UTC and tells you when it is granted.")
            return
        # Clean up whatever may have been added at the IdP (idempotent if nothing was), and what a
        # revocation may have handed this grant meanwhile. A grant whose membership check never
        # answered never called ``grant`` (pre_member is written before it): unless it was handed a
        # membership, nothing was added, so there is nothing to clean up or to say about one.
        if g.pre_member is None and not g.owns_membership:
            g.status, g.end_reason, g.next_attempt_at, g.ended_at = "ended", "failed", None, now
        else:
            g.status, g.end_reason, g.next_attempt_at = "revoking", "failed", now
            g.owns_membership = g.owns_membership or g.pre_member is False
        check_transition(Status(req.status), Status.FAILED)
        req.status, req.updated_at, req.version = Status.FAILED.value, now, req.version + 1
        why = "the provider refused it" if not exc.retryable else \
            f"still failing at the deadline {deadline:%Y-%m-%d %H:%M} UTC"
        log.error("grant %s (%s) failed for good after %d attempt(s), %s: %s", g.id, req.id, g.attempts, why, exc)
        snap = await snapshot(rt, session, req, g)
        await notices.record(rt, session, at=now, kind="grant_failed", actor=notices.SYSTEM, req=req, snap=snap,
                             from_state=Status.APPROVED.value, to_state=Status.FAILED.value,
                             detail={"grant": g.id, "attempts": g.attempts, "error": exc.user_message,
                                     "cause": str(exc), "error_type": type(exc).__name__,
                                     "cleanup": "none needed: nothing was added at the IdP"
                                     if g.status == "ended" else "membership removal scheduled"},
                             text=f"grant failed after {g.attempts} attempt(s), {why}: {exc.user_message}")
        notices.alert(session, at=now, snap=snap,
                      text=f"Grant for {req.id} failed for good after {g.attempts} attempt(s), {why}. "
                           f"Cause: {type(exc).__name__}: {str(exc)[:300]}. jitbot stopped trying; "
                           f"an administrator may retry it (/jit admin retry {req.id}).")
        notices.tell_requester(session, at=now, snap=snap, event="failed",
                               text=f"We could not grant {req.eligibility} ({req.id}): {exc.user_message} "
                                    "Administrators were alerted.")
    rt.wake.set()
