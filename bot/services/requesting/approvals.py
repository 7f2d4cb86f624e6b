"""Approve / deny, re-checked on the server at the moment of the click."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from bot.domain.approved_for import approved_seconds
from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility
from bot.domain.requests import EXTENSION, Decision, LayerOutcome, PolicyViolation, Status, Vote, decide
from bot.domain.requests import eligible_approvers as layer_candidates
from bot.domain.step_up import step_up_for
from bot.domain.step_up_proof import StepUpProof, StepUpRequired
from bot.services import notices
from bot.services.auditing.audit import append_event
from bot.services.policy_version import require_current, under_current_policy
from bot.services.requesting.final_approval import GRANT_HANDED, approve_final
from bot.services.requesting.request_rows import close_schedule, read_request, read_votes
from bot.services.requesting.requests import open_layer
from bot.services.runtime import Runtime
from storage.records import Unit, build
from storage.tables import AccessRequest, ApprovalVote

_ELIGIBILITY_OF = select(AccessRequest.eligibility).where(AccessRequest.id == bindparam("b_id"))


@dataclass(frozen=True)
class DecisionResult:
    request: AccessRequest
    status: Status
    layer: int
    message: str  # what the person who clicked is told


class ApprovalService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def layer_approvers(self, req: AccessRequest, layer: int, earlier: list[str]) -> set[str]:
        """Who may decide ``layer`` now: its approvers (plus its escalation set once escalated), minus
        the requester, the submitter and earlier layers' approvers."""
        return await layer_approvers(self.rt, req, layer, earlier)

    async def decide(self, *, request_id: str, layer: int, approver: str, decision: Decision,
                     reason: str | None = None, approver_slack: str | None = None,
                     step_up: StepUpProof | None = None, duration: timedelta | None = None) -> DecisionResult:
        """Record one approver's decision under the applied policy. Raises PolicyViolation (user-facing)
        when it is not allowed, and ``StepUpRequired`` for an approval the policy allows only after a fresh
        sign-in (``step_up``), unless ``step_up`` proves one for this request, layer and approver.
        ``duration``: an approval for less than the duration as it stands (never longer; checked here)."""
        return await under_current_policy(self.rt.follower, functools.partial(
            self._decide, request_id=request_id, layer=layer, approver=approver, decision=decision, reason=reason,
            approver_slack=approver_slack, step_up=step_up, duration=duration))

    async def _decide(self, *, request_id: str, layer: int, approver: str, decision: Decision,
                      reason: str | None, approver_slack: str | None,
                      step_up: StepUpProof | None = None, duration: timedelta | None = None) -> DecisionResult:
        rt, approver, seen = self.rt, approver.strip().lower(), self.rt.decision_version
        async with rt.db.core_reads() as reads:  # its eligibility, before the transaction (never changes)
            name = next(iter(await reads.scalars(_ELIGIBILITY_OF, {"b_id": request_id})), None)
        if name is None:
            raise PolicyViolation(f"There is no request {request_id}.")
        elig = rt.eligibility(name)
        if elig is None:
            raise PolicyViolation(f"{name} is no longer in the policy; nobody can approve it.")
        # Membership is resolved before the transaction (it may call the IdP); the layer it is for is
        # pinned, and the transaction refuses the vote if the request moved on meanwhile.
        in_layer = in_escalation = False
        in_set = {False: False, True: False}  # member of the layer's approvers / of its after-hours approvers
        if 1 <= layer <= len(elig.approvals):
            spec = elig.approvals[layer - 1]
            for after_hours in (False, True):
                in_set[after_hours] = await rt.directory.contains(
                    rt.policy, spec.approver_set(after_hours=after_hours), approver)
            in_layer = in_set[False] or in_set[True]
            if not (in_set[False] and in_set[True]) and spec.escalation is not None:
                in_escalation = await rt.directory.contains(rt.policy, spec.escalation, approver)
        # Never call the directory inside the transaction (it may be slow, or itself need the database).
        next_members: set[str] = set()
        next_after_hours = rt.policy.after_hours(rt.clock.now())
        if layer < len(elig.approvals):
            next_members = await rt.directory.expand(
                rt.policy, elig.approvals[layer].approver_set(after_hours=next_after_hours))
        try:
            async with rt.db.core_transaction() as tx:
                unit = Unit(tx)
                req = await read_request(unit, request_id, lock=True)
                await require_current(tx, seen)  # checked above under the policy applied now, or again
                deadline = req.layer_deadline
                if req.status == Status.PENDING.value and deadline is not None and rt.clock.now() >= deadline:
                    # its approval time is over: it lapses (the worker's pass records that), whatever comes in
                    raise PolicyViolation(f"{req.id} waited past its approval time and lapses; nothing was "
                                          "recorded. The requester can ask again.")
                votes = await read_votes(unit, req.id)
                if in_layer:  # which set counts is the one the layer opened with
                    in_layer = in_set[req.after_hours]
                layers = len(elig.approvals)  # the policy in force now decides, not the one at submit
                if req.status == Status.PENDING.value and req.layer > layers:
                    message = await self._approve_as_reduced(unit, req, elig, votes)
                    await unit.flush()
                    outcome = LayerOutcome(Status.APPROVED, req.layer, layer_passed=True)
                else:
                    outcome, message = await self._vote(unit, req, votes, layers, elig, layer, approver, decision,
                                                        reason, approver_slack, in_layer, in_escalation,
                                                        next_members, next_after_hours, step_up, duration)
        except IntegrityError:
            raise PolicyViolation("You have already decided on this request.") from None
        if outcome.status is Status.APPROVED and not tx.info.get(GRANT_HANDED):  # else this worker has it
            rt.wake.set()
        return DecisionResult(req, outcome.status, outcome.layer, message)

    async def _vote(self, unit: Unit, req: AccessRequest, votes: list[ApprovalVote], layers: int,
                    elig: Eligibility, layer: int, approver: str, decision: Decision, reason: str | None,
                    approver_slack: str | None, in_layer: bool, in_escalation: bool, next_members: set[str],
                    next_after_hours: bool, step_up: StepUpProof | None = None,
                    duration: timedelta | None = None) -> tuple[LayerOutcome, str]:
        """Check and record one vote on the locked ``req`` under the current policy's ``layers``."""
        try:
            outcome = decide(
                status=Status(req.status), current_layer=req.layer, layers=layers,
                min_approvals=elig.approvals[req.layer - 1].min_approvals if layers else 1,
                requester=req.requester, votes=[Vote(v.layer, v.approver, Decision(v.decision)) for v in votes],
                vote=Vote(layer, approver, decision), submitter=req.submitted_by,
                # the escalation set counts only once the layer has escalated (checked under the lock)
                approver_in_layer=in_layer or (in_escalation and req.escalated and req.layer == layer))
        except PolicyViolation as exc:
            raise _explain(exc, req, votes, layer) from None
        if duration is not None and decision is not Decision.APPROVE:
            raise PolicyViolation("Only an approval can carry a duration.")
        if duration is not None and req.kind == EXTENSION:  # its extra time is the policy's, set on the server
            raise PolicyViolation("An extension's extra time is set by the policy: approve or deny it as it is.")
        # the vote counts: a shorter duration is checked against the one standing (never longer)
        shorter = approved_seconds(req.duration_s, duration)
        need = step_up_for(elig.step_up, elig.approvals[layer - 1].step_up) \
            if decision is Decision.APPROVE and 1 <= layer <= len(elig.approvals) else None
        if need is not None:  # checked once the vote is known to count (bot/stepup/)
            if step_up is None or not step_up.covers(request_id=req.id, layer=layer, approver=approver):
                raise StepUpRequired(need, request_id=req.id, layer=layer)
            await append_event(unit.tx, at=self.rt.clock.now(), kind="step_up_verified", actor=approver,
                               request_id=req.id,
                               detail={"layer": layer, "provider": need.provider, "subject": step_up.subject,
                                       "auth_time": step_up.auth_time.isoformat(), "link": step_up.ticket})
        req.layers = layers  # written with the vote; the messages below say "of <layers>"
        vote = build(ApprovalVote, request_id=req.id, layer=layer, approver=approver,
                     approver_slack=approver_slack, decision=decision.value, reason=reason, at=self.rt.clock.now())
        unit.add(vote)
        await unit.flush()  # a second vote of the same approver fails here (unique)
        votes = [*votes, vote]  # as read_votes would read them: by id, the new one last
        shortened = None
        if shorter is not None:  # before the decision's effects: the grant and every message use it
            shortened = await self._shorten(unit, req, votes, layer, approver, shorter)
        message = await self._apply(unit, req, votes, layer, outcome.status, outcome.layer, outcome.layer_passed,
                                    approver, decision, reason, next_members, next_after_hours)
        await unit.flush()
        return outcome, (f"{message} You approved it for {shortened}." if shortened else message)

    async def _shorten(self, unit: Unit, req: AccessRequest, votes: list[ApprovalVote], layer: int,
                       approver: str, seconds: int) -> str:
        """``approver`` approved ``req`` for ``seconds`` (shorter than it stands): the request's duration
        becomes that (the shortest any approver approved wins), audited with who shortened it, and the
        requester is told."""
        now, asked = self.rt.clock.now(), format_duration(timedelta(seconds=req.duration_s))
        req.duration_s, req.updated_at = seconds, now
        given = format_duration(timedelta(seconds=seconds))
        snap = notices.describe(self.rt, req, votes)
        await notices.record(self.rt, unit.tx, at=now, kind="approved_for_less", actor=approver, req=req, snap=snap,
                             detail={"layer": layer, "approved_for": given, "shortened_from": asked},
                             text=f"approved at layer {layer} for {given} (asked {asked})")
        notices.tell_requester(unit.tx, at=now, snap=snap, event="approved_for_less",
                               text=f"Your request {req.id} for {req.eligibility}: {approver} approved it for "
                                    f"{given} instead of {asked}; access, once granted, lasts {given}.")
        return given

    async def _approve_as_reduced(self, unit: Unit, req: AccessRequest, elig: Eligibility,
                                  votes: list[ApprovalVote]) -> str:
        """``req`` already passed every layer the policy now has (layers were removed while it waited):
        it is approved now, by the policy, on the votes it has. The click only brought it up; it is
        not counted as a vote."""
        now, passed = self.rt.clock.now(), req.layer - 1
        req.layers = len(elig.approvals)
        text = (f"approved: the policy now has {req.layers} approval layer(s) and {passed} "
                f"{'was' if passed == 1 else 'were'} approved before it changed")
        await approve_final(self.rt, unit, req, elig, actor=notices.SYSTEM, votes=votes, text=text)
        await notices.update_approvals(unit.tx, at=now, snap=notices.describe(self.rt, req, votes), layer=passed + 1,
                                 outcome="Approved: the policy no longer needs this layer")
        return f"{req.id} no longer needs this layer under the current policy; it is approved."

    async def _apply(self, unit: Unit, req: AccessRequest, votes: list[ApprovalVote], layer: int,
                     status: Status, next_layer: int, passed: bool, approver: str, decision: Decision,
                     reason: str | None, next_members: set[str], next_after_hours: bool) -> str:
        """The decision's effects on ``req`` (written by the caller's ``unit.flush()``) and its messages."""
        session = unit.tx
        rt, now = self.rt, self.rt.clock.now()
        elig = rt.eligibility(req.eligibility)
        assert elig is not None
        if decision is Decision.DENY:
            req.status, req.decided_at, req.updated_at = Status.DENIED.value, now, now
            close_schedule(req)
            req.reason, req.version = reason, req.version + 1
            snap = notices.describe(rt, req, votes)
            await notices.record(rt, session, at=now, kind="denied", actor=approver, req=req, snap=snap,
                                 from_state=Status.PENDING.value, to_state=Status.DENIED.value,
                                 detail={"layer": layer, "reason": reason}, text=f"denied at layer {layer}")
            await notices.update_approvals(session, at=now, snap=snap, layer=layer, outcome=f"Denied by {approver}")
            notices.tell_requester(session, at=now, snap=snap, event="denied",
                                   text=f"Your request {req.id} for {req.eligibility} was denied by {approver}"
                                        + (f": {reason}" if reason else "."))
            return f"You denied {req.id}."
        snap = notices.describe(rt, req, votes)
        if not passed:
            await notices.record(rt, session, at=now, kind="approval_recorded", actor=approver, req=req, snap=snap,
                                 detail={"layer": layer}, text=f"approval recorded at layer {layer}; more needed")
            return f"Your approval of {req.id} is recorded; layer {layer} needs more approvals."
        await notices.record(rt, session, at=now, kind="layer_approved", actor=approver, req=req, snap=snap,
                             from_state=Status.PENDING.value, to_state=status.value, detail={"layer": layer},
                             text=f"approved at layer {layer} of {req.layers}")
        if status is Status.APPROVED:
            await approve_final(self.rt, unit, req, elig, actor=approver, votes=votes)
            await notices.update_approvals(session, at=now, snap=notices.describe(rt, req, votes), layer=layer,
                                     outcome=f"Approved by {approver}")
            return f"You approved {req.id}; " + ("the extension is applied if the access is still active."
                                                  if req.kind == EXTENSION else "access is being granted.")
        req.updated_at, req.version = now, req.version + 1
        open_layer(req, elig, next_layer, now, after_hours=next_after_hours)
        snap = notices.describe(rt, req, votes)
        await notices.update_approvals(session, at=now, snap=snap, layer=layer, outcome=f"Approved by {approver}")
        earlier = [v.approver for v in votes if v.decision == Decision.APPROVE.value]
        approvers = layer_candidates(next_members, requester=req.requester, earlier_approvers=earlier,
                                     submitter=req.submitted_by)
        if len(approvers) < elig.approvals[next_layer - 1].min_approvals:
            notices.alert(session, at=now, snap=snap, text=f"{req.id}: nobody is left to approve layer {next_layer} "
                                                           "(approvers are the requester or approved earlier layers)")
        notices.ask_layer(session, at=now, snap=snap, layer=next_layer, spec=elig.approvals[next_layer - 1],
                          approvers=sorted(approvers))
        notices.tell_requester(session, at=now, snap=snap, event="layer_approved",
                               text=f"Layer {layer} of {req.layers} approved your request {req.id}; "
                                    f"waiting for layer {next_layer}.")
        return f"You approved layer {layer} of {req.id}; it moves to layer {next_layer}."


