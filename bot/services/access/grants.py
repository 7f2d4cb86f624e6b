"""Carrying out grants and revocations at the identity provider, and the schedule around them.

Grant states: ``granting`` → ``active`` → ``revoking`` → ``ended`` (``end_reason``: expired, released,
revoked, failed). Membership ownership: a grant ``owns_membership`` when the membership exists
because of it. Revoking a grant that does not own the membership (standing access, or another
grant owns it) never removes it; when the owner ends while another grant is active, ownership moves.
Revocation itself (decide, call the IdP, record) is the pipeline in ``bot/services/access/revocation.py``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility
from bot.domain.requests import BREAKGLASS, PolicyViolation, Status, check_transition
from bot.services import notices
from bot.services.access import backstop
from bot.services.access.fencing import Fence, granted_after_stop, holds, undo_stale_grant
from bot.services.access.revocation import LEASE, Revoker, backoff, idp_user, target_of
from bot.services.claims import FIRST_TOKEN, HOLDER_BOUND, claim_grants, holder_params, lock_holder
from bot.services.context.grant_context import capped_expiry, context_refusal
from bot.services.requesting.not_started import stop_before_start, waiting_grant
from bot.services.requesting.requests import allowed_seconds, load_request, load_votes, read_request, read_votes
from bot.services.runtime import Runtime
from connectors.base import ConnectorError, IdpUser, RateLimited
from storage.records import Unit
from storage.tables import AccessRequest, Event, Grant

log = logging.getLogger(__name__)

# A transient grant failure is tried again at most this long after the last try (a requester is waiting).
GRANT_BACKOFF_CAP_S = 60.0
_GRANT_LOCKED = select(Grant).where(Grant.id == bindparam("b_id")).with_for_update()  # built once
_REVOKING_SAME_MEMBERSHIP = select(Grant.id).where(*HOLDER_BOUND, Grant.status == "revoking").limit(1)
# One statement on the table, not a locked load and a flush of the ORM object (the claim is ours).
_GRANTS = Grant.__table__  # type: ignore[attr-defined]
# Compare-and-set: a revocation that handed this grant the membership meanwhile set it (False) already; a
# grant stopped meanwhile (cancelled, refused) is no longer 'granting' and records nothing.
_SET_PRE_MEMBER = (update(_GRANTS).where(_GRANTS.c.id == bindparam("b_id"), _GRANTS.c.pre_member.is_(None),
                                         _GRANTS.c.status == "granting", _GRANTS.c.claim_token == bindparam("b_token"))
                   .values(pre_member=bindparam("b_pre")))
_GRANT_PEEK = select(_GRANTS).where(_GRANTS.c.id == bindparam("b_id"))
_GRANT_ROW = _GRANT_PEEK.with_for_update()  # PostgreSQL: locked
_REQUESTS = AccessRequest.__table__  # type: ignore[attr-defined]
_REQUEST_OF = select(_REQUESTS.c.eligibility, _REQUESTS.c.requester, _REQUESTS.c.kind, _REQUESTS.c.ticket,
                     _REQUESTS.c.ends_by, _REQUESTS.c.duration_s, _REQUESTS.c.created_at, _REQUESTS.c.decided_at,
                     _REQUESTS.c.starts_at).where(
    _REQUESTS.c.id == bindparam("b_id"))
# the claim is ours: its grant goes again in two seconds (claimed_until cleared)
_LATER = (update(_GRANTS).where(_GRANTS.c.id == bindparam("b_id"))
          .values(next_attempt_at=bindparam("b_next"), claimed_until=None))


def grant_due(req: Any) -> datetime:
    """When an approved request's grant became due: its approval, or its scheduled start if later."""
    due: datetime = max(req.decided_at or req.created_at, req.starts_at or req.created_at)
    return due


def grant_deadline(rt: Runtime, req: AccessRequest) -> datetime:
    """Until when a grant failing transiently is tried again: policy ``settings.grant_retry_for`` (default:
    the request's own duration) after it became due (approval, or the scheduled start)."""
    retry_for = rt.policy.settings.grant_retry_for or timedelta(seconds=req.duration_s)
    return grant_due(req) + retry_for


def window_end(req: Any) -> datetime:
    """The end of the window the approval covers: the approved duration from when the grant became due.
    Time spent waiting (on the identity provider, on a claim) comes out of it, never on top of it."""
    return grant_due(req) + timedelta(seconds=req.duration_s)


