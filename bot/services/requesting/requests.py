"""Submitting, cancelling and lapsing requests, and opening an approval layer (its deadline, reminders
and escalation). What a submission is checked against is in submission_checks.py; what the last
approval does, in final_approval.py."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility
from bot.domain.requests import EXTENSION, PolicyViolation, Status, Submission, check_transition, validate_submission
from bot.domain.requests import eligible_approvers as layer_candidates
from bot.services import notices
from bot.services.context.on_call import OnCallOutcome, check_on_call, record_on_call, request_context
from bot.services.context.tickets import check_ticket
from bot.services.policy_version import require_current, under_current_policy
from bot.services.requesting.bundles import bundle_context, check_members
from bot.services.requesting.extension_apply import deadline_of
from bot.services.requesting.final_approval import GRANT_HANDED, approve_final
from bot.services.requesting.request_rows import (
    check_grant_seen,
    close_schedule,
    load_request,
    load_votes,
    lock_live_grant,
    seeing_its_grant,
)
from bot.services.requesting.submission_checks import check_open_and_rate, check_start, lock_person, stored_first
from bot.services.runtime import Runtime, new_id
from connectors.base import ConnectorError
from storage.records import Unit, build
from storage.tables import AccessRequest


def open_layer(req: AccessRequest, elig: Eligibility, layer: int, now: datetime, *, after_hours: bool) -> None:
    """Point ``req`` at ``layer`` and schedule its deadline, reminders and escalation. ``after_hours``:
    the layer opens outside business hours, so its ``after_hours`` approvers (if any) decide it."""
    spec = elig.approvals[layer - 1]
    req.layer, req.layer_deadline, req.escalated = layer, now + spec.timeout, False
    req.after_hours = after_hours and spec.after_hours is not None
    req.next_reminder_at = now + spec.remind_every if spec.remind_every else None
    req.escalate_at = now + spec.escalate_after if spec.escalate_after else None
    until = deadline_of(req) if req.kind == EXTENSION else None
    if until is not None:  # an extension is decided before the access it extends ends, or lapses then
        req.layer_deadline = min(req.layer_deadline, until)


class RequestService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def requestable(self, email: str) -> list[Eligibility]:
        """The eligibilities ``email`` may request now."""
        policy = self.rt.policy
        return [e for e in policy.eligibilities if await self.rt.directory.contains(policy, e.requestors, email)]

    async def may_submit_for_others(self, email: str, elig: Eligibility) -> bool:
        """Whether ``email`` may request ``elig`` on someone else's behalf (a delegate, or an admin)."""
        policy = self.rt.policy
        return (await self.rt.directory.contains(policy, elig.delegates, email)
                or await self.rt.directory.is_admin(policy, email))

    async def submit(self, *, requester: str, eligibility: str, duration: timedelta, justification: str,
                     ticket: str | None = None, requester_slack: str | None = None,
                     submitted_by: str | None = None, submitted_by_slack: str | None = None,
                     starts_at: datetime | None = None) -> AccessRequest:
        """Validate against policy and store a new request; raises PolicyViolation with a user-facing reason.

        ``requester`` is who gets the access (the beneficiary). ``submitted_by``, when someone else, must
        be a delegate of the eligibility or an admin, and can never approve the request. ``starts_at``
        schedules the grant: approved ahead, granted then, the duration counted from then. Checked
        under the applied policy (bot/services/policy_version.py).
        """
        return await under_current_policy(self.rt.follower, functools.partial(
            self._submit, requester=requester, eligibility=eligibility, duration=duration,
            justification=justification, ticket=ticket, requester_slack=requester_slack, submitted_by=submitted_by,
            submitted_by_slack=submitted_by_slack, starts_at=starts_at))

    async def _submit(self, *, requester: str, eligibility: str, duration: timedelta, justification: str,
                      ticket: str | None, requester_slack: str | None, submitted_by: str | None,
                      submitted_by_slack: str | None, starts_at: datetime | None) -> AccessRequest:
        rt, policy, seen = self.rt, self.rt.policy, self.rt.decision_version
        requester = requester.strip().lower()
        submitter = submitted_by.strip().lower() if submitted_by else None
        if submitter == requester:
            submitter, submitted_by_slack = None, None
        elig = rt.eligibility(eligibility)
        if elig is None:
            raise PolicyViolation(f"There is no eligibility called {eligibility!r}.", field="eligibility")
        if submitter is not None and not await self.may_submit_for_others(submitter, elig):
            raise PolicyViolation(f"You may not request {elig.name} on someone else's behalf.", field="eligibility")
        now = rt.clock.now()
        check_start(rt, starts_at)
        eligible = await rt.directory.contains(policy, elig.requestors, requester)
        if submitter is not None and not eligible:
            raise PolicyViolation(f"{requester} is not eligible to request {elig.name}.", field="eligibility")
        sub = validate_submission(Submission(elig.name, requester, duration, justification, ticket), elig,
                                  requester_eligible=eligible, justification_max=policy.settings.justification_max,
                                  ticket_pattern=policy.settings.ticket_pattern)
        if elig.bundle:  # every member's requestors and accounts (bot/services/requesting/bundles.py)
            await check_members(rt, elig, requester)
        try:
            account = await rt.directory.find_user(elig.connector, requester)
        except ConnectorError as exc:  # IdP down or rate limiting: a clear answer, not a crashed modal
            raise PolicyViolation(f"{exc.user_message} Nothing was submitted; please try again in a minute.",
                                  field="eligibility") from None
        if account is None:
            raise PolicyViolation(f"We couldn't find an account for {requester} at {elig.connector}; "
                                  "ask an administrator to check your identity-provider account.")
        # Approval context, asked before the transaction (I/O): the Jira ticket (refuses the request when it
        # does not qualify) and the on-call check (never refuses; it may pass the leading layers).
        ticket_context = await check_ticket(rt, elig, sub.ticket)
        on_call = await check_on_call(rt, elig, requester, starts_at=starts_at)
        first_layer = on_call.layers_passed + 1  # the first layer people decide
        first: set[str] = set()
        after_hours = policy.after_hours(now)
        if first_layer <= len(elig.approvals):
            layer_one = elig.approvals[first_layer - 1].approver_set(after_hours=after_hours)
            first = layer_candidates(await rt.directory.expand(policy, layer_one),
                                     requester=requester, earlier_approvers=(), submitter=submitter)
            if len(first) < elig.approvals[first_layer - 1].min_approvals:
                raise PolicyViolation(f"Nobody other than you can approve layer {first_layer} of {elig.name}; "
                                      "ask an administrator to fix the approver group.")
        try:
            return await self._store(requester=requester, elig=elig, sub=sub, requester_slack=requester_slack,
                                     submitter=submitter, submitted_by_slack=submitted_by_slack,
                                     starts_at=starts_at, now=now, after_hours=after_hours, first=first,
                                     seen=seen, on_call=on_call,
                                     context=bundle_context(elig, request_context(ticket_context, on_call)))
        except IntegrityError:
            # uq_request_one_pending: another submission (another replica, or this one) stored it first
            winner = await stored_first(rt, requester, elig)
            if winner is None:
                raise
            raise PolicyViolation(f"You already have a pending request for {elig.name} ({winner}).") from None

    async def _store(self, *, requester: str, elig: Eligibility, sub: Submission, requester_slack: str | None,
                     submitter: str | None, submitted_by_slack: str | None, starts_at: datetime | None,
                     now: datetime, after_hours: bool, first: set[str], seen: int | None, on_call: OnCallOutcome,
                     context: dict[str, Any] | None) -> AccessRequest:
        """``submit``'s transaction: the request, its audit event and its notices (or the auto-approval)."""
        rt, first_layer = self.rt, on_call.layers_passed + 1  # the first layer people decide
        async with rt.db.core_transaction() as session:
            await require_current(session, seen)
            await lock_person(rt, session, requester)  # their checks and insert, one submission at a time
            await check_open_and_rate(rt, session, requester, elig, now)
            unit = Unit(session)
            req = build(AccessRequest,
                id=new_id("R"), eligibility=elig.name, requester=requester, requester_slack=requester_slack,
                submitted_by=submitter, submitted_by_slack=submitted_by_slack if submitter else None,
                duration_s=int(sub.duration.total_seconds()), justification=sub.justification, ticket=sub.ticket,
                status=Status.PENDING.value, layer=1, layers=len(elig.approvals), created_at=now, updated_at=now,
                starts_at=starts_at, context=context, ends_by=on_call.ends_by)
            if first_layer <= len(elig.approvals):
                open_layer(req, elig, first_layer, now, after_hours=after_hours)
            unit.add(req)
            snap = notices.describe(rt, req)
            detail: dict[str, object] = {"eligibility": elig.name, "duration": format_duration(sub.duration),
                                         "ticket": sub.ticket, "justification": sub.justification}
            text = f"requested {elig.name} for {format_duration(sub.duration)}"
            if submitter:
                detail["submitted_by"] = submitter
                text += f" (submitted by {submitter} on their behalf)"
            if starts_at:
                detail["starts_at"] = starts_at.isoformat()
                text += f", starting {starts_at:%Y-%m-%d %H:%M} UTC"
            await notices.record(rt, session, at=now, kind="requested", actor=submitter or requester, req=req,
                                 snap=snap, to_state=Status.PENDING.value, detail=detail, text=text)
            if submitter:
                notices.tell_requester(session, at=now, snap=snap, event="on_behalf",
                                       text=f"{submitter} requested {elig.name} for you ({req.id}): "
                                            f"{sub.justification}")
            if on_call.checked:
                await record_on_call(rt, session, at=now, req=req, snap=snap, outcome=on_call)
            if first_layer <= len(elig.approvals):
                notices.tell_requester(session, at=now, snap=snap, event="submitted",
                                       text=f"Your request {req.id} for {elig.name} is waiting for approval "
                                            f"(layer {first_layer} of {len(elig.approvals)}).")
                notices.ask_layer(session, at=now, snap=snap, layer=first_layer,
                                  spec=elig.approvals[first_layer - 1], approvers=sorted(first))
            else:
                await approve_final(rt, unit, req, elig, actor=notices.SYSTEM, auto=True,
                                    text="approved: the requester is on call" if on_call.passes else None)
            await unit.flush()
        # auto-approved (no layers, or every layer passed by on-call): its grant is due now.
        if first_layer > len(elig.approvals) and not session.info.get(GRANT_HANDED):
            rt.wake.set()  # A pending request has nothing due for the worker (its deadlines come with the tick)
        return req

    async def cancel(self, *, request_id: str, by: str) -> AccessRequest:
        """The requester withdraws a PENDING request, or an APPROVED one whose grant has not started."""
        return await seeing_its_grant(functools.partial(self._cancel, request_id=request_id, by=by))

    async def _cancel(self, last: bool, *, request_id: str, by: str) -> AccessRequest:
        from bot.services.requesting.not_started import stop_before_start, waiting_grant

        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.transaction() as session:
            live = await lock_live_grant(session, request_id)  # the grant's row before the request's
            req = await load_request(session, request_id, lock=True)
            if by.lower() not in (req.requester, req.submitted_by):
                raise PolicyViolation("Only the requester can cancel this request.")
            check_grant_seen(req, live, last=last)  # approved since it was read: once more (request_rows.py)
            if req.status == Status.APPROVED.value:
                grant = waiting_grant(req, live, now=now)
                await stop_before_start(rt, session, req, grant, actor=by.lower(), by_admin=False, now=now)
                return req
            if req.status != Status.PENDING.value:
                raise PolicyViolation(f"This request is already {req.status}.")
            check_transition(Status(req.status), Status.CANCELLED)
            req.status, req.updated_at, req.decided_at = Status.CANCELLED.value, now, now
            close_schedule(req)
            req.version += 1
            snap = notices.describe(rt, req, await load_votes(session, req.id))
            await notices.record(rt, session, at=now, kind="cancelled", actor=by.lower(), req=req, snap=snap,
                                 from_state=Status.PENDING.value, to_state=Status.CANCELLED.value,
                                 text="cancelled by the requester")
            await notices.update_approvals(session, at=now, snap=snap, layer=req.layer,
                                           outcome="Cancelled by the requester")
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
                req.status, req.updated_at, req.decided_at = Status.LAPSED.value, now, now
                close_schedule(req)
                req.version += 1
                snap = notices.describe(rt, req, await load_votes(session, req.id))
                await notices.record(rt, session, at=now, kind="lapsed", actor=notices.SYSTEM, req=req, snap=snap,
                                     from_state=Status.PENDING.value, to_state=Status.LAPSED.value,
                                     detail={"layer": req.layer}, text=f"lapsed: no decision at layer {req.layer}")
                await notices.update_approvals(session, at=now, snap=snap, layer=req.layer,
                                         outcome="Lapsed: no decision in time")
                notices.tell_requester(session, at=now, snap=snap, event="lapsed",
                                       text=f"Your request {req.id} lapsed: nobody decided layer {req.layer} in time.")
        return len(due)
