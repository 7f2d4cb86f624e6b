"""Submitting, cancelling and lapsing requests."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility
from bot.domain.requests import PolicyViolation, Status, Submission, check_transition, validate_submission
from bot.domain.requests import eligible_approvers as layer_candidates
from bot.services import notices
from bot.services.runtime import Runtime, new_id
from storage.tables import AccessRequest, ApprovalVote, Grant


async def load_request(session: AsyncSession, request_id: str, *, lock: bool = False) -> AccessRequest:
    stmt = select(AccessRequest).where(AccessRequest.id == request_id)
    if lock:
        stmt = stmt.with_for_update()
    req = (await session.execute(stmt)).scalar_one_or_none()
    if req is None:
        raise PolicyViolation(f"There is no request {request_id}.")
    return req


async def load_votes(session: AsyncSession, request_id: str) -> list[ApprovalVote]:
    stmt = select(ApprovalVote).where(ApprovalVote.request_id == request_id).order_by(ApprovalVote.id)  # type: ignore[arg-type]
    return list((await session.execute(stmt)).scalars().all())


def new_grant(rt: Runtime, req: AccessRequest, elig: Eligibility) -> Grant:
    return Grant(id=new_id("G"), request_id=req.id, connector=elig.connector, target_kind=elig.target.kind,
                 target_id=elig.target.ref, user_email=req.requester, status="granting",
                 next_attempt_at=rt.clock.now())


class RequestService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def requestable(self, email: str) -> list[Eligibility]:
        """The eligibilities ``email`` may request now."""
        policy = self.rt.policy
        return [e for e in policy.eligibilities if await self.rt.directory.contains(policy, e.requestors, email)]

    async def submit(self, *, requester: str, eligibility: str, duration: timedelta, justification: str,
                     ticket: str | None = None, requester_slack: str | None = None) -> AccessRequest:
        """Validate against policy and store a new request; raises PolicyViolation with a user-facing reason."""
        rt, policy = self.rt, self.rt.policy
        requester = requester.strip().lower()
        elig = rt.eligibility(eligibility)
        if elig is None:
            raise PolicyViolation(f"There is no eligibility called {eligibility!r}.", field="eligibility")
        eligible = await rt.directory.contains(policy, elig.requestors, requester)
        sub = validate_submission(Submission(elig.name, requester, duration, justification, ticket), elig,
                                  requester_eligible=eligible, justification_max=policy.settings.justification_max,
                                  ticket_pattern=policy.settings.ticket_pattern)
        if await rt.directory.find_user(elig.connector, requester) is None:
            raise PolicyViolation(f"We couldn't find an account for {requester} at {elig.connector}; "
                                  "ask an administrator to check your identity-provider account.")
        first: set[str] = set()
        if elig.approvals:
            first = layer_candidates(await rt.directory.expand(policy, elig.approvals[0].approvers),
                                     requester=requester, earlier_approvers=())
            if len(first) < elig.approvals[0].min_approvals:
                raise PolicyViolation(f"Nobody other than you can approve layer 1 of {elig.name}; "
                                      "ask an administrator to fix the approver group.")
        now = rt.clock.now()
        async with rt.db.transaction() as session:
            open_dupe = (await session.execute(select(AccessRequest.id).where(
                AccessRequest.requester == requester, AccessRequest.eligibility == elig.name,
                AccessRequest.status == Status.PENDING.value, AccessRequest.kind == "access").limit(1))).scalar()
            if open_dupe:
                raise PolicyViolation(f"You already have a pending request for {elig.name} ({open_dupe}).")
            req = AccessRequest(
                id=new_id("R"), eligibility=elig.name, requester=requester, requester_slack=requester_slack,
                duration_s=int(sub.duration.total_seconds()), justification=sub.justification, ticket=sub.ticket,
                status=Status.PENDING.value, layer=1, layers=len(elig.approvals), created_at=now, updated_at=now,
                layer_deadline=now + elig.approvals[0].timeout if elig.approvals else None)
            session.add(req)
            await session.flush()
            snap = notices.describe(rt, req)
            await notices.record(rt, session, at=now, kind="requested", actor=requester, req=req, snap=snap,
                                 to_state=Status.PENDING.value,
                                 detail={"eligibility": elig.name, "duration": format_duration(sub.duration),
                                         "ticket": sub.ticket, "justification": sub.justification},
                                 text=f"requested {elig.name} for {format_duration(sub.duration)}")
            if elig.approvals:
                notices.tell_requester(session, at=now, snap=snap, event="submitted",
                                       text=f"Your request {req.id} for {elig.name} is waiting for approval "
                                            f"(layer 1 of {len(elig.approvals)}).")
                notices.ask_approvers(session, at=now, snap=snap, layer=1, approvers=sorted(first))
            else:
                await self.approve_final(session, req, elig, actor=notices.SYSTEM, auto=True)
        rt.wake.set()
        return req

    async def approve_final(self, session: AsyncSession, req: AccessRequest, elig: Eligibility, *, actor: str,
                            auto: bool = False) -> Grant:
        """PENDING → APPROVED and a grant waiting to be carried out (inside the caller's transaction)."""
        now = self.rt.clock.now()
        check_transition(Status(req.status), Status.APPROVED)
        req.status, req.decided_at, req.updated_at, req.layer_deadline = Status.APPROVED.value, now, now, None
        req.version += 1
        grant = new_grant(self.rt, req, elig)
        session.add(grant)
        await session.flush()
        snap = notices.describe(self.rt, req, await load_votes(session, req.id))
        await notices.record(self.rt, session, at=now, kind="approved", actor=actor, req=req, snap=snap,
                             from_state=Status.PENDING.value, to_state=Status.APPROVED.value,
                             detail={"auto": auto}, text="auto-approved (no approval layers)" if auto else
                             "approved — granting access")
        notices.tell_requester(session, at=now, snap=snap, event="approved",
                               text=f"Your request {req.id} for {elig.name} was approved; granting access now.")
        return grant

    async def cancel(self, *, request_id: str, by: str) -> AccessRequest:
        """The requester withdraws a PENDING request."""
        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.transaction() as session:
            req = await load_request(session, request_id, lock=True)
            if req.requester != by.lower():
                raise PolicyViolation("Only the requester can cancel this request.")
            if req.status != Status.PENDING.value:
                raise PolicyViolation(f"This request is already {req.status}.")
            check_transition(Status(req.status), Status.CANCELLED)
            req.status, req.updated_at, req.decided_at, req.layer_deadline = Status.CANCELLED.value, now, now, None
            req.version += 1
            snap = notices.describe(rt, req, await load_votes(session, req.id))
            await notices.record(rt, session, at=now, kind="cancelled", actor=by.lower(), req=req, snap=snap,
                                 from_state=Status.PENDING.value, to_state=Status.CANCELLED.value,
                                 text="cancelled by the requester")
            notices.update_approvals(session, at=now, snap=snap, layer=req.layer, outcome="Cancelled by the requester")
        return req

    async def lapse_due(self, limit: int = 200) -> int:
        """PENDING requests whose layer deadline passed become LAPSED."""
        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.transaction() as session:
            stmt = (select(AccessRequest).where(AccessRequest.status == Status.PENDING.value,
                                                AccessRequest.layer_deadline <= now)  # type: ignore[operator]
                    .order_by(AccessRequest.layer_deadline).limit(limit))  # type: ignore[arg-type]
            if not rt.db.is_sqlite:
                stmt = stmt.with_for_update(skip_locked=True)
            due = list((await session.execute(stmt)).scalars().all())
            for req in due:
                req.status, req.updated_at, req.decided_at, req.layer_deadline = Status.LAPSED.value, now, now, None
                req.version += 1
                snap = notices.describe(rt, req, await load_votes(session, req.id))
                await notices.record(rt, session, at=now, kind="lapsed", actor=notices.SYSTEM, req=req, snap=snap,
                                     from_state=Status.PENDING.value, to_state=Status.LAPSED.value,
                                     detail={"layer": req.layer}, text=f"lapsed: no decision at layer {req.layer}")
                notices.update_approvals(session, at=now, snap=snap, layer=req.layer,
                                         outcome="Lapsed: no decision in time")
                notices.tell_requester(session, at=now, snap=snap, event="lapsed",
                                       text=f"Your request {req.id} lapsed: nobody decided layer {req.layer} in time.")
        return len(due)
