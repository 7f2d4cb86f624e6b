"""Carrying out grants and revocations at the identity provider, and the schedule around them.

Grant states: ``granting`` → ``active`` → ``revoking`` → ``ended`` (``end_reason``: expired, released,
revoked, failed). Membership ownership: a grant ``owns_membership`` when the membership exists
because of it. Revoking a grant that does not own the membership (standing access, or another
grant owns it) never removes it; when the owner ends while another grant is active, ownership moves.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.durations import format_duration
from bot.domain.requests import PolicyViolation, Status, check_transition
from bot.services import notices
from bot.services.claims import claim_grants, holder_filter, lock_holder
from bot.services.requests import load_request, load_votes
from bot.services.runtime import Runtime
from connectors.base import (
    ConfigError,
    ConnectorError,
    IdpUser,
    NotFound,
    RateLimited,
    Target,
    TargetKind,
    session_terminator,
)
from storage.tables import AccessRequest, ApprovalVote, Grant

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)
MAX_GRANT_ATTEMPTS = 6
OVERDUE_ALERT_AFTER = timedelta(minutes=2)
REVOKE_CHUNK = 50
REVOKE_PIPELINE = 6  # batches in flight at once


def backoff(attempts: int, *, cap: float = 300.0, retry_after: float | None = None) -> timedelta:
    if retry_after is not None:
        return timedelta(seconds=retry_after)
    base = min(cap, 2.0 * 2 ** min(attempts, 10))
    return timedelta(seconds=base * (0.5 + random.random() / 2))


def target_of(grant: Grant) -> Target:
    return Target(kind=TargetKind(grant.target_kind), id=grant.target_id)


class GrantService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    # ---- helpers -------------------------------------------------------------------------------
    async def _grant(self, session: AsyncSession, grant_id: str) -> Grant:
        row = (await session.execute(select(Grant).where(Grant.id == grant_id).with_for_update())).scalar_one()
        return row

    async def _idp_user(self, grant: Grant) -> IdpUser:
        user = await self.rt.directory.find_user(grant.connector, grant.user_email)
        if user is None:
            raise NotFound(f"no account for {grant.user_email} at {grant.connector}")
        return user

    async def _snap(self, session: AsyncSession, req: AccessRequest, grant: Grant | None) -> dict[str, object]:
        return notices.describe(self.rt, req, await load_votes(session, req.id), grant)

    async def _release(self, grant_id: str) -> None:
        async with self.rt.db.transaction() as session:
            g = await self._grant(session, grant_id)
            g.claimed_until = None

    # ---- granting ------------------------------------------------------------------------------
    async def run_grants(self, limit: int = 100) -> int:
        now = self.rt.clock.now()
        ids = await claim_grants(
            self.rt.db, owner=self.rt.instance_id, status="granting", due_column=Grant.next_attempt_at, now=now,
                                 lease=LEASE, limit=limit)
        for gid in ids:
            await self.carry_out_grant(gid)
        return len(ids)

    async def carry_out_grant(self, grant_id: str) -> None:
        rt = self.rt
        async with rt.db.transaction() as session:
            g = await self._grant(session, grant_id)
            await lock_holder(rt.db, session, g)
            busy = (await session.execute(select(Grant.id).where(*holder_filter(g), Grant.status == "revoking")
                                          .limit(1))).scalar()
            if busy:  # a revoke of the same membership is in flight: let it finish first
                g.next_attempt_at, g.claimed_until = rt.clock.now() + timedelta(seconds=2), None
                return
        connector = rt.connector(g.connector)
        try:
            user = await self._idp_user(g)
            if g.pre_member is None:
                pre = await connector.is_member(user, target_of(g))
                async with rt.db.transaction() as session:
                    (await self._grant(session, grant_id)).pre_member = pre
                g.pre_member = pre
            result = await connector.grant(user, target_of(g), grant_id=g.id,
                                           expires_at=rt.clock.now() + timedelta(days=1))
        except ConnectorError as exc:
            await self._grant_failed(grant_id, exc)
            return
        await self._grant_done(grant_id, user, owns=result.added or g.pre_member is False)

    async def _grant_done(self, grant_id: str, user: IdpUser, *, owns: bool) -> None:
        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.transaction() as session:
            g = await self._grant(session, grant_id)
            req = await load_request(session, g.request_id, lock=True)
            elig = rt.eligibility(req.eligibility)
            warn_before = elig.warn_before if elig else timedelta(minutes=15)
            g.status, g.owns_membership, g.user_idp_id, g.granted_at = "active", owns, user.id, now
            g.expires_at = now + timedelta(seconds=req.duration_s)
            g.warn_at = g.expires_at - warn_before if g.expires_at - warn_before > now else None
            g.claimed_until, g.next_attempt_at, g.last_error = None, None, None
            from_state = req.status
            check_transition(Status(req.status), Status.ACTIVE)
            req.status, req.updated_at, req.version = Status.ACTIVE.value, now, req.version + 1
            snap = await self._snap(session, req, g)
            await notices.record(rt, session, at=now, kind="granted", actor=notices.SYSTEM, req=req, snap=snap,
                                 from_state=from_state, to_state=Status.ACTIVE.value,
                                 detail={"grant": g.id, "owns_membership": owns, "expires_at": g.expires_at.isoformat(),
                                         "standing_before": g.pre_member},
                                 text=f"granted until {g.expires_at:%Y-%m-%d %H:%M} UTC")
            notices.tell_requester(session, at=now, snap=snap, event="active",
                                   text=f"You now have {req.eligibility} until {g.expires_at:%Y-%m-%d %H:%M} UTC.")

    async def _grant_failed(self, grant_id: str, exc: ConnectorError) -> None:
        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.transaction() as session:
            g = await self._grant(session, grant_id)
            g.attempts += 1
            g.last_error, g.claimed_until = str(exc)[:500], None
            if exc.retryable and g.attempts < MAX_GRANT_ATTEMPTS:
                g.next_attempt_at = now + backoff(g.attempts, retry_after=getattr(exc, "retry_after", None)
                                                  if isinstance(exc, RateLimited) else None)
                log.warning("grant %s attempt %d failed, retrying: %s", g.id, g.attempts, exc)
                return
            req = await load_request(session, g.request_id, lock=True)
            # Clean up whatever may have been added at the IdP (idempotent if nothing was).
            g.status, g.end_reason, g.next_attempt_at = "revoking", "failed", now
            g.owns_membership = g.pre_member is False
            check_transition(Status(req.status), Status.FAILED)
            req.status, req.updated_at, req.version = Status.FAILED.value, now, req.version + 1
            snap = await self._snap(session, req, g)
            await notices.record(rt, session, at=now, kind="grant_failed", actor=notices.SYSTEM, req=req, snap=snap,
                                 from_state=Status.APPROVED.value, to_state=Status.FAILED.value,
                                 detail={"grant": g.id, "attempts": g.attempts, "error": exc.user_message},
                                 text=f"grant failed after {g.attempts} attempt(s): {exc.user_message}")
            notices.alert(session, at=now, snap=snap, text=f"Grant for {req.id} failed: {exc.user_message} "
                                                           "An administrator may retry it.")
            notices.tell_requester(session, at=now, snap=snap, event="failed",
                                   text=f"We could not grant {req.eligibility} ({req.id}); "
                                        "administrators were alerted.")
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
                g.claimed_until = None
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
        rt, now = self.rt, self.rt.clock.now()
        # Step 1: active grants past expiry become 'revoking' — each exactly once.
        await claim_grants(
            rt.db, owner=rt.instance_id, status="active", due_column=Grant.expires_at, now=now, lease=timedelta(0),
            limit=limit, set_values={"status": "revoking", "end_reason": "expired", "next_attempt_at": now,
                                     "warn_at": None, "claimed_until": None})
        # Step 2: carry out due revocations as a pipeline of small batches (decide in one transaction,
        # call the IdP concurrently, record in one transaction), refilled as batches finish, so the
        # IdP is kept busy at the pace it accepts while earlier batches are being recorded.
        deadline = time.monotonic() + budget_s
        in_flight: set[asyncio.Task[None]] = set()
        total, exhausted = 0, False
        try:
            while True:
                while not exhausted and len(in_flight) < REVOKE_PIPELINE and time.monotonic() < deadline:
                    ids = await claim_grants(
                        rt.db, owner=rt.instance_id, status="revoking", due_column=Grant.next_attempt_at,
                        now=now, lease=LEASE, limit=REVOKE_CHUNK)
                    if not ids:
                        exhausted = True
                        break
                    total += len(ids)
                    in_flight.add(asyncio.create_task(self.revoke_batch(ids)))
                if not in_flight:
                    return total
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # surface errors; claims stay leased and are retried
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def carry_out_revoke(self, grant_id: str) -> None:
        await self.revoke_batch([grant_id])

    async def revoke_batch(self, grant_ids: list[str]) -> None:
        rt = self.rt
        async with rt.db.transaction() as session:
            batch = list((await session.execute(select(Grant).where(Grant.id.in_(grant_ids)).order_by(Grant.id)
                                                .with_for_update())).scalars().all())
            for g in batch:
                await lock_holder(rt.db, session, g)
            emails = {g.user_email for g in batch}
            live = list((await session.execute(select(Grant).where(
                Grant.user_email.in_(emails), Grant.status.in_(["active", "granting"]))
                .order_by(Grant.expires_at.desc()))).scalars().all())
            reqs = {r.id: r for r in (await session.execute(select(AccessRequest).where(
                AccessRequest.id.in_([g.request_id for g in batch])).with_for_update())).scalars()}
            votes = await self._votes_by_request(session, list(reqs))
            to_call: list[Grant] = []
            for g in batch:
                others = [o for o in live if o.id != g.id and (o.connector, o.target_kind, o.target_id, o.user_email)
                          == (g.connector, g.target_kind, g.target_id, g.user_email)]
                if g.owns_membership and others:
                    heir = others[0]
                    heir.owns_membership = True
                    if heir.status == "granting":
                        heir.pre_member = False
                    g.owns_membership = False
                if not g.owns_membership:
                    await self._ended(session, g, kept="another grant still holds it" if others
                                      else "it was held before the grant", req=reqs[g.request_id],
                                      votes=votes.get(g.request_id, []))
                else:
                    to_call.append(g)
        if not to_call:
            return
        end_sessions = {g.id for g in to_call if getattr(rt.eligibility(reqs[g.request_id].eligibility),
                                                        "terminate_sessions", False)}
        session_errors: dict[str, str] = {}
        outcomes = await asyncio.gather(*(self._revoke_at_idp(g, end_sessions=g.id in end_sessions,
                                                              session_errors=session_errors) for g in to_call))
        async with rt.db.transaction() as session:
            rows = {r.id: r for r in (await session.execute(select(Grant).where(
                Grant.id.in_([g.id for g in to_call])).with_for_update())).scalars()}
            reqs = {r.id: r for r in (await session.execute(select(AccessRequest).where(
                AccessRequest.id.in_([g.request_id for g in to_call])).with_for_update())).scalars()}
            votes = await self._votes_by_request(session, list(reqs))
            for g, error in zip(to_call, outcomes, strict=True):
                row = rows[g.id]
                if error is None:
                    row.owns_membership = False
                    await self._ended(session, row, kept=None, req=reqs[row.request_id],
                                      votes=votes.get(row.request_id, []))
                    if row.id in end_sessions:
                        await self._sessions_outcome(session, row, reqs[row.request_id], session_errors.get(row.id))
                else:
                    await self._revoke_failed(session, row, error)

    @staticmethod
    async def _votes_by_request(session: AsyncSession, request_ids: list[str]) -> dict[str, list[ApprovalVote]]:
        out: dict[str, list[ApprovalVote]] = {}
        rows = await session.execute(select(ApprovalVote).where(ApprovalVote.request_id.in_(request_ids))
                                     .order_by(ApprovalVote.id))
        for v in rows.scalars():
            out.setdefault(v.request_id, []).append(v)
        return out

    async def _revoke_at_idp(self, g: Grant, *, end_sessions: bool = False,
                             session_errors: dict[str, str] | None = None) -> ConnectorError | None:
        try:
            try:
                user = await self._idp_user(g)
            except NotFound:
                return None  # the account is gone at the IdP: no membership is left to remove
            connector = self.rt.connector(g.connector)
            await connector.revoke(user, target_of(g), grant_id=g.id)
        except ConnectorError as exc:
            return exc
        if end_sessions:  # best effort: a failure is audited and alerted, never holds the revoke back
            errors = session_errors if session_errors is not None else {}
            terminator = session_terminator(connector)
            try:
                if terminator is None:
                    raise ConfigError("no session capability", user_message=f"{g.connector} cannot end sessions.")
                await terminator.terminate_sessions(user)
            except ConnectorError as exc:
                errors[g.id] = exc.user_message
            except Exception as exc:  # a bug in one connector must not leave the revoke unrecorded
                log.exception("terminate_sessions failed for grant %s", g.id)
                errors[g.id] = type(exc).__name__
        return None

    async def _sessions_outcome(self, session: AsyncSession, g: Grant, req: AccessRequest, error: str | None) -> None:
        rt, now = self.rt, self.rt.clock.now()
        snap = await self._snap(session, req, g)
        if error is None:
            await notices.record(rt, session, at=now, kind="sessions_ended", actor=notices.SYSTEM, req=req, snap=snap,
                                 detail={"grant": g.id}, text=f"sign-in sessions of {g.user_email} ended")
            return
        await notices.record(rt, session, at=now, kind="sessions_not_ended", actor=notices.SYSTEM, req=req, snap=snap,
                             detail={"grant": g.id, "error": error},
                             text=f"access removed, but ending sign-in sessions failed: {error}")
        notices.alert(session, at=now, snap=snap,
                      text=f"Access of {g.user_email} ({req.id}) was removed, but their sign-in sessions at "
                           f"{g.connector} could not be ended: {error} — end them by hand.")

    async def _ended(self, session: AsyncSession, g: Grant, *, kept: str | None,
                     req: AccessRequest | None = None, votes: list[ApprovalVote] | None = None) -> None:
        rt, now = self.rt, self.rt.clock.now()
        g.status, g.ended_at, g.claimed_until, g.next_attempt_at = "ended", now, None, None
        if req is None:
            req = await load_request(session, g.request_id, lock=True)
        if votes is None:
            votes = await load_votes(session, req.id)
        detail: dict[str, object] = {"grant": g.id, "reason": g.end_reason}
        if kept:
            detail["membership_kept"] = kept
        if g.end_reason == "failed":
            snap = notices.describe(rt, req, votes, g)
            await notices.record(rt, session, at=now, kind="cleanup_done", actor=notices.SYSTEM, req=req, snap=snap,
                                 detail=detail, text="cleaned up after a failed grant")
            return
        new = Status.EXPIRED if g.end_reason == "expired" else Status.REVOKED
        from_state = req.status
        if req.status == Status.ACTIVE.value:
            check_transition(Status(req.status), new)
            req.status, req.updated_at, req.version = new.value, now, req.version + 1
        snap = notices.describe(rt, req, votes, g)
        late = (now - g.expires_at).total_seconds() if g.expires_at and new is Status.EXPIRED else 0.0
        detail["late_s"] = round(late, 3)
        await notices.record(rt, session, at=now, kind=new.value, actor=notices.SYSTEM, req=req, snap=snap,
                             from_state=from_state, to_state=req.status, detail=detail,
                             text=f"{new.value}" + (f" (membership kept: {kept})" if kept else ""))
        notices.tell_requester(session, at=now, snap=snap, event=new.value,
                               text=f"Your {req.eligibility} access ({req.id}) has "
                                    f"{'expired' if new is Status.EXPIRED else 'been revoked'}.")

    async def _revoke_failed(self, session: AsyncSession, g: Grant, exc: ConnectorError) -> None:
        rt, now = self.rt, self.rt.clock.now()
        g.attempts += 1
        g.last_error, g.claimed_until = str(exc)[:500], None
        g.next_attempt_at = now + backoff(g.attempts, cap=120.0, retry_after=exc.retry_after
                                          if isinstance(exc, RateLimited) else None)
        overdue = now - (g.expires_at or now)
        log.warning("revoke %s attempt %d failed, retrying: %s", g.id, g.attempts, exc)
        if not g.alerted and (not exc.retryable or overdue >= OVERDUE_ALERT_AFTER):
            g.alerted = True
            req = await load_request(session, g.request_id)
            snap = await self._snap(session, req, g)
            await notices.record(rt, session, at=now, kind="revoke_overdue", actor=notices.SYSTEM, req=req,
                                 snap=snap, detail={"grant": g.id, "error": exc.user_message, "attempts": g.attempts},
                                 text=f"revocation is failing ({exc.user_message}); still retrying")
            notices.alert(session, at=now, snap=snap,
                          text=f"Revocation of {req.eligibility} for {g.user_email} ({req.id}) is failing: "
                               f"{exc.user_message} — jitbot keeps retrying.")

    # ---- people's actions ----------------------------------------------------------------------
    async def active_grant(self, session: AsyncSession, request_id: str) -> Grant | None:
        return (await session.execute(select(Grant).where(Grant.request_id == request_id, Grant.status == "active")
                                      .with_for_update())).scalar_one_or_none()

    async def end_early(self, *, request_id: str, actor: str, reason: str, as_admin: bool = False) -> Grant:
        """Release (by the requester) or revoke (by an admin) an active grant; the worker carries it out."""
        rt, now, actor = self.rt, self.rt.clock.now(), actor.lower()
        async with rt.db.transaction() as session:
            req = await load_request(session, request_id, lock=True)
            if not as_admin and req.requester != actor:
                raise PolicyViolation("Only the requester can release this access.")
            g = await self.active_grant(session, request_id)
            if g is None:
                raise PolicyViolation(f"{request_id} has no active access (it is {req.status}).")
            g.status, g.end_reason, g.next_attempt_at, g.warn_at = "revoking", reason, now, None
            snap = await self._snap(session, req, g)
            await notices.record(rt, session, at=now, kind=f"{reason}_requested", actor=actor, req=req, snap=snap,
                                 detail={"grant": g.id}, text=f"{reason} by {actor}")
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
            elig = rt.eligibility(req.eligibility)
            g = await self.active_grant(session, request_id)
            if elig is None or g is None or g.expires_at is None or g.granted_at is None:
                raise PolicyViolation(f"{request_id} has no active access to extend.")
            plan = plan_extension(elig=elig, status=Status(req.status), granted_at=g.granted_at,
                                  expires_at=g.expires_at, now=now, by=by)
            if plan.needs_approval:
                raise PolicyViolation("This extension goes beyond the maximum and needs approval: "
                                      "request the access again with /jit.")
            old = g.expires_at
            g.expires_at = plan.new_expires_at
            g.warn_at = g.expires_at - elig.warn_before if g.expires_at - elig.warn_before > now else None
            snap = await self._snap(session, req, g)
            await notices.record(rt, session, at=now, kind="extended", actor=actor, req=req, snap=snap,
                                 detail={"grant": g.id, "from": old.isoformat(), "to": g.expires_at.isoformat()},
                                 text=f"extended by {format_duration(by)} to {g.expires_at:%Y-%m-%d %H:%M} UTC")
            notices.tell_requester(session, at=now, snap=snap, event="extended",
                                   text=f"Extended: {req.eligibility} now ends {g.expires_at:%Y-%m-%d %H:%M} UTC.")
            return g.expires_at

    async def retry_failed(self, *, request_id: str, actor: str) -> Grant:
        """An admin retries a FAILED grant: the request goes back to APPROVED with a new grant."""
        from bot.services.requests import new_grant

        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.transaction() as session:
            req = await load_request(session, request_id, lock=True)
            elig = rt.eligibility(req.eligibility)
            if elig is None:
                raise PolicyViolation(f"{req.eligibility} is no longer in the policy.")
            check_transition(Status(req.status), Status.APPROVED)
            req.status, req.updated_at, req.version = Status.APPROVED.value, now, req.version + 1
            g = new_grant(rt, req, elig)
            session.add(g)
            snap = await self._snap(session, req, None)
            await notices.record(rt, session, at=now, kind="grant_retry", actor=actor.lower(), req=req, snap=snap,
                                 from_state=Status.FAILED.value, to_state=Status.APPROVED.value,
                                 text=f"grant retried by {actor}")
        rt.wake.set()
        return g
