"""Carrying out grants and revocations at the identity provider, and the schedule around them.

Grant states: ``granting`` → ``active`` → ``revoking`` → ``ended`` (``end_reason``: expired, released,
revoked, failed). Membership ownership: a grant ``owns_membership`` when the membership exists
because of it. Revoking a grant that does not own the membership (standing access, or another
grant owns it) never removes it; when the owner ends while another grant is active, ownership moves.
Revocation itself (decide, call the IdP, record) is the pipeline in ``bot/services/access/revocation.py``.
``GrantService`` claims due grants and carries each out (the policy's check now, the membership check, the IdP
call) side by side under a concurrency gate and a time budget; what becomes of one (refused, active, failed or
retried) is ``grant_outcomes.py``, its time window ``grant_window.py``, and people's actions on a grant
(release, revoke, extend, retry) ``grant_actions.py``.
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
from bot.services import notices
from bot.services.access.fencing import Fence, holds, undo_stale_grant
from bot.services.access.grant_actions import active_grant, end_early, extend, retry_failed
from bot.services.access.grant_outcomes import (
    GRANT_BACKOFF_CAP_S,
    grant_done,
    grant_failed,
    locked_grant,
    not_allowed,
    refuse,
    snapshot,
)
from bot.services.access.grant_window import grant_deadline, grant_due, grant_expiry, window_end
from bot.services.access.revocation import LEASE, Revoker, idp_user, target_of
from bot.services.claims import FIRST_TOKEN, HOLDER_BOUND, claim_grants, holder_params, lock_holder
from bot.services.context.grant_context import capped_expiry, context_refusal
from bot.services.requesting.request_rows import load_request
from bot.services.runtime import Runtime
from connectors.base import ConnectorError, IdpUser
from storage.tables import AccessRequest, Grant

__all__ = ["GRANT_BACKOFF_CAP_S", "GrantService", "grant_deadline", "grant_due", "grant_expiry", "window_end"]

log = logging.getLogger(__name__)

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
        return await locked_grant(session, grant_id)

    async def _snap(self, session: AsyncSession, req: AccessRequest, grant: Grant | None) -> dict[str, object]:
        return await snapshot(self.rt, session, req, grant)

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
        """A grant this process's approving transaction claimed for it (``final_approval.approve_final``),
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
        return await not_allowed(self.rt, req, g)

    async def _refuse(self, row: Any, why: str, fence: Fence) -> None:
        await refuse(self.rt, row, why, fence)

    async def _grant_done(self, row: Any, user: IdpUser, *, added: bool, fence: Fence) -> bool:
        return await grant_done(self.rt, row, user, added=added, fence=fence)

    async def _grant_failed(self, grant_id: str, exc: ConnectorError, *, holder: Any = None,
                            fence: Fence | None = None) -> None:
        await grant_failed(self.rt, grant_id, exc, holder=holder, fence=fence)

    # ---- warnings ------------------------------------------------------------------------------
    async def run_warnings(self, limit: int = 500) -> int:
        rt, now = self.rt, self.rt.clock.now()
        ids = await claim_grants(
            rt.db, owner=rt.instance_id, status="active", due_column=Grant.warn_at, now=now, lease=LEASE,
                                 limit=limit, set_values={"warn_at": None})
        if not ids:
            return 0
        async with rt.db.transaction() as session:
            for gid in sorted(ids):  # several grants' rows: in id order (docs/architecture.md)
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

    # ---- people's actions (bot/services/access/grant_actions.py) ------------------------------------
    async def active_grant(self, session: AsyncSession, request_id: str) -> Grant | None:
        return await active_grant(session, request_id)

    async def end_early(self, *, request_id: str, actor: str, reason: str, as_admin: bool = False,
                        origin: dict[str, str] | None = None) -> Grant:
        """Release (by the requester) or revoke (by an admin) an active grant (``grant_actions.end_early``)."""
        return await end_early(self.rt, request_id=request_id, actor=actor, reason=reason, as_admin=as_admin,
                               origin=origin)

    async def extend(self, *, request_id: str, actor: str, by: timedelta) -> datetime:
        """Extend an active grant within the eligibility's maximum; returns the new expiry."""
        return await extend(self.rt, request_id=request_id, actor=actor, by=by)

    async def retry_failed(self, *, request_id: str, actor: str, origin: dict[str, str] | None = None) -> Grant:
        """An admin retries a FAILED grant: the request goes back to APPROVED with a new grant."""
        return await retry_failed(self.rt, request_id=request_id, actor=actor, origin=origin)
