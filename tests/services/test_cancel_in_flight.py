"""A grant stopped while its identity-provider call is in flight never leaves a membership behind.

A claimed grant has started: a replica whose clock is behind the claimer's cannot cancel it as "not
started". Should a grant be stopped meanwhile all the same, the call's membership is removed (the grant
turns into a revocation, audited), and reconciliation counts a membership whose grant found the person no
member as jitbot's even though that grant was never granted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.domain.requests import Decision, PolicyViolation, Status
from bot.policy_file import parse_policy
from bot.services.access.reconcile import ReconcileService
from bot.services.clock import ManualClock
from bot.services.requesting.not_started import stop_before_start
from bot.services.requesting.request_rows import load_request
from connectors.base import IdpUser, Target, TargetKind
from connectors.memory import MemoryConnector
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import DbFactory
from tests.services.stack import Stack, make_stack

P = """
audit_channel: "#jit-audit"
connectors:
  demo:
    type: memory
    users:
      - {email: alice@example.com, name: Alice}
      - {email: bob@example.com, name: Bob}
    groups:
      prod-admins: []
eligibilities:
  - name: ops
    connector: demo
    target: {group: prod-admins}
    requestors: {users: [alice@example.com]}
    approvals: [{approvers: {users: [bob@example.com]}}]
    max_duration: 8h
"""


async def _scheduled(s: Stack, clock: ManualClock) -> tuple[str, Any]:
    starts = clock.now() + timedelta(hours=1)
    req = await s.requests.submit(requester="alice@example.com", eligibility="ops", duration=timedelta(hours=1),
                                  justification="deploy the fix", starts_at=starts)
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    return req.id, starts


async def _rows(s: Stack) -> tuple[AccessRequest, Grant]:
    async with s.rt.db.sessions() as session:
        return ((await session.execute(select(AccessRequest))).scalar_one(),
                (await session.execute(select(Grant))).scalar_one())


async def test_a_replica_whose_clock_is_behind_cannot_cancel_a_claimed_grant(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = parse_policy(P, env={})
    a = await make_stack(db_factory(), loaded, clock)
    clock_b = ManualClock(clock.now())
    b = await make_stack(db_factory(), loaded, clock_b, migrate=False)
    rid, starts = await _scheduled(a, clock)
    clock.set(starts)  # replica A: due, claims it
    clock_b.set(starts - timedelta(seconds=1))  # replica B: one second behind, the grant looks not started
    real = MemoryConnector.is_member
    refusals: list[str] = []

    async def is_member(self: MemoryConnector, *args: Any, **kw: Any) -> bool:
        if not refusals:
            with pytest.raises(PolicyViolation, match="being granted right now") as info:
                await b.requests.cancel(request_id=rid, by="alice@example.com")
            refusals.append(str(info.value))
        return await real(self, *args, **kw)

    monkeypatch.setattr(MemoryConnector, "is_member", is_member)
    await a.worker.run_until_idle()
    await a.worker.grants.settle()
    req, g = await _rows(a)
    assert refusals and (req.status, g.status) == (Status.ACTIVE.value, "active")


async def test_a_grant_stopped_during_its_idp_call_has_the_membership_removed(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await make_stack(db_factory(), parse_policy(P, env={}), clock)
    rid, starts = await _scheduled(s, clock)
    await ReconcileService(s.rt).sweep()  # the target's baseline: no standing members
    clock.set(starts)
    real = MemoryConnector.is_member
    stopped: list[str] = []

    async def is_member(self: MemoryConnector, *args: Any, **kw: Any) -> bool:
        if not stopped:  # stopped in another transaction while this call is in flight
            async with s.rt.db.transaction() as session:
                req = await load_request(session, rid, lock=True)
                grant = (await session.execute(select(Grant).with_for_update())).scalar_one()
                await stop_before_start(s.rt, session, req, grant, actor="alice@example.com", by_admin=False,
                                        now=clock.now())
            stopped.append(rid)
        return await real(self, *args, **kw)

    monkeypatch.setattr(MemoryConnector, "is_member", is_member)
    await s.worker.run_until_idle()
    await s.worker.grants.settle()
    monkeypatch.setattr(MemoryConnector, "is_member", real)
    for _ in range(3):
        await s.worker.run_until_idle()
    req, g = await _rows(s)
    assert stopped and req.status == Status.CANCELLED.value
    assert g.status == "ended" and g.pre_member is None  # nothing recorded on a grant no longer granting
    assert not await s.is_member("alice@example.com", "prod-admins")
    async with s.rt.db.sessions() as session:
        kinds = [e.kind for e in (await session.execute(select(Event).order_by(Event.id))).scalars()]
    assert "granted_after_stop" in kinds and "granted" not in kinds


async def test_reconcile_removes_a_membership_whose_grant_found_no_member_and_never_went_through(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), parse_policy(P, env={}), clock)
    rid, starts = await _scheduled(s, clock)
    reconcile = ReconcileService(s.rt)
    await reconcile.sweep()  # baseline: nobody
    # what an in-flight grant leaves when it is stopped: it found alice no member, added her, and ended
    # without ever being granted
    await s.rt.connectors["demo"].grant(IdpUser(id="alice@example.com", email="alice@example.com"),
                                        Target(TargetKind.GROUP, "prod-admins"), grant_id="x",
                                        expires_at=starts + timedelta(days=1))
    async with s.rt.db.transaction() as session:
        await session.execute(update(Grant).values(status="ended", end_reason="cancelled", ended_at=clock.now(),
                                                   pre_member=False, next_attempt_at=None))
        await session.execute(update(AccessRequest).values(status=Status.CANCELLED.value))
    clock.advance(timedelta(days=1))
    report = await reconcile.sweep()
    assert report.removed == ["demo:group:prod-admins alice@example.com"]
    assert not await s.is_member("alice@example.com", "prod-admins")
