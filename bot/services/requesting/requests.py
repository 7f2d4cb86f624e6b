"""Submitting, cancelling and lapsing requests."""

from __future__ import annotations

import functools
import zlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility
from bot.domain.requests import (
    BREAKGLASS,
    EXTENSION,
    PolicyViolation,
    Status,
    Submission,
    check_transition,
    validate_submission,
)
from bot.domain.requests import eligible_approvers as layer_candidates
from bot.services import notices
from bot.services.claims import FIRST_TOKEN, LEASE
from bot.services.context.on_call import OnCallOutcome, check_on_call, record_on_call, request_context
from bot.services.context.tickets import check_ticket
from bot.services.policy_version import require_current, under_current_policy
from bot.services.requesting.bundles import approve_members, bundle_context, check_held, check_items, check_members
from bot.services.requesting.extension_apply import approve_extension, deadline_of
from bot.services.requesting.request_rows import close_schedule, load_votes
from bot.services.runtime import Runtime, new_id
from connectors.base import ConnectorError
from storage.core_tx import CoreTx
from storage.db import ADVISORY_XACT_LOCK, after_commit
from storage.records import Unit, build
from storage.tables import AccessRequest, ApprovalVote, Grant

GRANT_HANDED = "grant_handed"  # tx info: the transaction approved a grant and hands it to this process's worker

# Built once: a statement built per call costs its construction and cache key every time.
_REQUEST = select(AccessRequest).where(AccessRequest.id == bindparam("b_id"))
_REQUEST_LOCKED = _REQUEST.with_for_update()
# The same as rows of the tables, for a Core transaction (storage/records.py)
_REQUESTS, _VOTE_TABLE = AccessRequest.__table__, ApprovalVote.__table__  # type: ignore[attr-defined]
_REQUEST_ROW = select(_REQUESTS).where(_REQUESTS.c.id == bindparam("b_id"))
_REQUEST_ROW_LOCKED = _REQUEST_ROW.with_for_update()
_VOTE_ROWS = select(_VOTE_TABLE).where(_VOTE_TABLE.c.request_id == bindparam("b_id")).order_by(_VOTE_TABLE.c.id)
# The requester's pending requests of an eligibility (a few at most; the caller keeps the "access" ones).
# No condition on ``kind``: with one, both databases could pick ix_request_review_due (kind, …) and read
# every access request ever made — SQLite without statistics did; PostgreSQL's index statistics in
# bench.throughput showed ~280 entries of it read per flow. ix_request_open (migration 0008) serves it.
# Pending, approved or active: one of each (person, eligibility) at a time — more time is an extension.
# Access being released or revoked (its grant ``revoking``) no longer counts: it may be asked for again.
_ENDING = select(Grant.id).where(Grant.request_id == AccessRequest.id,  # type: ignore[arg-type]
                                 Grant.status.in_(["revoking", "ended", "failed"]))  # type: ignore[attr-defined]
_OPEN_DUPLICATE = select(AccessRequest.id, AccessRequest.kind, AccessRequest.status, AccessRequest.bundle_id).where(
    AccessRequest.requester == bindparam("b_requester"), AccessRequest.eligibility == bindparam("b_elig"),
    AccessRequest.status.in_([Status.PENDING.value, Status.APPROVED.value, Status.ACTIVE.value]),  # type: ignore[attr-defined]
    ~_ENDING.exists())
# The requester's requests of the last hour (the per-person rate limit); the requester index serves it.
_RECENT = select(func.count()).select_from(AccessRequest).where(
    AccessRequest.requester == bindparam("b_requester"), AccessRequest.created_at > bindparam("b_since"))  # type: ignore[operator]


async def load_request(session: AsyncSession, request_id: str, *, lock: bool = False) -> AccessRequest:
    req = (await session.execute(_REQUEST_LOCKED if lock else _REQUEST, {"b_id": request_id})).scalar_one_or_none()
    if req is None:
        raise PolicyViolation(f"There is no request {request_id}.")
    return req


async def read_request(unit: Unit, request_id: str, *, lock: bool = False) -> AccessRequest:
    """``load_request`` in a Core transaction."""
    req = await unit.first(AccessRequest, _REQUEST_ROW_LOCKED if lock else _REQUEST_ROW, {"b_id": request_id})
    if req is None:
        raise PolicyViolation(f"There is no request {request_id}.")
    return req


async def read_votes(unit: Unit, request_id: str) -> list[ApprovalVote]:
    """``load_votes`` in a Core transaction."""
    return await unit.all(ApprovalVote, _VOTE_ROWS, {"b_id": request_id})


