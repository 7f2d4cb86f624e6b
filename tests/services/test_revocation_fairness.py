"""A slow (or throttled) connector cannot hold up the revocations due at another one; a claim takes no
more rows than its limit (on PostgreSQL it used to take every due row: see claims.locked_ids)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.policy_file import parse_policy
from bot.services.access.revocation import Revoker
from bot.services.clock import ManualClock
from connectors.base import IdpUser, Target, parse_target_ref
from storage.tables import Grant
from tests.conftest import DbFactory
from tests.services.stack import make_stack

TARGET = parse_target_ref("group:target")
USERS = [f"u{i}@example.com" for i in range(7)]
POLICY = f"""
audit_channel: "#jit-audit"
connectors:
  slow:
    type: memory
    users: [{", ".join(f"{{email: {u}}}" for u in USERS)}]
    groups: {{everyone: [{", ".join(USERS)}], target: []}}
  fast:
    type: memory
    users: [{", ".join(f"{{email: {u}}}" for u in USERS)}]
    groups: {{target: []}}
eligibilities:
  - {{name: slow-access, connector: slow, target: {{group: target}}, requestors: {{groups: [everyone]}},
      max_duration: 4h}}
  - {{name: fast-access, connector: fast, target: {{group: target}}, requestors: {{users: [u6@example.com]}},
      max_duration: 4h}}
"""


async def test_revocations_at_a_fast_connector_go_ahead_while_a_slow_one_is_full(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Revoker, "chunk", 2)
    monkeypatch.setattr(Revoker, "max_outstanding", 4)
    monkeypatch.setattr(Revoker, "per_connector", 2)
    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    for user in USERS[:6]:
        await s.requests.submit(requester=user, eligibility="slow-access", duration=timedelta(hours=1),
                                justification="work")
    await s.requests.submit(requester=USERS[6], eligibility="fast-access", duration=timedelta(hours=1),
                            justification="work")
    await s.worker.run_until_idle()
    fast = s.rt.connectors["fast"]
    assert await fast.is_member(IdpUser(USERS[6], USERS[6]), TARGET)

    # The slow connector's revokes hang (an IdP that stopped answering); its six are due before the fast one.
    gate, started = asyncio.Event(), asyncio.Event()
    slow = s.rt.connectors["slow"]
    real_revoke = slow.revoke

    async def hanging_revoke(user: IdpUser, target: Target, *, grant_id: str) -> None:
        started.set()
        await gate.wait()
        await real_revoke(user, target, grant_id=grant_id)

    monkeypatch.setattr(slow, "revoke", hanging_revoke)
    now = clock.now()
    async with s.rt.db.transaction() as session:
        for i, connector in enumerate(["slow"] * 6 + ["fast"]):
            await session.execute(update(Grant).where(Grant.connector == connector, Grant.user_email == USERS[i])
                                  .values(status="revoking", end_reason="expired",
                                          next_attempt_at=now - timedelta(minutes=10 - i)))
    run = asyncio.create_task(s.grants.run_expiries())
    try:
        await asyncio.wait_for(started.wait(), timeout=30)
        for _ in range(3000):  # the fast revoke happens while the slow ones still hang
            if not await fast.is_member(IdpUser(USERS[6], USERS[6]), TARGET):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the fast connector's revocation waited behind the slow connector")
        assert not run.done()
    finally:
        gate.set()
    await asyncio.wait_for(run, timeout=30)
    await s.worker.run_until_idle()
    for user in USERS[:6]:
        assert not await slow.is_member(IdpUser(user, user), TARGET)


async def test_a_claim_takes_no_more_rows_than_its_limit(db_factory: DbFactory, clock: ManualClock) -> None:
    from bot.services.claims import claim_grants

    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    for user in USERS[:6]:
        await s.requests.submit(requester=user, eligibility="slow-access", duration=timedelta(hours=1),
                                justification="work")
    await s.worker.run_until_idle()
    now = clock.now()
    async with s.rt.db.transaction() as session:
        await session.execute(update(Grant).values(status="revoking", next_attempt_at=now))
    claimed = [await claim_grants(s.rt.db, status="revoking", due_column=Grant.next_attempt_at, now=now,
                                  lease=timedelta(minutes=5), limit=2, owner="w") for _ in range(4)]
    assert [len(c) for c in claimed] == [2, 2, 2, 0]
    assert len({g for c in claimed for g in c}) == 6
