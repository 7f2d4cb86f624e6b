"""Reminders and escalation of pending approvals, driven by the injected clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.domain.requests import Decision, PolicyViolation, Status
from bot.services.clock import ManualClock
from storage.tables import AccessRequest, Event
from tests.conftest import DbFactory
from tests.services.policies import extended_policy
from tests.services.stack import Stack, make_stack


async def _submit(s: Stack) -> AccessRequest:
    return await s.requests.submit(requester="alice@example.com", eligibility="db-admin",
                                   duration=timedelta(hours=1), justification="vacuum the big table")


def _asks(s: Stack) -> list[tuple[str, str | None]]:
    return [(a["approver"], a.get("note")) for a in s.notifier.of_kind("approval_request")]


async def _events(s: Stack) -> list[str]:
    async with s.rt.db.sessions() as session:
        return [e.kind for e in (await session.execute(select(Event).order_by(Event.id))).scalars()]


async def test_undecided_approvers_are_reminded_every_interval(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    req = await _submit(s)
    await s.worker.run_until_idle()
    assert sorted(a for a, _ in _asks(s)) == ["bob@example.com", "carol@example.com"]
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    s.notifier.delivered.clear()

    clock.advance(timedelta(minutes=59))
    await s.worker.run_until_idle()
    assert _asks(s) == []
    clock.advance(timedelta(minutes=1))
    await s.worker.run_until_idle()
    # bob already approved: only carol is reminded
    asks = _asks(s)
    assert [a for a, _ in asks] == ["carol@example.com"]
    assert asks[0][1] is not None and asks[0][1].startswith("Reminder")
    s.notifier.delivered.clear()
    await s.worker.run_until_idle()
    assert _asks(s) == []  # once per interval, not once per tick
    clock.advance(timedelta(minutes=50))
    await s.worker.run_until_idle()
    assert _asks(s) == []
    assert (await _events(s)).count("reminded") == 1


async def test_escalation_adds_the_escalation_group_and_its_decision_counts(db_factory: DbFactory,
                                                                          clock: ManualClock) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    req = await _submit(s)
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    # dave (security, the escalation group) is not an approver before the escalation
    with pytest.raises(PolicyViolation, match="not an approver"):
        await s.approvals.decide(request_id=req.id, layer=1, approver="dave@example.com", decision=Decision.APPROVE)
    clock.advance(timedelta(hours=1, minutes=59))
    await s.worker.run_until_idle()
    assert "dave@example.com" not in [a for a, _ in _asks(s)]
    s.notifier.delivered.clear()

    clock.advance(timedelta(minutes=1))
    await s.worker.run_until_idle()
    escalated = [(a, n) for a, n in _asks(s) if n and n.startswith("Escalated")]
    # carol is in security too but was asked already: only dave is new
    assert [a for a, _ in escalated] == ["dave@example.com"]
    assert "security" in (escalated[0][1] or "") and "2h" in (escalated[0][1] or "")
    assert "escalated" in await _events(s)
    result = await s.approvals.decide(request_id=req.id, layer=1, approver="dave@example.com",
                                      decision=Decision.APPROVE)
    assert result.status is Status.APPROVED
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "db-admins")


async def test_escalated_request_still_lapses_at_the_timeout(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    req = await _submit(s)
    clock.advance(timedelta(hours=4))
    await s.worker.run_until_idle()
    async with s.rt.db.sessions() as session:
        row = (await session.execute(select(AccessRequest).where(AccessRequest.id == req.id))).scalar_one()
    assert row.status == "lapsed"
    assert row.next_reminder_at is None and row.escalate_at is None
    assert s.notifier.of_kind("requester")[-1]["event"] == "lapsed"
    s.notifier.delivered.clear()
    clock.advance(timedelta(hours=3))
    await s.worker.run_until_idle()
    assert _asks(s) == []


async def test_reminder_due_survives_a_restart(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    await _submit(s)
    await s.worker.run_until_idle()
    clock.advance(timedelta(hours=1))
    s = await make_stack(db_factory(), extended_policy(), clock)  # a new process: the schedule is in the database
    await s.worker.run_until_idle()
    assert sorted(a for a, n in _asks(s) if n) == ["bob@example.com", "carol@example.com"]


async def test_app_home_lists_the_request_for_escalation_approvers_only_once_escalated(
        db_factory: DbFactory, clock: ManualClock) -> None:
    from bot.services.queries import awaiting_me

    s = await make_stack(db_factory(), extended_policy(), clock)
    req = await _submit(s)
    assert await awaiting_me(s.rt, "dave@example.com") == []
    clock.advance(timedelta(hours=2))
    await s.worker.run_until_idle()
    assert [snap["id"] for snap, _ in await awaiting_me(s.rt, "dave@example.com")] == [req.id]


def _after_hours_policy():  # type: ignore[no-untyped-def]
    import yaml

    from bot.policy_file import parse_policy
    from tests.services.policies import extended_policy_text

    doc = yaml.safe_load(extended_policy_text())
    doc["business_hours"] = {"timezone": "Europe/Berlin", "days": ["mon", "tue", "wed", "thu", "fri"],
                             "start": "09:00", "end": "17:00"}
    layer = doc["eligibilities"][-1]["approvals"][0]
    layer["after_hours"] = {"users": ["erin@example.com"]}
    layer["min_approvals"] = 1
    return parse_policy(yaml.safe_dump(doc), source="after-hours.yml", env={})


async def test_outside_business_hours_the_layer_goes_to_after_hours_approvers(db_factory: DbFactory,
                                                                            clock: ManualClock) -> None:
    from datetime import UTC, datetime

    s = await make_stack(db_factory(), _after_hours_policy(), clock)
    clock.set(datetime(2026, 1, 5, 17, 30, tzinfo=UTC))  # Monday 18:30 in Berlin: after hours
    late = await s.requests.submit(requester="alice@example.com", eligibility="db-admin",
                                   duration=timedelta(hours=1), justification="night deploy")
    await s.worker.run_until_idle()
    assert [a["approver"] for a in s.notifier.of_kind("approval_request")] == ["erin@example.com"]
    with pytest.raises(PolicyViolation, match="not an approver"):
        await s.approvals.decide(request_id=late.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    result = await s.approvals.decide(request_id=late.id, layer=1, approver="erin@example.com",
                                      decision=Decision.APPROVE)
    assert result.status is Status.APPROVED

    s.notifier.delivered.clear()
    clock.set(datetime(2026, 1, 6, 9, 0, tzinfo=UTC))  # Tuesday 10:00 in Berlin: business hours
    day = await s.requests.submit(requester="bob@example.com", eligibility="db-admin",
                                  duration=timedelta(hours=1), justification="day deploy")
    await s.worker.run_until_idle()
    assert [a["approver"] for a in s.notifier.of_kind("approval_request")] == ["carol@example.com"]
    with pytest.raises(PolicyViolation, match="not an approver"):
        await s.approvals.decide(request_id=day.id, layer=1, approver="erin@example.com", decision=Decision.APPROVE)
