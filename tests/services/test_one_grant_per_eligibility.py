"""One pending, approved or active request per (person, eligibility) — more time is an extension — and
a per-person limit on requests an hour."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import yaml
from sqlalchemy import func, select, update

from bot.domain.requests import PolicyViolation
from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from storage.tables import AccessRequest, Grant
from tests.conftest import POLICY, DbFactory
from tests.services.stack import make_stack


def _policy(per_hour: int | None = None):  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(POLICY)
    if per_hour is not None:
        doc["settings"] = {"max_requests_per_hour": per_hour}
    return parse_policy(yaml.safe_dump(doc), source="test", env={})


async def _count(s: object, model: type) -> int:
    async with s.rt.db.sessions() as session:  # type: ignore[attr-defined]
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_active_access_is_extended_not_granted_twice(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(), clock)
    first = await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                    duration=timedelta(hours=1), justification="logs")
    with pytest.raises(PolicyViolation, match=f"already have readonly \\({first.id}\\). Extend it"):
        await s.requests.submit(requester="alice@example.com", eligibility="readonly",  # approved, not yet granted
                                duration=timedelta(hours=1), justification="again")
    await s.worker.run_until_idle()
    with pytest.raises(PolicyViolation, match="Extend it"):  # active
        await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                duration=timedelta(hours=1), justification="again")
    assert (await _count(s, AccessRequest), await _count(s, Grant)) == (1, 1)
    await s.grants.end_early(request_id=first.id, actor="alice@example.com", reason="released")
    await s.worker.run_until_idle()
    await s.requests.submit(requester="alice@example.com", eligibility="readonly", duration=timedelta(hours=1),
                            justification="once it ended")


async def test_releasing_access_that_is_already_ending_says_so_and_changes_nothing(db_factory: DbFactory,
                                                                                    clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(), clock)
    req = await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                  duration=timedelta(hours=1), justification="logs")
    await s.worker.run_until_idle()
    async with s.rt.db.transaction() as session:  # the expiry has claimed it, its IdP call not yet made
        await session.execute(update(Grant).where(Grant.request_id == req.id)  # type: ignore[arg-type]
                              .values(status="revoking", end_reason="expired"))
    with pytest.raises(PolicyViolation, match="already ending"):
        await s.grants.end_early(request_id=req.id, actor="alice@example.com", reason="released")
    async with s.rt.db.sessions() as session:
        grant = (await session.execute(select(Grant).where(Grant.request_id == req.id))).scalar_one()  # type: ignore[arg-type]
    assert (grant.status, grant.end_reason) == ("revoking", "expired")


async def _fail(s: object, request_id: str) -> None:
    """As if the grant had failed at the IdP for good: the request FAILED, its grant failed."""
    async with s.rt.db.transaction() as session:  # type: ignore[attr-defined]
        await session.execute(update(AccessRequest).where(AccessRequest.id == request_id)  # type: ignore[arg-type]
                              .values(status="failed"))
        await session.execute(update(Grant).where(Grant.request_id == request_id)  # type: ignore[arg-type]
                              .values(status="failed"))


async def test_a_retried_failed_grant_is_one_grant_of_its_eligibility(db_factory: DbFactory,
                                                                      clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(), clock)
    first = await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                    duration=timedelta(hours=1), justification="logs")
    await s.worker.run_until_idle()
    await _fail(s, first.id)
    await s.grants.retry_failed(request_id=first.id, actor="admin@example.com")
    await s.worker.run_until_idle()  # active again, beside its old failed grant
    with pytest.raises(PolicyViolation, match=f"already have readonly \\({first.id}\\)"):
        await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                duration=timedelta(hours=1), justification="again")

    await _fail(s, first.id)  # it failed again; she asks anew, and then an admin retries the old one
    second = await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                     duration=timedelta(hours=1), justification="once more")
    with pytest.raises(PolicyViolation, match=f"again since it failed \\({second.id}\\)"):
        await s.grants.retry_failed(request_id=first.id, actor="admin@example.com")
    async with s.rt.db.sessions() as session:
        status = (await session.execute(select(AccessRequest.status)  # type: ignore[call-overload]
                                        .where(AccessRequest.id == first.id))).scalar_one()
    assert status == "failed"


async def test_simultaneous_submissions_of_one_person_make_one_request(db_factory: DbFactory,
                                                                      clock: ManualClock) -> None:
    stacks = [await make_stack(db_factory(), _policy(), clock, migrate=i == 0) for i in range(2)]  # two replicas
    results = await asyncio.gather(*(s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                                       duration=timedelta(hours=1), justification=f"reason number {i}")
                                     for i, s in enumerate(stacks)), return_exceptions=True)
    assert sum(isinstance(r, AccessRequest) for r in results) == 1, results
    assert sum(isinstance(r, PolicyViolation) for r in results) == 1
    assert await _count(stacks[0], AccessRequest) == 1


async def test_a_person_may_submit_only_so_many_requests_an_hour(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(per_hour=3), clock)
    for _ in range(3):
        req = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                      duration=timedelta(hours=1), justification="deploy", ticket="OPS-1")
        await s.requests.cancel(request_id=req.id, by="alice@example.com")
    with pytest.raises(PolicyViolation, match="3 requests in the last hour"):
        await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                duration=timedelta(hours=1), justification="deploy", ticket="OPS-1")
    await s.requests.submit(requester="bob@example.com", eligibility="readonly", duration=timedelta(hours=1),
                            justification="someone else")  # per person
    clock.advance(timedelta(hours=1))
    await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                            duration=timedelta(hours=1), justification="deploy", ticket="OPS-1")
