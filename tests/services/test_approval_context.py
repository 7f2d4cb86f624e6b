"""On-call approval (PagerDuty) and ticket checks (Jira) through the services, against the strict fakes."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.domain.policy import BreakGlass
from bot.domain.requests import Decision, PolicyViolation, Status
from bot.services.clock import ManualClock
from bot.slack.request_messages import approval_message
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import DbFactory
from tests.services.context_world import SHIFT, Vendors, context_policy, start_vendors
from tests.services.stack import Stack, make_stack


@pytest.fixture
async def vendors(clock: ManualClock) -> AsyncIterator[Vendors]:
    v = await start_vendors(clock)
    yield v
    await v.pd.stop()
    await v.jira.stop()


@pytest.fixture
async def s(db_factory: DbFactory, clock: ManualClock, vendors: Vendors) -> AsyncIterator[Stack]:
    stack = await make_stack(db_factory(), context_policy(vendors.pd.url, vendors.jira.url), clock)
    yield stack
    await stack.rt.context.aclose()


async def events(s: Stack, kind: str) -> list[Event]:
    async with s.rt.db.sessions() as session:
        return list((await session.execute(select(Event).where(Event.kind == kind)
                                           .order_by(Event.id))).scalars())  # type: ignore[arg-type]


async def grant_of(s: Stack, request_id: str) -> Grant:
    async with s.rt.db.sessions() as session:
        return (await session.execute(select(Grant).where(Grant.request_id == request_id))).scalar_one()


async def status_of(s: Stack, request_id: str) -> str:
    async with s.rt.db.sessions() as session:
        return (await session.execute(select(AccessRequest.status).where(AccessRequest.id == request_id))).scalar_one()


# ---- on-call approval ------------------------------------------------------------------------------------
async def test_requester_on_call_passes_the_layer_at_once_and_the_audit_records_the_shift(
        s: Stack, clock: ManualClock) -> None:
    req = await s.requests.submit(requester="alice@example.com", eligibility="oncall-db",
                                  duration=timedelta(hours=8), justification="paged: db down")
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "db-admins")
    passed = await events(s, "on_call_approved")
    assert [(e.detail["layer"], e.detail["schedule"], e.detail["escalation_level"], e.detail["shift_end"])
            for e in passed] == [(1, "PSCHED1", 1, (clock.now() + SHIFT).isoformat())]
    assert not s.notifier.of_kind("approval_request")  # nobody was asked
    g = await grant_of(s, req.id)
    assert g.expires_at == clock.now() + SHIFT  # end_with_shift: 3h, not the 8h asked


async def test_a_grant_with_end_with_shift_never_outlives_the_shift(s: Stack, clock: ManualClock,
                                                                   vendors: Vendors) -> None:
    shift_end = clock.now() + SHIFT
    req = await s.requests.submit(requester="alice@example.com", eligibility="oncall-db",
                                  duration=timedelta(hours=8), justification="paged: db down")
    await s.worker.run_until_idle()
    # a handover gives alice the next shift too: the grant still ends with the shift it was approved for
    vendors.pd.put_on_call(vendors.alice_pd, policy_id="PPOL1", schedule_id="PSCHED1", level=1, start=shift_end,
                           end=shift_end + timedelta(hours=8))
    with pytest.raises(PolicyViolation, match="on-call shift"):
        await s.grants.extend(request_id=req.id, actor="alice@example.com", by=timedelta(hours=1))
    while clock.now() < shift_end + timedelta(minutes=1):  # walk the clock: member only while on shift
        assert await s.is_member("alice@example.com", "db-admins") == (clock.now() < shift_end)
        clock.advance(timedelta(minutes=10))
        await s.worker.run_until_idle()
    assert not await s.is_member("alice@example.com", "db-admins")
    assert await status_of(s, req.id) == Status.EXPIRED.value


async def test_not_on_call_at_an_allowed_level_goes_to_the_human_approvers(s: Stack) -> None:
    # erin is no PagerDuty user; bob is on call, at level 2 only (the rule allows level 1)
    req = await s.requests.submit(requester="erin@example.com", eligibility="oncall-db",
                                  duration=timedelta(hours=1), justification="paged")
    await s.worker.run_until_idle()
    assert req.status == Status.PENDING.value and req.layer == 1
    assert {a["approver"] for a in s.notifier.of_kind("approval_request")} == {"bob@example.com", "carol@example.com"}
    bob = await s.requests.submit(requester="bob@example.com", eligibility="oncall-db",
                                  duration=timedelta(hours=1), justification="paged")
    assert bob.status == Status.PENDING.value
    assert await events(s, "on_call_approved") == []


@pytest.mark.parametrize("outage", ["503", "429", "down"])
async def test_pagerduty_unreachable_falls_back_to_the_approvers_never_to_approval(
        s: Stack, vendors: Vendors, outage: str) -> None:
    if outage == "down":
        await vendors.pd.stop()
    else:
        vendors.pd.fail_next(int(outage))
    req = await s.requests.submit(requester="alice@example.com", eligibility="oncall-db",
                                  duration=timedelta(hours=1), justification="paged")
    await s.worker.run_until_idle()
    assert await status_of(s, req.id) == Status.PENDING.value
    assert not await s.is_member("alice@example.com", "db-admins")
    assert [a["approver"] for a in s.notifier.of_kind("approval_request")] == ["bob@example.com", "carol@example.com"]
    unavailable = await events(s, "on_call_unavailable")
    assert len(unavailable) == 1 and "pd-secret" not in str(unavailable[0].detail)


async def test_on_call_passes_the_leading_layer_and_people_decide_the_next(s: Stack, clock: ManualClock) -> None:
    req = await s.requests.submit(requester="alice@example.com", eligibility="oncall-two",
                                  duration=timedelta(hours=8), justification="paged")
    assert (req.status, req.layer) == (Status.PENDING.value, 2)
    await s.worker.run_until_idle()
    assert {a["approver"] for a in s.notifier.of_kind("approval_request")} == {"dave@example.com",
                                                                               "carol@example.com"}
    await s.approvals.decide(request_id=req.id, layer=2, approver="dave@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    assert (await grant_of(s, req.id)).expires_at == clock.now() + SHIFT


async def test_a_shift_that_ended_before_the_grant_refuses_it(s: Stack, clock: ManualClock) -> None:
    req = await s.requests.submit(requester="alice@example.com", eligibility="oncall-two",
                                  duration=timedelta(hours=8), justification="paged")
    clock.advance(SHIFT + timedelta(minutes=1))  # layer 2 decides after the shift ended
    await s.approvals.decide(request_id=req.id, layer=2, approver="dave@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    assert not await s.is_member("alice@example.com", "db-admins")
    assert await status_of(s, req.id) == Status.REVOKED.value
    assert "on-call shift" in (await events(s, "grant_refused"))[0].detail["reason"]


async def test_a_scheduled_request_is_never_approved_by_on_call(s: Stack, clock: ManualClock) -> None:
    req = await s.requests.submit(requester="alice@example.com", eligibility="oncall-db", duration=timedelta(hours=1),
                                  justification="tomorrow", starts_at=clock.now() + timedelta(days=1))
    assert req.status == Status.PENDING.value and req.layer == 1


# ---- Jira tickets ----------------------------------------------------------------------------------------
async def count_requests(s: Stack) -> int:
    async with s.rt.db.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(AccessRequest))).scalar_one())


@pytest.mark.parametrize(("ticket", "message"), [
    ("OPS-404", "Jira has no ticket OPS-404"),
    ("DEV-1", "needs a ticket in OPS, INC"),
    ("OPS-2", "'Done'; this access needs a ticket that is In Progress or Open"),
])
async def test_a_ticket_must_exist_in_an_allowed_project_and_status(s: Stack, ticket: str, message: str) -> None:
    with pytest.raises(PolicyViolation, match=message) as refused:
        await s.requests.submit(requester="alice@example.com", eligibility="ticketed", duration=timedelta(hours=1),
                                justification="incident", ticket=ticket)
    assert refused.value.field == "ticket"
    assert await count_requests(s) == 0


@pytest.mark.parametrize("outage", ["503", "429", "down"])
async def test_jira_down_requests_nothing(s: Stack, vendors: Vendors, outage: str) -> None:
    if outage == "down":
        await vendors.jira.stop()
    else:
        vendors.jira.fail_next(int(outage))
    with pytest.raises(PolicyViolation, match="Jira could not be reached") as refused:
        await s.requests.submit(requester="alice@example.com", eligibility="ticketed", duration=timedelta(hours=1),
                                justification="incident", ticket="OPS-1")
    assert refused.value.field == "ticket" and await count_requests(s) == 0


async def test_the_approval_message_shows_the_ticket_escaped(s: Stack, vendors: Vendors) -> None:
    await s.requests.submit(requester="alice@example.com", eligibility="ticketed", duration=timedelta(hours=1),
                            justification="incident", ticket="ops-1")
    await s.worker.run_until_idle()
    snap: dict[str, Any] = s.notifier.of_kind("approval_request")[0]["request"]
    assert snap["context"]["ticket"] == {"key": "OPS-1", "summary": "Database <failover> stuck *now*",
                                         "status": "In Progress", "project": "OPS",
                                         "url": f"{vendors.jira.url}/browse/OPS-1"}
    text = str(approval_message(snap, 1))
    assert f"<{vendors.jira.url}/browse/OPS-1|OPS-1> Database &lt;failover&gt; stuck *now* (In Progress)" in text
    assert "<failover>" not in text


async def test_the_ticket_is_checked_again_when_granted(s: Stack, vendors: Vendors) -> None:
    req = await s.requests.submit(requester="alice@example.com", eligibility="ticketed", duration=timedelta(hours=1),
                                  justification="incident", ticket="OPS-1")
    vendors.jira.set_status("OPS-1", "Done")
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    assert not await s.is_member("alice@example.com", "ops-console")
    assert await status_of(s, req.id) == Status.REVOKED.value


async def test_jira_down_at_grant_time_retries_and_never_grants_unchecked(s: Stack, vendors: Vendors,
                                                                          clock: ManualClock) -> None:
    req = await s.requests.submit(requester="alice@example.com", eligibility="ticketed", duration=timedelta(hours=1),
                                  justification="incident", ticket="OPS-1")
    vendors.jira.fail_next(503)
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    assert not await s.is_member("alice@example.com", "ops-console")
    assert await status_of(s, req.id) == Status.APPROVED.value  # waiting for its retry
    clock.advance(timedelta(minutes=1))
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "ops-console")


async def test_a_grant_with_end_with_ticket_never_outlives_the_ticket(s: Stack, vendors: Vendors,
                                                                     clock: ManualClock) -> None:
    req = await s.requests.submit(requester="alice@example.com", eligibility="ticketed", duration=timedelta(hours=4),
                                  justification="incident", ticket="OPS-1")
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "ops-console")
    vendors.jira.fail_next(503)  # a Jira outage during a poll: the grant stays (its expiry still holds)
    clock.advance(timedelta(minutes=1))
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "ops-console")
    vendors.jira.set_status("OPS-1", "Done")
    closed_at = clock.now()
    clock.advance(timedelta(minutes=1))  # the next poll
    await s.worker.run_until_idle()
    assert not await s.is_member("alice@example.com", "ops-console")
    assert await status_of(s, req.id) == Status.REVOKED.value
    ended = await events(s, "ticket_ended")
    assert len(ended) == 1 and "'Done'" in ended[0].detail["reason"]
    g = await grant_of(s, req.id)
    assert g.ended_at is not None and g.ended_at - closed_at <= timedelta(minutes=1)  # one poll interval


async def test_require_ticket_true_still_takes_any_reference(s: Stack) -> None:
    req = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin", duration=timedelta(hours=1),
                                  justification="incident", ticket="CHG-42")
    assert req.ticket == "CHG-42" and req.context is None


async def test_break_glass_needs_no_ticket_and_is_not_ended_by_the_ticket_watch(s: Stack, clock: ManualClock) -> None:
    from bot.services.breakglass import BreakGlassService

    doc_elig = s.rt.eligibility("ticketed")
    assert doc_elig is not None
    policy = s.rt.policy.model_copy(update={"eligibilities": tuple(
        e.model_copy(update={"break_glass": BreakGlass(max_duration=timedelta(hours=1))}) if e.name == "ticketed"
        else e for e in s.rt.policy.eligibilities)})
    s.rt.loaded = dataclasses.replace(s.rt.loaded, policy=policy)
    req = await BreakGlassService(s.rt).invoke(requester="alice@example.com", eligibility="ticketed",
                                               duration=timedelta(hours=1), justification="db on fire")
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "ops-console")
    clock.advance(timedelta(minutes=2))  # two ticket-watch turns
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "ops-console")
    assert await status_of(s, req.id) == Status.ACTIVE.value