def new_grant(rt: Runtime, req: AccessRequest, elig: Eligibility, *, now: datetime | None = None) -> Grant:
    """A grant waiting to be carried out: ``now`` (the caller's, so that "due now" compares equal), or at
    the request's scheduled start."""
    now = now or rt.clock.now()
    due = req.starts_at if req.starts_at is not None and req.starts_at > now else now
    return build(Grant, id=new_id("G"), request_id=req.id, connector=elig.connector, target_kind=elig.target.kind,
                 target_id=elig.target.ref, user_email=req.requester, status="granting",
                 next_attempt_at=due)


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


def allowed_seconds(req: AccessRequest, elig: Eligibility | None) -> int:
    """How long ``req``'s access may last under the policy in force now: its own duration, capped to
    the eligibility's current maximum (break-glass: its break-glass maximum). The policy may have
    changed since the request was submitted; the current one decides."""
    if elig is None:
        return req.duration_s
    cap = elig.break_glass.max_duration if req.kind == BREAKGLASS and elig.break_glass else elig.max_duration
    return min(req.duration_s, int(cap.total_seconds()))


async def lock_person(rt: Runtime, tx: CoreTx, email: str) -> None:
    """Serialise one person's submissions across replicas (PostgreSQL advisory lock until the
    transaction ends; SQLite has one writer): two at once cannot both pass the checks above."""
    if not rt.db.is_sqlite:
        await tx.rows(ADVISORY_XACT_LOCK, {"k": -1 - zlib.crc32(f"submit|{email}".encode())})  # < 0: own keys


def check_start(rt: Runtime, starts_at: datetime | None) -> None:
    """A scheduled start must lie in the future and no further ahead than the policy allows."""
    if starts_at is None:
        return
    now, ahead = rt.clock.now(), rt.policy.settings.max_schedule_ahead
    if starts_at <= now:
        raise PolicyViolation("The start time must be in the future.", field="starts_at")
    if starts_at - now > ahead:
        raise PolicyViolation(f"A request can start at most {format_duration(ahead)} ahead.", field="starts_at")


