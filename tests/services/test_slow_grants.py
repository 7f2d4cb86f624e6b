"""A grant whose IdP call hangs holds up neither the other grants nor the next pass's revocations."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from bot.policy_file import parse_policy
from bot.services.access.grants import GrantService
from bot.services.clock import ManualClock
from connectors.base import IdpUser, Target
from tests.conftest import DbFactory
from tests.services.stack import make_stack

USERS = ["a@example.com", "b@example.com", "c@example.com"]
POLICY = f"""
audit_channel: "#jit-audit"
connectors:
  demo:
    type: memory
    users: [{", ".join(f"{{email: {u}}}" for u in USERS)}]
    groups: {{everyone: [{", ".join(USERS)}], target: []}}
eligibilities:
  - {{name: access, connector: demo, target: {{group: target}}, requestors: {{groups: [everyone]}},
      max_duration: 4h}}
"""


async def test_a_hanging_grant_does_not_hold_up_revocations_or_other_grants(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GrantService, "budget_s", 0.2)
    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    await s.requests.submit(requester=USERS[0], eligibility="access", duration=timedelta(hours=1),
                            justification="work")
    await s.worker.run_until_idle()
    await s.worker.grants.settle()  # a's grant may outlast the 0.2 s budget on a slow machine
    assert await s.is_member(USERS[0], "target")

    # b's grant hangs at the IdP (it stopped answering for that call); c's goes through
    demo = s.rt.connectors["demo"]
    real_grant, gate, calls = demo.grant, asyncio.Event(), []

    async def grant(user: IdpUser, target: Target, **kw: Any) -> Any:
        calls.append(user.email)
        if user.email == USERS[1]:
            await gate.wait()
        return await real_grant(user, target, **kw)

    monkeypatch.setattr(demo, "grant", grant)
    for user in USERS[1:]:
        await s.requests.submit(requester=user, eligibility="access", duration=timedelta(hours=1),
                                justification="work")
    await asyncio.wait_for(s.worker.schedule_tick(), timeout=30)  # the pass ends, b still hanging
    async with asyncio.timeout(10):  # c's grant goes through while b's hangs (within the budget or after it)
        while not await s.is_member(USERS[2], "target"):
            await asyncio.sleep(0.01)
    assert not await s.is_member(USERS[1], "target")

    clock.advance(timedelta(hours=1, minutes=1))  # a's access has expired: the next pass revokes it
    await asyncio.wait_for(s.worker.schedule_tick(), timeout=30)
    assert not await s.is_member(USERS[0], "target")
    assert calls.count(USERS[1]) == 1  # the pass did not start b's grant a second time

    gate.set()
    await s.worker.grants.settle()
    assert await s.is_member(USERS[1], "target")
    await s.worker.stop()


async def test_a_grant_waits_while_a_revoke_of_the_same_membership_is_in_flight(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The grant's first check (a read on SQLite, a locked write transaction on PostgreSQL): while another
    grant of the same (connector, target, user) is being revoked, the grant does not call the IdP; it goes
    again two seconds later, unclaimed, and goes through once the revoke is done."""
    from sqlalchemy import select, update

    from storage.tables import Grant

    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    first = await s.requests.submit(requester=USERS[0], eligibility="access", duration=timedelta(hours=1),
                                    justification="work")
    await s.worker.run_until_idle()
    await s.worker.grants.settle()
    await s.grants.end_early(request_id=first.id, actor=USERS[0], reason="released")  # revoking, not yet done
    second = await s.requests.submit(requester=USERS[0], eligibility="access", duration=timedelta(hours=1),
                                     justification="more work")
    async with s.rt.db.sessions() as session:
        g2 = (await session.execute(select(Grant).where(Grant.request_id == second.id))).scalar_one()
    async with s.rt.db.transaction() as session:  # as a pass's claim leaves it
        await session.execute(update(Grant).where(Grant.id == g2.id).values(
            claimed_until=clock.now() + timedelta(minutes=1), claimed_by="test-worker"))
    calls: list[str] = []
    demo = s.rt.connectors["demo"]
    real_grant = demo.grant

    async def grant(user: IdpUser, target: Target, **kw: Any) -> Any:
        calls.append(user.email)
        return await real_grant(user, target, **kw)

    monkeypatch.setattr(demo, "grant", grant)
    await s.grants.carry_out_grant(g2.id)
    async with s.rt.db.sessions() as session:
        row = (await session.execute(select(Grant).where(Grant.id == g2.id))).scalar_one()
    assert calls == []
    again = clock.now() + timedelta(seconds=2)
    assert (row.status, row.claimed_until, row.next_attempt_at) == ("granting", None, again)

    await s.worker.run_until_idle()  # the revoke finishes: the membership goes (the new grant, put back
    await s.worker.grants.settle()  # before its first IdP call, has not started: it holds nothing)
    assert not await s.is_member(USERS[0], "target")
    async with s.rt.db.sessions() as session:
        statuses = dict((await session.execute(select(Grant.request_id, Grant.status))).all())
    assert statuses == {first.id: "ended", second.id: "granting"} and calls == []  # not due yet
    clock.advance(timedelta(seconds=2))
    await s.worker.run_until_idle()
    await s.worker.grants.settle()
    assert calls == [USERS[0]] and await s.is_member(USERS[0], "target")