def grant_expiry(req: AccessRequest, elig: Eligibility | None, now: datetime) -> datetime:
    """When a grant carried out ``now`` ends: the duration the policy allows now (``allowed_seconds``)
    from now, and never past the approved window (``window_end``)."""
    return min(now + timedelta(seconds=allowed_seconds(req, elig)), window_end(req))


class GrantService:
    # Grants run side by side, at most this many at once; a pass waits for them at most ``budget_s``,
    # then leaves the slow ones running (claimed) and ends, so a hanging IdP call can never hold up the
    # next pass's revocations.
    concurrency = 16
    budget_s = 2.0

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._running: dict[str, asyncio.Task[None]] = {}
        self._gate = asyncio.Semaphore(self.concurrency)
        self.stopping = False
        self._released: list[asyncio.Task[None]] = []  # claims given back by ``adopt`` while stopping

    # ---- helpers -------------------------------------------------------------------------------
    async def _grant(self, session: AsyncSession, grant_id: str) -> Grant:
        row = (await session.execute(_GRANT_LOCKED, {"b_id": grant_id})).scalar_one()
        return row

    async def _snap(self, session: AsyncSession, req: AccessRequest, grant: Grant | None) -> dict[str, object]:
        return notices.describe(self.rt, req, await load_votes(session, req.id), grant)

    async def _release(self, grant_id: str) -> None:
        async with self.rt.db.transaction() as session:
            g = await self._grant(session, grant_id)
            g.claimed_until = g.claimed_by = None

    # ---- granting ------------------------------------------------------------------------------
    async def run_grants(self, limit: int = 100) -> int:
        """Claim the due grants and carry them out side by side; return after ``budget_s`` at most."""
        now = self.rt.clock.now()
        ids = await claim_grants(self.rt.db, owner=self.rt.instance_id, status="granting",
                                 due_column=Grant.next_attempt_at, now=now, lease=LEASE, limit=limit,
                                 exclude=(Grant.id, list(self._running)))
        for gid in ids:
            task = asyncio.create_task(self._carry_out(gid, ids.tokens.get(gid)))
            self._running[gid] = task
            task.add_done_callback(functools.partial(self._done, gid))
        started = [self._running[gid] for gid in ids if gid in self._running]
        if started:
            await asyncio.wait(started, timeout=self.budget_s)
        return len(ids)

    def adopt(self, grant_id: str) -> None:
        """A grant this process's approving transaction claimed for it (``RequestService.approve_final``),
        committed: carried out now, beside the passes' grants, without a wake and a claim of its own.
        A worker stopping meanwhile gives the claim back, for the next worker to take at once."""
        if self.stopping:
            self._released.append(asyncio.create_task(self._release(grant_id)))
            return
        task = asyncio.create_task(self._carry_out(grant_id, FIRST_TOKEN))
        self._running[grant_id] = task
        task.add_done_callback(functools.partial(self._done, grant_id))

    async def _carry_out(self, grant_id: str, token: int | None = None) -> None:
        async with self._gate:
            await self.carry_out_grant(grant_id, token)

    def _done(self, grant_id: str, task: asyncio.Task[None]) -> None:
        self._running.pop(grant_id, None)
        if not task.cancelled() and task.exception() is not None:  # its claim runs out; the grant goes again
            log.error("grant %s failed", grant_id, exc_info=task.exception())

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait for grants still running (a worker stopping), then cancel what is left: their claims run
        out and the grants are carried out again (connectors' grants are idempotent)."""
        self.stopping = True
        if self._released:
            await asyncio.wait(self._released, timeout=timeout)
        running = list(self._running.values())
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def carry_out_grant(self, grant_id: str, token: int | None = None) -> None:
        """Carry out a claimed grant under ``token``, its claim's (None: read with the row)."""
        rt = self.rt
        later = [{"b_id": grant_id, "b_next": rt.clock.now() + timedelta(seconds=2)}]
        if rt.db.is_sqlite:
            # One writer at a time, no lock to take: the check is a read of the last commit, as it is
            # inside a write transaction (which a revocation can follow as soon as it commits). No write
            # turn and no commit for a grant that goes ahead (one of seven a flow).
            async with rt.db.core_reads() as reads:
                g = (await reads.rows(_GRANT_ROW, {"b_id": grant_id}))[0]
                revoking = bool(await reads.rows(_REVOKING_SAME_MEMBERSHIP, holder_params(g)))
                req = (await reads.rows(_REQUEST_OF, {"b_id": g.request_id}))[0]
            if revoking:  # a revoke of the same membership is in flight: let it finish first
                async with rt.db.core_transaction() as tx:
                    await tx.many(_LATER, later)
                return
        else:
            async with rt.db.core_transaction() as tx:  # Core statements (storage/core_tx.py): a row, not a Grant
                # The membership's lock first, then rows: the order of the revocation's ownership decisions
                # (which update this grant's row while holding that lock), so neither waits for the other.
                g = (await tx.rows(_GRANT_PEEK, {"b_id": grant_id}))[0]
                await lock_holder(rt.db, tx, g)  # serialised with the membership's revocations
                if await tx.rows(_REVOKING_SAME_MEMBERSHIP, holder_params(g)):
                    await tx.many(_LATER, later)  # a revoke of the same membership is in flight: after it
                    return
                req = (await tx.rows(_REQUEST_OF, {"b_id": g.request_id}))[0]
        fence = Fence(grant_id, g.claim_token if token is None else token)
        if g.status != "granting" or not fence.valid(g):  # stopped or refused, or claimed by another, since
            return
        connector = rt.connector(g.connector)
        pre_member: bool | None = g.pre_member
        try:
            if rt.follower is not None:  # checked under the fleet's applied policy, never an older one
                await rt.follower.catch_up()
            why = (await self._not_allowed(req, g)
                   or await context_refusal(rt, eligibility=req.eligibility, kind=req.kind, ticket=req.ticket,
                                            ends_by=req.ends_by))
            if why is not None:
                await self._refuse(g, why, fence)
                return
            user = await idp_user(rt, g)
            if pre_member is None:
                if not await holds(rt, fence):  # fenced: no IdP call under a claim another worker took over
                    return
                pre_member = await connector.is_member(user, target_of(g))
                async with rt.db.core_transaction() as tx:  # unless a revocation handed it the membership meanwhile
                    await tx.many(_SET_PRE_MEMBER, [{"b_id": grant_id, "b_pre": pre_member, "b_token": fence.token}])
            if not await holds(rt, fence):
                return
            # the expiry as _grant_done will record it, as of now (never later): the IdP's own, where it has one
            result = await connector.grant(user, target_of(g), grant_id=g.id, expires_at=capped_expiry(
                req, grant_expiry(req, rt.eligibility(req.eligibility), rt.clock.now())))
        except ConnectorError as exc:
            await self._grant_failed(grant_id, exc, holder=g, fence=fence)
            return
        if not await self._grant_done(g, user, added=result.added, fence=fence):
            await undo_stale_grant(rt, fence, g, user, added=result.added)

    async def _not_allowed(self, req: Any, g: Any) -> str | None:
        """Why the policy *now* no longer allows carrying out an approved grant (its eligibility is gone, now
        grants another target, no longer allows break-glass, the requester is no longer a requestor), or its
        approved window is over; None when it may go ahead."""
        rt, now, eligibility, requester = self.rt, self.rt.clock.now(), req.eligibility, req.requester
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

    async def _refuse(self, row: Any, why: str, fence: Fence) -> None:
        """End a grant the policy no longer allows, before its IdP call: the request becomes REVOKED, the
        requester is told why, and whatever the grant may own at the IdP is removed."""
        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.transaction() as session:
            await lock_holder(rt.db, session, row)
            g = await self._grant(session, row.id)
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
            snap = await self._snap(session, req, g)
            await notices.record(rt, session, at=now, kind="grant_refused", actor=notices.SYSTEM, req=req, snap=snap,
                                 from_state=from_state, to_state=Status.REVOKED.value,
                                 detail={"grant": g.id, "reason": why}, text=f"not granted: {why}")
            notices.tell_requester(session, at=now, snap=snap, event="revoked",
                                   text=f"Your request {req.id} for {req.eligibility} was not carried out: {why}.")
        rt.wake.set()

    async def _grant_done(self, row: Any, user: IdpUser, *, added: bool, fence: Fence) -> bool:
        """Record a grant's IdP call; False (nothing recorded) when ``fence`` is stale (fencing.py)."""
        rt, now = self.rt, self.rt.clock.now()
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

    async def _grant_failed(self, grant_id: str, exc: ConnectorError, *, holder: Any = None,
                            fence: Fence | None = None) -> None:
        """A grant's IdP call failed. A transient failure is tried again with backoff until the grant's
        deadline (``grant_deadline``); the requester is told once that the grant waits on the IdP. A
        permanent failure, or the deadline passed, fails the request: logged once at ERROR, audited and
        alerted with the technical cause."""
        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.transaction() as session:
            if holder is not None:  # the membership's lock before the row's, as the revocation takes them
                await lock_holder(rt.db, session, holder)
            g = await self._grant(session, grant_id)
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
                    snap = await self._snap(session, req, g)
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
            snap = await self._snap(session, req, g)
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

    # ---- warnings ------------------------------------------------------------------------------
    async def run_warnings(self, limit: int = 500) -> int:
        rt, now = self.rt, self.rt.clock.now()
        ids = await claim_grants(
            rt.db, owner=rt.instance_id, status="active", due_column=Grant.warn_at, now=now, lease=LEASE,
                                 limit=limit, set_values={"warn_at": None})
        if not ids:
            return 0
        async with rt.db.transaction() as session:
            for gid in ids:
                g = await self._grant(session, gid)
                g.claimed_until = g.claimed_by = None
                req = await load_request(session, g.request_id)
                snap = await self._snap(session, req, g)
                left = format_duration(g.expires_at - now) if g.expires_at else "?"
                await notices.record(rt, session, at=now, kind="warned", actor=notices.SYSTEM, req=req, snap=snap,
                                     detail={"grant": g.id}, text=f"expiry warning sent ({left} left)")
                notices.tell_requester(session, at=now, snap=snap, event="warning",
                                       text=f"Your {req.eligibility} access ends in {left}.")
        return len(ids)

    # ---- expiry and revocation ---------------------------------------------------------------------
    async def run_expiries(self, limit: int = 2000, *, budget_s: float = 5.0) -> int:
        """Active grants past expiry become revocations (each exactly once); due revocations are carried
        out (bot/services/access/revocation.py). Returns how many revocations were claimed."""
        return await Revoker(self.rt).run_due(now=self.rt.clock.now(), budget_s=budget_s, expire_limit=limit)

    # ---- people's actions ----------------------------------------------------------------------
    async def active_grant(self, session: AsyncSession, request_id: str) -> Grant | None:
        return (await session.execute(select(Grant).where(Grant.request_id == request_id, Grant.status == "active")
                                      .with_for_update())).scalar_one_or_none()

    async def end_early(self, *, request_id: str, actor: str, reason: str, as_admin: bool = False,
                        origin: dict[str, str] | None = None) -> Grant:
        """Release (by the requester) or revoke (by an admin) an active grant; the worker carries it out.
        An approved grant that has not started ends at once (``not_started.stop_before_start``)."""
        rt, now, actor = self.rt, self.rt.clock.now(), actor.lower()
        async with rt.db.transaction() as session:
            req = await load_request(session, request_id, lock=True)
            if not as_admin and req.requester != actor:
                raise PolicyViolation("Only the requester can release this access.")
            if req.status == Status.APPROVED.value:
                waiting = await waiting_grant(session, req, now=now)
                await stop_before_start(rt, session, req, waiting, actor=actor, by_admin=as_admin, now=now)
                return waiting
            g = await self.active_grant(session, request_id)
            if g is None:
                raise PolicyViolation(f"{request_id} has no active access (it is {req.status}).")
            g.status, g.end_reason, g.next_attempt_at, g.warn_at = "revoking", reason, now, None
            snap = await self._snap(session, req, g)
            await notices.record(rt, session, at=now, kind=f"{reason}_requested", actor=actor, req=req, snap=snap,
                                 detail={"grant": g.id, **(origin or {})}, text=f"{reason} by {actor}")
        rt.wake.set()
        return g

    async def extend(self, *, request_id: str, actor: str, by: timedelta) -> datetime:
        """Extend an active grant within the eligibility's maximum; returns the new expiry."""
        from bot.domain.requests import plan_extension

        rt, now, actor = self.rt, self.rt.clock.now(), actor.lower()
        async with rt.db.transaction() as session:
            req = await load_request(session, request_id, lock=True)
            if req.requester != actor:
                raise PolicyViolation("Only the requester can extend this access.")
            if req.kind == BREAKGLASS:  # its cap and its review are of the use as announced (docs/policy.md)
                raise PolicyViolation("Break-glass access cannot be extended. If you still need it, use "
                                      "/jit breakglass again (a new alert and review) or request it with /jit.")
            elig = rt.eligibility(req.eligibility)
            g = await self.active_grant(session, request_id)
            if elig is None or g is None or g.expires_at is None or g.granted_at is None:
                raise PolicyViolation(f"{request_id} has no active access to extend.")
            shortened = (await session.execute(select(Event.actor).where(
                Event.request_id == request_id, Event.kind == "approved_for_less").limit(1))).scalar()
            if shortened is not None:  # the approver's shorter duration is the limit, not the eligibility's
                approved = format_duration(timedelta(seconds=req.duration_s))
                raise PolicyViolation(f"{shortened} approved it for {approved}, less than you asked, so it cannot "
                                      "be extended. If you need more, ask again with /jit.")
            plan = plan_extension(elig=elig, status=Status(req.status), granted_at=g.granted_at,
                                  expires_at=g.expires_at, now=now, by=by)
            if req.bundle_id is not None and req.bundle_id != req.id:  # a member: within its bundle's too
                bundle = rt.eligibility((await load_request(session, req.bundle_id)).eligibility)
                if bundle is None:
                    raise PolicyViolation(f"{request_id} was granted with a bundle that is no longer in the "
                                          "policy; it cannot be extended.")
                plan_extension(elig=bundle, status=Status(req.status), granted_at=g.granted_at,
                               expires_at=g.expires_at, now=now, by=by)
            old = g.expires_at
            g.expires_at = capped_expiry(req, plan.new_expires_at)
            if g.expires_at <= old:
                raise PolicyViolation(f"{request_id} was approved for your on-call shift and cannot outlive it "
                                      f"(it ends {old:%Y-%m-%d %H:%M} UTC).")
            g.warn_at = g.expires_at - elig.warn_before if g.expires_at - elig.warn_before > now else None
            snap = await self._snap(session, req, g)
            await notices.record(rt, session, at=now, kind="extended", actor=actor, req=req, snap=snap,
                                 detail={"grant": g.id, "from": old.isoformat(), "to": g.expires_at.isoformat()},
                                 text=f"extended by {format_duration(by)} to {g.expires_at:%Y-%m-%d %H:%M} UTC")
            notices.tell_requester(session, at=now, snap=snap, event="extended",
                                   text=f"Extended: {req.eligibility} now ends {g.expires_at:%Y-%m-%d %H:%M} UTC.")
        await backstop.move_after_extend(rt, g)  # the IdP's own expiry follows (bot/services/access/backstop.py)
        return g.expires_at

    async def retry_failed(self, *, request_id: str, actor: str, origin: dict[str, str] | None = None) -> Grant:
        """An admin retries a FAILED grant: the request goes back to APPROVED with a new grant. ``origin``
        (where the command came from: the command line's OS user and host) is kept in the audit event."""
        from bot.services.requesting.requests import new_grant

        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.transaction() as session:
            req = await load_request(session, request_id, lock=True)
            elig = rt.eligibility(req.eligibility)
            if elig is None:
                raise PolicyViolation(f"{req.eligibility} is no longer in the policy.")
            if req.bundle_id is not None:  # all or nothing: its other members have ended (docs/policy.md)
                raise PolicyViolation(f"{request_id} is part of the bundle {req.bundle_id}, which is granted all or "
                                      "nothing and is not retried: its other members have ended. The requester "
                                      "asks again.")
            check_transition(Status(req.status), Status.APPROVED)
            req.status, req.updated_at, req.version = Status.APPROVED.value, now, req.version + 1
            g = new_grant(rt, req, elig, now=now)
            session.add(g)
            snap = await self._snap(session, req, None)
            await notices.record(rt, session, at=now, kind="grant_retry", actor=actor.lower(), req=req, snap=snap,
                                 from_state=Status.FAILED.value, to_state=Status.APPROVED.value,
                                 detail=dict(origin or {}), text=f"grant retried by {actor}")
        rt.wake.set()
        return g
