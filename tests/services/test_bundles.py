"""Bundles end to end through the services and the worker: one approval, a grant per member, all or nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from bot.domain.requests import Decision, PolicyViolation
from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from connectors.base import GrantResult, IdpUser, PermissionDenied, Target, Transient
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import DbFactory
from tests.services.stack import Stack, make_stack

POLICY = """
audit_channel: "#jit-audit"
connectors:
  demo:
    type: memory
    users: [{email: alice@example.com}, {email: bob@example.com}, {email: carol@example.com},
            {email: olga@example.com}]
    groups: {eng: [alice@example.com, bob@example.com, olga@example.com], ops: [alice@example.com],
             leads: [bob@example.com, alice@example.com], sec: [carol@example.com], db: [], logs: []}
eligibilities:
  - {name: db, connector: demo, target: {group: db}, requestors: {groups: [eng]}, max_duration: 4h,
     approvals: [{approvers: {groups: [leads]}}]}
  - {name: logs, connector: demo, target: {group: logs}, requestors: {groups: [ops]}, max_duration: 2h,
     approvals: [{approvers: {groups: [sec]}}]}
  - {name: debug, description: Debugging, bundle: [db, logs]}
"""


async def _stack(db_factory: DbFactory, clock: ManualClock) -> Stack:
    return await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)


async def _settle(s: Stack) -> None:
    for _ in range(3):
        await s.worker.run_until_idle()
        await s.worker.grants.settle()
        s.worker.grants.stopping = False


async def _approved_bundle(s: Stack) -> str:
    req = await s.requests.submit(requester="alice@example.com", eligibility="debug", duration=timedelta(hours=1),
                                  justification="incident 42")
    assert req.layers == 1
    await s.approvals.decide(request_id=req.id, layer=1, approver="carol@example.com", decision=Decision.APPROVE)
    return req.id


async def _rows(s: Stack, bundle_id: str) -> tuple[list[AccessRequest], list[Grant]]:
    async with s.rt.db.sessions() as session:
        reqs = list((await session.execute(select(AccessRequest).where(AccessRequest.bundle_id == bundle_id)
                                           .order_by(AccessRequest.created_at))).scalars())
        ids = [r.id for r in reqs]
        grants = list((await session.execute(select(Grant).where(Grant.request_id.in_(ids)))).scalars())  # type: ignore[attr-defined]
    return reqs, grants


async def test_a_bundle_is_approved_once_and_granted_as_one_grant_per_member(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    bundle = await _approved_bundle(s)
    await _settle(s)
    reqs, grants = await _rows(s, bundle)
    assert sorted(r.eligibility for r in reqs) == ["debug", "logs"]  # the bundle request carries db
    assert {r.status for r in reqs} == {"active"} and {g.status for g in grants} == {"active"}
    assert await s.is_member("alice@example.com", "db") and await s.is_member("alice@example.com", "logs")
    assert all(g.expires_at is not None and g.expires_at <= clock.now() + timedelta(hours=1) for g in grants)
    # each member expires on its own, through the ordinary revocation
    clock.advance(timedelta(hours=1, minutes=1))
    await _settle(s)
    reqs, grants = await _rows(s, bundle)
    assert {r.status for r in reqs} == {"expired"} and {g.end_reason for g in grants} == {"expired"}
    assert not await s.is_member("alice@example.com", "db") and not await s.is_member("alice@example.com", "logs")


async def test_releasing_one_member_releases_the_bundle(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    bundle = await _approved_bundle(s)
    await _settle(s)
    reqs, _ = await _rows(s, bundle)
    child = next(r for r in reqs if r.id != bundle)
    await s.grants.end_early(request_id=child.id, actor="alice@example.com", reason="released")
    await _settle(s)
    reqs, grants = await _rows(s, bundle)
    assert {r.status for r in reqs} == {"revoked"} and {g.end_reason for g in grants} == {"released"}
    assert not await s.is_member("alice@example.com", "db") and not await s.is_member("alice@example.com", "logs")


async def test_a_requester_not_eligible_for_every_member_is_refused(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    with pytest.raises(PolicyViolation, match="includes logs, which olga@example.com is not eligible"):
        await s.requests.submit(requester="olga@example.com", eligibility="debug", duration=timedelta(hours=1),
                                justification="incident 42")
    async with s.rt.db.sessions() as session:
        assert not (await session.execute(select(AccessRequest))).scalars().all()


async def test_the_bundle_keeps_the_maximum_of_its_shortest_member(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    with pytest.raises(PolicyViolation, match="at most 2h"):
        await s.requests.submit(requester="alice@example.com", eligibility="debug", duration=timedelta(hours=3),
                                justification="incident 42")


async def test_the_requester_cannot_approve_their_own_bundle_though_in_a_members_approvers(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    req = await s.requests.submit(requester="alice@example.com", eligibility="debug", duration=timedelta(hours=1),
                                  justification="incident 42")
    with pytest.raises(PolicyViolation, match="your own request"):
        await s.approvals.decide(request_id=req.id, layer=1, approver="alice@example.com", decision=Decision.APPROVE)


@pytest.mark.parametrize("failing", ["logs", "db"])
async def test_one_member_failing_for_good_ends_the_others(db_factory: DbFactory, clock: ManualClock,
                                                           failing: str) -> None:
    s = await _stack(db_factory, clock)
    conn = s.rt.connectors["demo"]
    real = conn.grant

    async def grant(user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        if target.id == failing:
            raise PermissionDenied("403 from the fake", user_message="The provider refused it.")
        return await real(user, target, grant_id=grant_id, expires_at=expires_at)

    conn.grant = grant  # type: ignore[method-assign]
    bundle = await _approved_bundle(s)
    await _settle(s)
    reqs, grants = await _rows(s, bundle)
    assert sorted(r.status for r in reqs) == ["failed", "revoked"]
    assert {g.status for g in grants} == {"ended"}
    assert not await s.is_member("alice@example.com", "db") and not await s.is_member("alice@example.com", "logs")
    async with s.rt.db.sessions() as session:
        ended = (await session.execute(select(Event).where(Event.kind == "bundle_ended"))).scalars().all()
    assert len(ended) == 1
    told = [p["text"] for p in s.notifier.of_kind("requester") if "all or nothing" in p["text"]]
    assert len(told) == 1


async def test_a_member_still_retrying_is_stopped_when_another_fails(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    conn = s.rt.connectors["demo"]
    real = conn.grant

    async def grant(user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        if target.id == "logs":
            raise PermissionDenied("403", user_message="The provider refused it.")
        raise Transient("503 from the fake")

    conn.grant = grant  # type: ignore[method-assign]
    bundle = await _approved_bundle(s)
    await _settle(s)
    conn.grant = real  # type: ignore[method-assign]  # the IdP is back: nothing may be granted now
    clock.advance(timedelta(minutes=5))
    await _settle(s)
    reqs, grants = await _rows(s, bundle)
    assert sorted(r.status for r in reqs) == ["failed", "revoked"]
    assert not await s.is_member("alice@example.com", "db") and not await s.is_member("alice@example.com", "logs")


async def test_a_restart_between_the_two_grants_grants_both(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    s = await make_stack(db, parse_policy(POLICY, env={}), clock)
    conn = s.rt.connectors["demo"]
    real = conn.grant

    async def grant(user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        if target.id == "logs":
            raise Transient("503 from the fake")
        return await real(user, target, grant_id=grant_id, expires_at=expires_at)

    conn.grant = grant  # type: ignore[method-assign]
    bundle = await _approved_bundle(s)
    await _settle(s)
    assert await s.is_member("alice@example.com", "db") and not await s.is_member("alice@example.com", "logs")
    # a new process on the same database (its own connectors: the memory IdP is rebuilt with the grant)
    s2 = await make_stack(db, parse_policy(POLICY, env={}), clock, migrate=False)
    s2.rt.connectors["demo"] = conn
    conn.grant = real  # type: ignore[method-assign]
    clock.advance(timedelta(minutes=2))
    await _settle(s2)
    reqs, grants = await _rows(s2, bundle)
    assert {r.status for r in reqs} == {"active"} and {g.status for g in grants} == {"active"}


async def test_a_bundle_is_refused_while_the_requester_holds_one_of_its_members(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    logs = await s.requests.submit(requester="alice@example.com", eligibility="logs", duration=timedelta(hours=1),
                                   justification="incident 41")
    with pytest.raises(PolicyViolation, match=f"includes logs, which you already have or have asked for .{logs.id}"):
        await s.requests.submit(requester="alice@example.com", eligibility="debug", duration=timedelta(hours=1),
                                justification="incident 42")


async def test_a_bundle_whose_members_changed_while_pending_is_not_approved(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    req = await s.requests.submit(requester="alice@example.com", eligibility="debug", duration=timedelta(hours=1),
                                  justification="incident 42")
    changed = POLICY.replace("bundle: [db, logs]", "bundle: [db, logs, more]") + """
  - {name: more, connector: demo, target: {group: logs}, requestors: {groups: [eng]}, max_duration: 2h}
"""
    s.rt.loaded = parse_policy(changed, env={})
    with pytest.raises(PolicyViolation, match="not the db, logs that .* asked for"):
        await s.approvals.decide(request_id=req.id, layer=1, approver="carol@example.com", decision=Decision.APPROVE)
    await _settle(s)
    reqs, grants = await _rows(s, req.id)
    assert not grants and not reqs  # nothing approved, nothing linked
    assert not await s.is_member("alice@example.com", "db")


async def test_a_bundle_without_approval_layers_is_granted_at_once(db_factory: DbFactory, clock: ManualClock) -> None:
    policy = POLICY.replace("approvals: [{approvers: {groups: [leads]}}]", "approvals: []").replace(
        "approvals: [{approvers: {groups: [sec]}}]", "approvals: []")
    s = await make_stack(db_factory(), parse_policy(policy, env={}), clock)
    req = await s.requests.submit(requester="alice@example.com", eligibility="debug", duration=timedelta(hours=1),
                                  justification="incident 42")
    await _settle(s)
    reqs, grants = await _rows(s, req.id)
    assert len(reqs) == 2 and {g.status for g in grants} == {"active"}
    assert await s.is_member("alice@example.com", "db") and await s.is_member("alice@example.com", "logs")