def precheck_submission(rt: Runtime, *, eligibility: str, duration: timedelta, justification: str,
                        ticket: str | None, starts_at: datetime | None = None) -> None:
    """The checks that need no I/O (eligibility exists, duration, justification, ticket); raises PolicyViolation.

    The Slack modal runs these before acknowledging, so they come back as inline field errors at once;
    ``RequestService.submit`` runs them all again, with the ones that need the directory and database.
    """
    elig = rt.eligibility(eligibility)
    if elig is None:
        raise PolicyViolation(f"There is no eligibility called {eligibility!r}.", field="eligibility")
    validate_submission(Submission(elig.name, "precheck", duration, justification, ticket), elig,
                        requester_eligible=True, justification_max=rt.policy.settings.justification_max,
                        ticket_pattern=rt.policy.settings.ticket_pattern)
    check_start(rt, starts_at)


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
            async with rt.db.sessions() as reader:
                winner = (await reader.execute(_OPEN_DUPLICATE, {"b_requester": requester, "b_elig": elig.name})).all()
            ids = [r.id for r in winner if r.kind == "access"]
            if not ids:
                raise
            raise PolicyViolation(f"You already have a pending request for {elig.name} ({ids[0]}).") from None

    async def _store(self, *, requester: str, elig: Eligibility, sub: Submission, requester_slack: str | None,
                     submitter: str | None, submitted_by_slack: str | None, starts_at: datetime | None,
                     now: datetime, after_hours: bool, first: set[str], seen: int | None, on_call: OnCallOutcome,
                     context: dict[str, Any] | None) -> AccessRequest:
        """``submit``'s transaction: the request, its audit event and its notices (or the auto-approval)."""
        rt, first_layer = self.rt, on_call.layers_passed + 1  # the first layer people decide
        async with rt.db.core_transaction() as session:
            await require_current(session, seen)
            await lock_person(rt, session, requester)  # their checks and insert, one submission at a time
            await self._check_open_and_rate(session, requester, elig, now)
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
                await self.approve_final(unit, req, elig, actor=notices.SYSTEM, auto=True,
                                         text="approved: the requester is on call" if on_call.passes else None)
            await unit.flush()
        # auto-approved (no layers, or every layer passed by on-call): its grant is due now.
        if first_layer > len(elig.approvals) and not session.info.get(GRANT_HANDED):
            rt.wake.set()  # A pending request has nothing due for the worker (its deadlines come with the tick)
        return req

    async def _check_open_and_rate(self, tx: CoreTx, requester: str, elig: Eligibility, now: datetime) -> None:
        """One request per (person, item) pending, approved or active at a time, alone or within a bundle,
        and at most ``settings.max_requests_per_hour`` requests per person; raises PolicyViolation."""
        open_ = [r for r in await tx.rows(_OPEN_DUPLICATE, {"b_requester": requester, "b_elig": elig.name})
                 if r.kind == "access"]
        pending = [r.id for r in open_ if r.status == Status.PENDING.value]
        if pending:
            raise PolicyViolation(f"You already have a pending request for {elig.name} ({pending[0]}).")
        if open_:
            held = open_[0]
            of = f", granted with the bundle {held.bundle_id}" if held.bundle_id not in (None, held.id) else ""
            raise PolicyViolation(f"You already have {elig.name} ({held.id}{of}). Extend it (the Extend button, "
                                  "or /jit list) or release it first; a second grant of it is not needed.")
        await check_held(self.rt, tx, requester, elig)  # an item held within a bundle (requesting/bundles.py)
        limit = self.rt.policy.settings.max_requests_per_hour
        recent = (await tx.scalars(_RECENT, {"b_requester": requester, "b_since": now - timedelta(hours=1)}))[0]
        if recent >= limit:
            raise PolicyViolation(f"You have made {recent} requests in the last hour, the most allowed "
                                  f"({limit}); please try again later.")

    async def approve_final(self, unit: Unit, req: AccessRequest, elig: Eligibility, *, actor: str,
                            auto: bool = False, text: str | None = None,
                            votes: list[ApprovalVote] | None = None) -> Grant | None:
        """PENDING → APPROVED and a grant waiting to be carried out (inside the caller's transaction,
        written by its ``unit.flush()``). ``votes``: the request's votes as this transaction has them
        (read here when not given). An extension request moves its grant's expiry instead (no grant)."""
        if req.kind == EXTENSION:
            await approve_extension(self.rt, unit, req, elig, actor=actor, auto=auto, votes=votes)
            return None
        now = self.rt.clock.now()
        check_transition(Status(req.status), Status.APPROVED)
        check_items(req, elig)  # a bundle as requested, or none (bot/services/requesting/bundles.py)
        asked, req.duration_s = req.duration_s, allowed_seconds(req, elig)  # the maximum may have been lowered
        req.status, req.decided_at, req.updated_at = Status.APPROVED.value, now, now
        close_schedule(req)
        req.version += 1
        grant = new_grant(self.rt, req, elig, now=now)
        taker = self.rt.grant_taker
        if taker is not None and grant.next_attempt_at is not None and grant.next_attempt_at <= now:
            # claimed here and carried out by this process's worker once committed (GrantService.adopt)
            grant.claimed_by, grant.claimed_until = self.rt.instance_id, now + LEASE
            grant.claim_token = FIRST_TOKEN  # fenced like any claim (bot/services/access/fencing.py)
            after_commit(unit.tx.info, functools.partial(taker, grant.id))
            unit.tx.info[GRANT_HANDED] = True
        unit.add(grant)
        if elig.bundle:  # its other members: approved requests of their own (bot/services/requesting/bundles.py)
            await approve_members(self.rt, self.approve_final, unit, req, elig, actor=actor, auto=auto)
        session = unit.tx
        snap = notices.describe(self.rt, req, votes if votes is not None else await read_votes(unit, req.id))
        later = grant.next_attempt_at is not None and grant.next_attempt_at > now
        await notices.record(self.rt, session, at=now, kind="approved", actor=actor, req=req, snap=snap,
                             from_state=Status.PENDING.value, to_state=Status.APPROVED.value,
                             detail={"auto": auto, **({"shortened_from": format_duration(timedelta(seconds=asked))}
                                                       if asked != req.duration_s else {}),
                                     **({"starts_at": grant.next_attempt_at.isoformat()} if later
                                                      and grant.next_attempt_at else {})},
                             text=text or ("auto-approved (no approval layers)" if auto else
                                           "approved — granting access")
                             + (f"; starts {grant.next_attempt_at:%Y-%m-%d %H:%M} UTC" if later
                                and grant.next_attempt_at else ""))
        if later and grant.next_attempt_at is not None:
            message = (f"Your request {req.id} for {elig.name} was approved; access starts "
                       f"{grant.next_attempt_at:%Y-%m-%d %H:%M} UTC.")
        else:
            message = f"Your request {req.id} for {elig.name} was approved; granting access now."
        if asked != req.duration_s:
            message += (f" Its duration was shortened to {format_duration(timedelta(seconds=req.duration_s))}: "
                        f"the policy now allows at most that for {elig.name}.")
        notices.tell_requester(session, at=now, snap=snap, event="approved", text=message)
        return grant

    async def cancel(self, *, request_id: str, by: str) -> AccessRequest:
        """The requester withdraws a PENDING request, or an APPROVED one whose grant has not started."""
        from bot.services.requesting.not_started import stop_before_start, waiting_grant

        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.transaction() as session:
            req = await load_request(session, request_id, lock=True)
            if by.lower() not in (req.requester, req.submitted_by):
                raise PolicyViolation("Only the requester can cancel this request.")
            if req.status == Status.APPROVED.value:
                grant = await waiting_grant(session, req, now=now)
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
