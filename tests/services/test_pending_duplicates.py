"""One pending request per person and eligibility: a second is refused and changes nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.domain.requests import PolicyViolation
from bot.services.clock import ManualClock
from storage.records import Unit, build
from storage.tables import AccessRequest, Event
from tests.conftest import DbFactory
from tests.services.policies import extended_policy
from tests.services.stack import make_stack


async def _counts(s: object) -> tuple[int, int]:
    async with s.rt.db.sessions() as session:  # type: ignore[attr-defined]
        return ((await session.execute(select(func.count()).select_from(AccessRequest))).scalar_one(),
                (await session.execute(select(func.count()).select_from(Event))).scalar_one())


async def test_a_second_pending_request_is_refused_until_the_first_is_decided(db_factory: DbFactory,
                                                                             clock: ManualClock) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    first = await s.requests.submit(requester="alice@example.com", eligibility="db-admin",
                                    duration=timedelta(hours=1), justification="deploy")
    before = await _counts(s)
    with pytest.raises(PolicyViolation, match=f"already have a pending request for db-admin \\({first.id}\\)"):
        await s.requests.submit(requester="alice@example.com", eligibility="db-admin",
                                duration=timedelta(hours=1), justification="again")
    assert await _counts(s) == before
    # another eligibility, or the same once the first is no longer pending, may be asked for
    await s.requests.submit(requester="alice@example.com", eligibility="readonly", duration=timedelta(hours=1),
                            justification="look")
    await s.requests.cancel(request_id=first.id, by="alice@example.com")
    await s.requests.submit(requester="alice@example.com", eligibility="db-admin", duration=timedelta(hours=1),
                            justification="now")


async def test_a_pending_request_of_another_kind_does_not_count(db_factory: DbFactory, clock: ManualClock) -> None:
    """A pending extension of earlier access is not a pending request for the access itself."""
    s = await make_stack(db_factory(), extended_policy(), clock)
    now = clock.now()
    async with s.rt.db.core_transaction() as tx:
        unit = Unit(tx)
        unit.add(build(AccessRequest, id="R-EXT", eligibility="db-admin", kind="extension",
                       requester="alice@example.com", duration_s=600, justification="more", status="pending",
                       layers=1, created_at=now, updated_at=now))
        await unit.flush()
    req = await s.requests.submit(requester="alice@example.com", eligibility="db-admin",
                                  duration=timedelta(hours=1), justification="deploy")
    assert req.id != "R-EXT"


async def test_concurrent_submissions_of_one_eligibility_make_one_pending_request(db_factory: DbFactory,
                                                                                clock: ManualClock) -> None:
    """Ten submissions at once, each on its own connection (two engines, as two replicas): the database
    lets one through; the other nine get the same refusal and write nothing (no request, no event, no ask)."""
    first = await make_stack(db_factory(), extended_policy(), clock)
    stacks = [first, await make_stack(db_factory(), extended_policy(), clock, migrate=False)]

    async def submit(i: int) -> str:
        try:
            req = await stacks[i % 2].requests.submit(requester="alice@example.com", eligibility="db-admin",
                                                      duration=timedelta(hours=1), justification=f"try {i}")
        except PolicyViolation as exc:
            return str(exc)
        return "submitted " + req.id

    outcomes = await asyncio.gather(*(submit(i) for i in range(10)))
    made = [o for o in outcomes if o.startswith("submitted ")]
    assert len(made) == 1, outcomes
    request_id = made[0].removeprefix("submitted ")
    refused = [o for o in outcomes if not o.startswith("submitted ")]
    assert refused == [f"You already have a pending request for db-admin ({request_id})."] * 9
    async with stacks[0].rt.db.sessions() as session:
        rows = (await session.execute(select(AccessRequest.id))).scalars().all()
        requested = (await session.execute(select(func.count()).select_from(Event)
                                           .where(Event.kind == "requested"))).scalar_one()
    assert list(rows) == [request_id] and requested == 1
