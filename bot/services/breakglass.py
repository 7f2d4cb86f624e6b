"""Break-glass: access granted at once without approval, announced loudly, reviewed after the fact.

An eligibility with ``break_glass: {max_duration}`` lets its requestors (not delegates) take the
access immediately for at most ``max_duration``. The request (kind ``breakglass``) goes PENDING →
APPROVED → ACTIVE through the normal grant path, and in the same transaction: an alert to the audit
and security channels, and a review request (Acknowledge / Flag) to the eligibility's reviewers — the
approvers of all its layers, or the JIT administrators when it has none. Until someone reviews it, the
reviewers are reminded every ``settings.break_glass_review_every`` (due column ``review_remind_at``).
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select

from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility
from bot.domain.requests import BREAKGLASS as KIND
from bot.domain.requests import PolicyViolation, Status, Submission, validate_submission
from bot.services import notices
from bot.services.requesting.final_approval import approve_final
from bot.services.requesting.request_rows import load_request
from bot.services.runtime import Runtime, new_id
from storage.records import Unit, build
from storage.tables import AccessRequest


class ReviewOutcome(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    FLAGGED = "flagged"


class BreakGlassService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def reviewers(self, elig: Eligibility, requester: str) -> set[str]:
        """Who reviews a break-glass use of ``elig``: its approvers (else the admins), never the user."""
        policy = self.rt.policy
        people = await self.rt.directory.expand(policy, elig.reviewers())
        if not people:
            people = await self.rt.directory.expand(policy, policy.admins)
        return {p.lower() for p in people} - {requester.lower()}

    async def may_review(self, elig: Eligibility, req: AccessRequest, email: str) -> bool:
        email = email.lower()
        if email == req.requester:
            return False
        return email in await self.reviewers(elig, req.requester) or await self.rt.directory.is_admin(
            self.rt.policy, email)

    async def invoke(self, *, requester: str, eligibility: str, duration: timedelta, justification: str,
                     requester_slack: str | None = None) -> AccessRequest:
        """Grant ``eligibility`` to ``requester`` now, without approval; raises PolicyViolation if not allowed."""
        rt, policy = self.rt, self.rt.policy
        requester = requester.strip().lower()
        elig = rt.eligibility(eligibility)
        if elig is None:
            raise PolicyViolation(f"There is no eligibility called {eligibility!r}.")
        if elig.break_glass is None:
            raise PolicyViolation(f"{elig.name} does not allow break-glass access; request it with /jit.")
        eligible = await rt.directory.contains(policy, elig.requestors, requester)
        # Break-glass is bounded by its own maximum and needs no ticket (there may be no time for one).
        rules = elig.model_copy(update={"max_duration": elig.break_glass.max_duration, "require_ticket": False})
        sub = validate_submission(Submission(elig.name, requester, duration, justification), rules,
                                  requester_eligible=eligible, justification_max=policy.settings.justification_max,
                                  ticket_pattern=policy.settings.ticket_pattern)
        if await rt.directory.find_user(elig.connector, requester) is None:
            raise PolicyViolation(f"We couldn't find an account for {requester} at {elig.connector}.")
        reviewers = sorted(await self.reviewers(elig, requester))
        now = rt.clock.now()
        async with rt.db.core_transaction() as session:
            unit = Unit(session)
            req = build(AccessRequest,
                id=new_id("R"), eligibility=elig.name, kind=KIND, requester=requester,
                requester_slack=requester_slack, duration_s=int(sub.duration.total_seconds()),
                justification=sub.justification, status=Status.PENDING.value, layer=1, layers=0,
                created_at=now, updated_at=now, review_remind_at=now + policy.settings.break_glass_review_every)
            unit.add(req)
            snap = notices.describe(rt, req)
            how_long = format_duration(sub.duration)
            await notices.record(rt, session, at=now, kind="break_glass", actor=requester, req=req, snap=snap,
                                 to_state=Status.PENDING.value,
                                 detail={"eligibility": elig.name, "duration": how_long,
                                         "justification": sub.justification, "reviewers": reviewers},
                                 text=f"BREAK-GLASS: took {elig.name} for {how_long} without approval")
            notices.alert(session, at=now, snap=snap,
                          text=f"BREAK-GLASS: {requester} took {elig.name} for {how_long} without approval "
                               f"({req.id}). Reason: {sub.justification}")
            if reviewers:
                notices.ask_reviewers(session, at=now, snap=snap, reviewers=reviewers)
            else:
                notices.alert(session, at=now, snap=snap, text=f"{req.id}: nobody can review this break-glass use.")
            await approve_final(self.rt, unit, req, elig, actor=requester,
                                              text="break-glass: granting without approval")
            await unit.flush()
        rt.wake.set()
        return req

    async def review(self, *, request_id: str, reviewer: str, outcome: ReviewOutcome) -> str:
        """Record the after-the-fact review of a break-glass use; returns what the reviewer is told."""
        rt, reviewer = self.rt, reviewer.strip().lower()
        async with rt.db.sessions() as session:
            peek = await load_request(session, request_id)
        elig = rt.eligibility(peek.eligibility)
        if peek.kind != KIND or elig is None:
            raise PolicyViolation(f"{request_id} is not a break-glass use.")
        if reviewer == peek.requester:
            raise PolicyViolation("You cannot review your own break-glass use.")
        if not await self.may_review(elig, peek, reviewer):
            raise PolicyViolation(f"You are not a reviewer of {elig.name}.")
        now = rt.clock.now()
        async with rt.db.transaction() as session:
            req = await load_request(session, request_id, lock=True)
            if req.reviewed_at is not None:
                raise PolicyViolation(f"Already {req.review_outcome} by {req.reviewed_by}.")
            req.reviewed_by, req.reviewed_at, req.review_outcome = reviewer, now, outcome.value
            req.review_remind_at, req.version = None, req.version + 1
            snap = notices.describe(rt, req)
            await notices.record(rt, session, at=now, kind=f"break_glass_{outcome.value}", actor=reviewer, req=req,
                                 snap=snap, detail={"outcome": outcome.value},
                                 text=f"break-glass use {outcome.value} by {reviewer}")
            notices.update_reviews(session, at=now, snap=snap, outcome=f"{outcome.value.title()} by {reviewer}")
            if outcome is ReviewOutcome.FLAGGED:
                notices.alert(session, at=now, snap=snap,
                              text=f"Break-glass use {req.id} of {req.eligibility} by {req.requester} was FLAGGED "
                                   f"by {reviewer}: please investigate.")
        verb = "acknowledged" if outcome is ReviewOutcome.ACKNOWLEDGED else "flagged (security was alerted)"
        return f"You {verb} break-glass use {request_id}."

    async def unreviewed(self) -> list[AccessRequest]:
        """Break-glass uses nobody has reviewed yet, oldest first."""
        async with self.rt.db.sessions() as session:
            stmt = (select(AccessRequest).where(AccessRequest.kind == KIND, AccessRequest.reviewed_at.is_(None))  # type: ignore[union-attr]
                    .order_by(AccessRequest.created_at))  # type: ignore[arg-type]
            return list((await session.execute(stmt)).scalars().all())

    async def run_review_reminders(self, limit: int = 200) -> int:
        """Remind the reviewers of every unreviewed break-glass use whose reminder is due."""
        from bot.services.requesting.reminders import due_request_ids

        rt, now = self.rt, self.rt.clock.now()
        every = rt.policy.settings.break_glass_review_every
        done = 0
        due = await due_request_ids(rt, AccessRequest.review_remind_at, now, AccessRequest.kind == KIND,
                                    limit=limit)
        for request_id in due:
            async with rt.db.sessions() as session:
                peek = await load_request(session, request_id)
            elig = rt.eligibility(peek.eligibility)
            reviewers = sorted(await self.reviewers(elig, peek.requester)) if elig else []
            async with rt.db.transaction() as session:
                req = await load_request(session, request_id, lock=True)
                if req.reviewed_at is not None or req.review_remind_at is None or req.review_remind_at > now:
                    continue
                req.review_remind_at = now + every
                snap = notices.describe(rt, req)
                age = format_duration(now - req.created_at)
                await notices.record(rt, session, at=now, kind="break_glass_review_reminded", actor=notices.SYSTEM,
                                     req=req, snap=snap, detail={"reviewers": reviewers},
                                     text=f"break-glass use still unreviewed after {age}; reviewers reminded")
                notices.ask_reviewers(session, at=now, snap=snap, reviewers=reviewers,
                                      note=f"Reminder: this break-glass use is still unreviewed after {age}.")
                done += 1
        return done
