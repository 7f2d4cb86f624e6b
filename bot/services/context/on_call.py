"""On-call approval: a requester on call now in PagerDuty passes the layers whose rule says so.

Decided when the request is made, before its transaction (the PagerDuty calls are I/O): the leading
layers whose ``auto_approve_when.on_call.pagerduty`` (or the eligibility's) matches one of the
requester's current shifts pass at once; the first layer without a match, and every later one, is
decided by people as usual. PagerDuty unreachable, throttling or refusing: no layer passes (the
request goes to the human approvers) and the audit log says why. A scheduled request (``starts_at``)
is never approved by on-call: being on call now says nothing about then.

With ``end_with_shift`` the request's ``ends_by`` is the end of the matching shift: the grant's expiry
is capped there and an extension never goes past it (bot/services/access/grants.py); a later handover to the
same person does not move it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.domain.approval_context import PagerDutyOnCall
from bot.domain.policy import Eligibility
from bot.services import notices
from bot.services.runtime import Runtime
from connectors.base import ConnectorError
from connectors.pagerduty import Shift
from storage.core_tx import Writer
from storage.tables import AccessRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerPass:
    layer: int
    connector: str
    shift: Shift

    def detail(self) -> dict[str, Any]:
        s = self.shift
        return {"layer": self.layer, "connector": self.connector, "schedule": s.schedule,
                "escalation_policy": s.escalation_policy, "escalation_level": s.level,
                "shift_end": s.end.isoformat() if s.end else None}


@dataclass(frozen=True)
class OnCallOutcome:
    passes: tuple[LayerPass, ...] = ()
    ends_by: datetime | None = None  # the earliest end of a matching shift whose rule says end_with_shift
    unavailable: str | None = None  # why PagerDuty could not answer (log detail, no secrets)
    checked: bool = field(default=False)  # some layer had an on-call rule

    @property
    def layers_passed(self) -> int:
        return len(self.passes)


def best_shift(shifts: list[Shift], rule: PagerDutyOnCall) -> Shift | None:
    """The matching shift that lasts longest (a permanent one first), at an allowed escalation level."""
    allowed = [s for s in shifts if not rule.escalation_levels or s.level in rule.escalation_levels]
    allowed = [s for s in allowed if s.schedule in rule.schedules or s.escalation_policy in rule.escalation_policies]
    if not allowed:
        return None
    never = datetime.max.replace(tzinfo=UTC)  # a permanent on-call (no end) lasts longest
    return max(allowed, key=lambda s: s.end or never)


async def check_on_call(rt: Runtime, elig: Eligibility, requester: str, *,
                        starts_at: datetime | None = None) -> OnCallOutcome:
    """Which leading layers of ``elig`` the requester passes by being on call now (never raises)."""
    if not elig.approvals or elig.on_call_rule(1) is None:
        return OnCallOutcome()
    if starts_at is not None:
        return OnCallOutcome(checked=True)
    now = rt.clock.now()
    passes: list[LayerPass] = []
    ends: list[datetime] = []
    asked: dict[PagerDutyOnCall, list[Shift]] = {}
    for layer in range(1, len(elig.approvals) + 1):
        when = elig.on_call_rule(layer)
        if when is None:
            break
        rule = when.on_call.pagerduty
        if rule not in asked:
            try:
                client = rt.context.pagerduty(rt.policy.context_connectors, rule.connector)
                asked[rule] = await client.on_call(requester, at=now, schedules=rule.schedules,
                                                   escalation_policies=rule.escalation_policies)
            except ConnectorError as exc:
                log.warning("on-call check for %s failed; the layers go to their approvers: %s", elig.name, exc)
                return OnCallOutcome(tuple(passes), min(ends) if ends else None, str(exc)[:300], checked=True)
        shift = best_shift(asked[rule], rule)
        if shift is None:
            break
        passes.append(LayerPass(layer, rule.connector, shift))
        if rule.end_with_shift and shift.end is not None:
            ends.append(shift.end)
    return OnCallOutcome(tuple(passes), min(ends) if ends else None, checked=True)


async def record_on_call(rt: Runtime, session: Writer, *, at: datetime, req: AccessRequest,
                         snap: dict[str, Any], outcome: OnCallOutcome) -> None:
    """The audit lines of an on-call check: each layer passed (schedule, level, shift end), or why
    PagerDuty could not be asked (the request then waits for people)."""
    for p in outcome.passes:
        end = f", shift ends {p.shift.end:%Y-%m-%d %H:%M} UTC" if p.shift.end else ""
        where = f"schedule {p.shift.schedule}" if p.shift.schedule else "directly"
        await notices.record(rt, session, at=at, kind="on_call_approved", actor=notices.SYSTEM, req=req, snap=snap,
                             detail={**p.detail(), "ends_by": outcome.ends_by.isoformat() if outcome.ends_by else None},
                             text=f"layer {p.layer} passed: {req.requester} is on call ({where}, escalation policy "
                                  f"{p.shift.escalation_policy} level {p.shift.level}{end})")
    if outcome.unavailable is not None:
        await notices.record(rt, session, at=at, kind="on_call_unavailable", actor=notices.SYSTEM, req=req,
                             snap=snap, detail={"error": outcome.unavailable},
                             text="PagerDuty could not be asked who is on call; the request waits for its approvers")


def on_call_context(outcome: OnCallOutcome) -> dict[str, Any] | None:
    """What the request's ``context`` keeps of the check (shown with the request)."""
    if not outcome.passes:
        return None
    return {"layers": [p.detail() for p in outcome.passes],
            "ends_by": outcome.ends_by.isoformat() if outcome.ends_by else None}


def request_context(ticket: dict[str, Any] | None, outcome: OnCallOutcome) -> dict[str, Any] | None:
    """The request's ``context`` column: the Jira ticket as checked and the on-call shift that approved it."""
    out: dict[str, Any] = {}
    if ticket is not None:
        out["ticket"] = ticket
    shift = on_call_context(outcome)
    if shift is not None:
        out["on_call"] = shift
    return out or None
