"""One of each item at a time across bundles: an item an open request holds — alone, in a bundle from the
policy or in an ad-hoc one — is not asked for again by the same person, whichever comes first, also when
two submissions arrive at once (bot/services/requesting/bundles.py ``check_held``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.domain.requests import Decision, PolicyViolation
from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from storage.tables import AccessRequest
from tests.conftest import DbFactory
from tests.services.stack import Stack, make_stack
from tests.services.test_bundles import POLICY, _approved_bundle, _settle, _stack


async def _stored(s: Stack) -> list[tuple[str, str]]:
    async with s.rt.db.sessions() as session:
        rows = (await session.execute(select(AccessRequest.id, AccessRequest.eligibility)
                                      .order_by(AccessRequest.created_at))).all()
    return [(r.id, r.eligibility) for r in rows]


async def _submit(s: Stack, eligibility: str) -> AccessRequest:
    return await s.requests.submit(requester="alice@example.com", eligibility=eligibility,
                                   duration=timedelta(hours=1), justification="incident 42")


@pytest.mark.parametrize(("first", "second", "refusal"), [
    ("debug", "logs", "debug includes logs, which you already have or have asked for \\({held}\\)"),
    ("db", "debug", "You already have or have asked for db within the bundle debug \\({held}\\)"),
    ("db+logs", "debug", "db\\+logs includes db, logs, which you already have or have asked for \\(debug: {held}\\)"),
], ids=["bundle-after-single", "single-after-bundle", "adhoc-after-bundle"])
async def test_the_later_of_two_overlapping_submissions_is_refused_though_both_passed_the_checks_before_it(
        db_factory: DbFactory, clock: ManualClock, first: str, second: str, refusal: str) -> None:
    """``first`` has passed every check made before its transaction (the directory, the members) when
    ``second``, on another replica, is stored: ``first``'s transaction sees it and refuses, storing nothing."""
    s = await _stack(db_factory, clock)
    other = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock, migrate=False)
    store: Callable[..., Awaitable[AccessRequest]] = s.requests._store  # type: ignore[method-assign]
    held: list[AccessRequest] = []

    async def store_after_the_other(**kwargs: Any) -> AccessRequest:
        held.append(await _submit(other, second))
        return await store(**kwargs)

    s.requests._store = store_after_the_other  # type: ignore[method-assign]
    with pytest.raises(PolicyViolation) as refused:
        await _submit(s, first)
    assert held and refused.match(refusal.format(held=held[0].id))
    assert await _stored(s) == [(held[0].id, second)]


async def test_overlapping_submissions_at_once_store_one(db_factory: DbFactory, clock: ManualClock) -> None:
    """Nine submissions at once, each on its own connection (two engines, as two replicas), each holding db:
    a bundle, db alone, and an ad-hoc pick of both. One is stored; the others are refused."""
    stacks = [await _stack(db_factory, clock),
              await make_stack(db_factory(), parse_policy(POLICY, env={}), clock, migrate=False)]

    async def submit(i: int) -> str:
        try:
            return (await _submit(stacks[i % 2], ("debug", "db", "db+logs")[i % 3])).id
        except PolicyViolation:
            return "refused"

    outcomes = await asyncio.gather(*(submit(i) for i in range(9)))
    made = [o for o in outcomes if o != "refused"]
    assert len(made) == 1, outcomes
    assert [r for r, _ in await _stored(stacks[0])] == made


async def test_a_member_ended_before_its_bundle_request_may_be_asked_for_again(
        db_factory: DbFactory, clock: ManualClock) -> None:
    """An approved bundle request carries its first member only: once another member's own request has
    expired (the bundle request was extended), that item may be asked for again; the first may not."""
    s = await _stack(db_factory, clock)
    bundle = await _approved_bundle(s)
    await _settle(s)
    await s.grants.extend(request_id=bundle, actor="alice@example.com", by=timedelta(minutes=30))
    clock.advance(timedelta(hours=1, minutes=1))
    await _settle(s)
    with pytest.raises(PolicyViolation, match=f"db within the bundle debug \\({bundle}\\)"):
        await _submit(s, "db")
    logs = await _submit(s, "logs")
    assert logs.status == "pending"


async def test_an_approved_bundle_that_left_the_policy_still_holds_its_first_member(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    bundle = await s.requests.submit(requester="alice@example.com", eligibility="debug",
                                     duration=timedelta(hours=1), justification="incident 42")
    await s.approvals.decide(request_id=bundle.id, layer=1, approver="carol@example.com", decision=Decision.APPROVE)
    s.rt.loaded = parse_policy(POLICY.replace("  - {name: debug, description: Debugging, bundle: [db, logs]}\n", ""),
                               env={})
    with pytest.raises(PolicyViolation, match=f"db within the bundle debug \\({bundle.id}\\)"):
        await _submit(s, "db")