async def layer_approvers(rt: Runtime, req: AccessRequest, layer: int, earlier: list[str]) -> set[str]:
    """Who may decide ``layer`` of ``req`` now (its escalation set counts once the layer escalated)."""
    elig = rt.eligibility(req.eligibility)
    if elig is None or not 1 <= layer <= len(elig.approvals):
        return set()
    spec = elig.approvals[layer - 1]
    members = await rt.directory.expand(rt.policy, spec.approver_set(after_hours=req.after_hours))
    if spec.escalation is not None and req.escalated and req.layer == layer:
        members |= await rt.directory.expand(rt.policy, spec.escalation)
    return layer_candidates(members, requester=req.requester, earlier_approvers=earlier, submitter=req.submitted_by)


def _explain(exc: PolicyViolation, req: AccessRequest, votes: list[ApprovalVote], layer: int) -> PolicyViolation:
    """Turn 'not open' refusals into 'already decided by …' for stale message copies."""
    deciders = [v.approver for v in votes if v.layer == layer]
    if deciders and (req.status != Status.PENDING.value or req.layer != layer):
        verb = "denied" if any(v.decision == "deny" for v in votes if v.layer == layer) else "approved"
        return PolicyViolation(f"Already {verb} by {', '.join(deciders)}; the request is now {req.status}.")
    return exc
