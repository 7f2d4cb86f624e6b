"""Ad-hoc bundles: several eligibilities picked in one /jit request are one bundle request, under
exactly the rules of a ``bundle:`` eligibility (bot/domain/bundles.py ``adhoc``)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from bot.domain.requests import Decision, PolicyViolation
from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from connectors.base import GrantResult, IdpUser, PermissionDenied, Target
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import DbFactory
from tests.services.stack import Stack, make_stack
from tests.services.test_bundles import POLICY

ADHOC = "db+logs"


async def _stack(db_factory: DbFactory, clock: ManualClock) -> Stack:
    return await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)


async def _settle(s: Stack) -> None:
    for _ in range(3):
        await s.worker.run_until_idle()
        await s.worker.grants.settle()
        s.worker.grants.stopping = False


async def _all(s: Stack) -> tuple[list[AccessRequest], list[Grant]]:
    async with s.rt.db.sessions() as session:
        reqs = list((await session.execute(select(AccessRequest).order_by(AccessRequest.created_at))).scalars())
        grants = list((await session.execute(select(Grant))).scalars())
    return reqs, grants


async def test_an_adhoc_pick_is_one_request_with_the_union_of_layers_granted_per_item(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    req = await s.requests.submit(requester="alice@example.com", eligibility=ADHOC, duration=timedelta(hours=1),
                                  justification="incident 42")
    assert req.layers == 1 and (req.context or {}).get("bundle") == ["db", "logs"]
    # an approver of either item approves the whole (union: leads for db, sec for logs)
    await s.approvals.decide(request_id=req.id, layer=1, approver="carol@example.com", decision=Decision.APPROVE)
    await _settle(s)
    reqs, grants = await _all(s)
    assert sorted(r.eligibility for r in reqs) == ["db+logs", "logs"]
    assert {r.bundle_id for r in reqs} == {req.id} and {g.status for g in grants} == {"active"}
    assert await s.is_member("alice@example.com", "db") and await s.is_member("alice@example.com", "logs")
    clock.advance(timedelta(hours=1, minutes=1))  # each item revoked at its own expiry
    await _settle(s)
    reqs, grants = await _all(s)
    assert {r.status for r in reqs} == {"expired"} and {g.end_reason for g in grants} == {"expired"}


async def test_an_adhoc_pick_is_capped_at_the_shortest_item_and_refuses_self_approval(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    with pytest.raises(PolicyViolation, match="at most 2h"):
        await s.requests.submit(requester="alice@example.com", eligibility=ADHOC, duration=timedelta(hours=3),
                                justification="incident 42")
    req = await s.requests.submit(requester="alice@example.com", eligibility=ADHOC, duration=timedelta(hours=2),
                                  justification="incident 42")
    with pytest.raises(PolicyViolation, match="your own request"):  # alice is in leads, db's approvers
        await s.approvals.decide(request_id=req.id, layer=1, approver="alice@example.com", decision=Decision.APPROVE)


@pytest.mark.parametrize("name", ["db+logs+db", "logs+db+x", "db+debug", "db+", "+db", "logs+db+logs"])
async def test_picks_that_cannot_form_a_bundle_are_refused_and_nothing_is_stored(
        db_factory: DbFactory, clock: ManualClock, name: str) -> None:
    s = await _stack(db_factory, clock)
    with pytest.raises(PolicyViolation):
        await s.requests.submit(requester="alice@example.com", eligibility=name, duration=timedelta(hours=1),
                                justification="incident 42")
    reqs, _ = await _all(s)
    assert reqs == []


async def test_an_item_the_requester_is_not_eligible_for_refuses_the_pick(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)  # olga is in eng (db), not ops (logs)
    with pytest.raises(PolicyViolation, match="includes logs, which olga@example.com is not eligible"):
        await s.requests.submit(requester="olga@example.com", eligibility=ADHOC, duration=timedelta(hours=1),
                                justification="x" * 10)
    assert (await _all(s))[0] == []


async def test_an_item_already_held_alone_or_in_a_bundle_refuses_the_pick(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    held = await s.requests.submit(requester="alice@example.com", eligibility="debug", duration=timedelta(hours=1),
                                   justification="incident 42")
    with pytest.raises(PolicyViolation, match=f"includes db, logs, which you already have.*{held.id}"):
        await s.requests.submit(requester="alice@example.com", eligibility=ADHOC, duration=timedelta(hours=1),
                                justification="incident 42")


async def test_one_item_failing_for_good_revokes_the_others_and_tells_the_requester(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    conn = s.rt.connectors["demo"]
    real = conn.grant

    async def grant(user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        if target.id == "logs":
            raise PermissionDenied("403 from the fake", user_message="The provider refused it.")
        return await real(user, target, grant_id=grant_id, expires_at=expires_at)

    conn.grant = grant  # type: ignore[method-assign]
    req = await s.requests.submit(requester="alice@example.com", eligibility=ADHOC, duration=timedelta(hours=1),
                                  justification="incident 42")
    await s.approvals.decide(request_id=req.id, layer=1, approver="carol@example.com", decision=Decision.APPROVE)
    await _settle(s)
    reqs, grants = await _all(s)
    assert sorted(r.status for r in reqs) == ["failed", "revoked"] and {g.status for g in grants} == {"ended"}
    assert not await s.is_member("alice@example.com", "db")
    async with s.rt.db.sessions() as session:
        assert len((await session.execute(select(Event).where(Event.kind == "bundle_ended"))).scalars().all()) == 1
    assert len([p for p in s.notifier.of_kind("requester") if "all or nothing" in p["text"]]) == 1
