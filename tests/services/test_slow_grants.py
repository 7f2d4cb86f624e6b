"""A grant whose IdP call hangs holds up neither the other grants nor the next pass's revocations."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from bot.services.grants import GrantService
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
