"""Policy keys for reminders, escalation, break-glass and delegates."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from bot.domain.policy import ApprovalLayer, Eligibility, Principals
from bot.domain.requests import Decision, PolicyViolation, Status, Vote, decide, eligible_approvers


def _layer(**kw: Any) -> dict[str, Any]:
    return {"approvers": {"groups": ["leads"]}, "timeout": "4h", **kw}


def _elig(**kw: Any) -> dict[str, Any]:
    return {"name": "db", "connector": "demo", "target": {"group": "db"}, "requestors": {"groups": ["eng"]},
            "max_duration": "4h", **kw}


def test_a_layer_may_remind_and_escalate() -> None:
    layer = ApprovalLayer.model_validate(_layer(remind_every="30m", escalate_after="1h",
                                                escalation={"groups": ["oncall"]}))
    assert layer.remind_every == timedelta(minutes=30) and layer.escalate_after == timedelta(hours=1)
    assert layer.escalation == Principals(groups=("oncall",))


@pytest.mark.parametrize("extra", [
    {"escalate_after": "1h"},                                       # escalation to nobody
    {"escalation": {"groups": ["oncall"]}},                          # escalation never happens
    {"escalate_after": "4h", "escalation": {"groups": ["oncall"]}},  # not before the layer lapses
    {"remind_every": "10s"},                                         # spam
])
def test_incoherent_reminder_or_escalation_is_refused(extra: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ApprovalLayer.model_validate(_layer(**extra))


def test_break_glass_is_bounded_by_the_eligibility_maximum() -> None:
    assert Eligibility.model_validate(_elig(break_glass={"max_duration": "1h"})).break_glass is not None
    with pytest.raises(ValidationError, match="break_glass.max_duration"):
        Eligibility.model_validate(_elig(break_glass={"max_duration": "5h"}))


def test_break_glass_reviewers_are_the_approvers_of_every_layer() -> None:
    elig = Eligibility.model_validate(_elig(approvals=[_layer(), {"approvers": {"groups": ["security", "leads"],
                                                                                "users": ["Ann@x.io"]}}]))
    assert elig.reviewers() == Principals(groups=("leads", "security"), users=("ann@x.io",))


def test_delegates_default_to_nobody() -> None:
    assert Eligibility.model_validate(_elig()).delegates.is_empty()


def test_the_submitter_never_decides_and_is_never_asked() -> None:
    with pytest.raises(PolicyViolation, match="on someone's behalf"):
        decide(status=Status.PENDING, current_layer=1, layers=1, min_approvals=1, requester="a@x.io", votes=[],
               vote=Vote(1, "d@x.io", Decision.APPROVE), approver_in_layer=True, submitter="D@x.io")
    assert eligible_approvers({"b@x.io", "d@x.io"}, requester="a@x.io", earlier_approvers=(),
                              submitter="d@x.io") == {"b@x.io"}


def test_business_hours_are_local_weekdays() -> None:
    from datetime import UTC, datetime

    from bot.domain.policy import BusinessHours

    hours = BusinessHours.model_validate({"timezone": "America/New_York", "days": ["Mon", "tuesday"],
                                          "start": "09:00", "end": "17:00"})
    assert hours.days == ("mon", "tue")
    assert hours.contains(datetime(2026, 1, 5, 14, 0, tzinfo=UTC))       # Monday 09:00 in New York
    assert not hours.contains(datetime(2026, 1, 5, 13, 59, tzinfo=UTC))  # 08:59
    assert not hours.contains(datetime(2026, 1, 7, 15, 0, tzinfo=UTC))   # Wednesday
    with pytest.raises(ValidationError, match="timezone"):
        BusinessHours.model_validate({"timezone": "Mars/Olympus"})
    with pytest.raises(ValidationError, match="start before"):
        BusinessHours.model_validate({"start": "17:00", "end": "09:00"})
