"""Requests on someone's behalf, and requests that start later."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.domain.requests import Decision, PolicyViolation
from bot.services.clock import ManualClock
from storage.tables import AccessRequest
from tests.conftest import DbFactory
from tests.services.policies import extended_policy
from tests.services.stack import make_stack


async def test_delegate_requests_for_an_eligible_beneficiary(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    req = await s.requests.submit(requester="alice@example.com", submitted_by="dave@example.com",
                                  eligibility="db-admin", duration=timedelta(hours=1), justification="on-call swap")
    assert (req.requester, req.submitted_by) == ("alice@example.com", "dave@example.com")
    await s.worker.run_until_idle()
    asks = s.notifier.of_kind("approval_request")
    assert asks[0]["request"]["submitted_by"] == "dave@example.com"
    assert asks[0]["request"]["requester"] == "alice@example.com"
    told = s.notifier.of_kind("requester")
    assert told[0]["event"] == "on_behalf" and "dave@example.com requested db-admin for you" in told[0]["text"]
    # after escalation to security, dave (the submitter) is still not allowed to decide
    clock.advance(timedelta(hours=2))
    await s.worker.run_until_idle()
    assert "dave@example.com" not in [a["approver"] for a in s.notifier.of_kind("approval_request")]
    with pytest.raises(PolicyViolation, match="on someone's behalf"):
        await s.approvals.decide(request_id=req.id, layer=1, approver="dave@example.com", decision=Decision.APPROVE)
    for who in ("bob@example.com", "carol@example.com"):
        await s.approvals.decide(request_id=req.id, layer=1, approver=who, decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "db-admins")  # the beneficiary gets the access
    assert not await s.is_member("dave@example.com", "db-admins")


@pytest.mark.parametrize(("submitter", "beneficiary", "eligibility", "match"), [
    ("bob@example.com", "alice@example.com", "db-admin", "on someone else's behalf"),   # not a delegate
    ("dave@example.com", "carol@example.com", "db-admin", "not eligible"),              # carol is no requestor
    ("dave@example.com", "alice@example.com", "readonly", "on someone else's behalf"),  # delegate elsewhere only
])
async def test_on_behalf_is_refused_outside_the_rules(db_factory: DbFactory, clock: ManualClock, submitter: str,
                                                     beneficiary: str, eligibility: str, match: str) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    with pytest.raises(PolicyViolation, match=match):
        await s.requests.submit(requester=beneficiary, submitted_by=submitter, eligibility=eligibility,
                                duration=timedelta(hours=1), justification="please")


async def test_admin_may_request_on_behalf_without_being_a_delegate(db_factory: DbFactory,
                                                                   clock: ManualClock) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    await s.requests.submit(requester="bob@example.com", submitted_by="root@example.com", eligibility="readonly",
                            duration=timedelta(hours=1), justification="new joiner setup")
    await s.worker.run_until_idle()
    assert await s.is_member("bob@example.com", "readonly")


async def test_scheduled_request_is_granted_at_its_start_for_its_full_duration(db_factory: DbFactory,
                                                                              clock: ManualClock) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    start = clock.now() + timedelta(hours=2)
    req = await s.requests.submit(requester="alice@example.com", eligibility="readonly", starts_at=start,
                                  duration=timedelta(hours=1), justification="maintenance window")
    await s.worker.run_until_idle()
    async with s.rt.db.sessions() as session:
        assert (await session.execute(select(AccessRequest.status).where(AccessRequest.id == req.id))
                ).scalar_one() == "approved"
    assert "access starts" in s.notifier.of_kind("requester")[-1]["text"]
    clock.advance(timedelta(hours=1, minutes=59))
    await s.worker.run_until_idle()
    assert not await s.is_member("alice@example.com", "readonly")
    clock.advance(timedelta(minutes=1))
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "readonly")
    clock.advance(timedelta(minutes=59))
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "readonly")  # the hour counts from the start
    clock.advance(timedelta(minutes=1))
    await s.worker.run_until_idle()
    assert not await s.is_member("alice@example.com", "readonly")


async def test_scheduled_start_must_be_in_the_future_and_not_too_far(db_factory: DbFactory,
                                                                    clock: ManualClock) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    for start, match in ((clock.now(), "in the future"), (clock.now() + timedelta(days=31), "at most 30d")):
        with pytest.raises(PolicyViolation, match=match):
            await s.requests.submit(requester="alice@example.com", eligibility="readonly", starts_at=start,
                                    duration=timedelta(hours=1), justification="later")
