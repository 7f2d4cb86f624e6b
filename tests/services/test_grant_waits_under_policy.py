"""An approved grant that waits (on the identity provider, or for its scheduled start) is carried out under
the policy in force when it goes through, and within the window its approval covers: a changed target is
refused (told, audited), a lowered maximum caps the duration, and the wait comes out of the approved
duration instead of being added to it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.domain.requests import Decision, Status
from bot.policy_file import PolicyError, parse_policy
from bot.services.clock import ManualClock
from connectors.base import Transient
from connectors.memory import MemoryConnector
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import DbFactory
from tests.services.stack import Stack, make_stack

P = """
audit_channel: "#jit-audit"
{settings}
connectors:
  demo:
    type: memory
    users:
      - {{email: alice@example.com, name: Alice}}
      - {{email: bob@example.com, name: Bob}}
    groups:
      prod-admins: []
      readonly: []
eligibilities:
  - name: ops
    connector: demo
    target: {{group: {target}}}
    requestors: {{users: [alice@example.com]}}
    approvals: [{{approvers: {{users: [bob@example.com]}}}}]
    max_duration: {maxd}
"""


def _policy(target: str = "prod-admins", maxd: str = "8h", settings: str = "") -> Any:
    return parse_policy(P.format(target=target, maxd=maxd, settings=settings), env={})


def _idp_down(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    real_grant = MemoryConnector.grant
    down = {"on": True}

    async def grant(self: MemoryConnector, *a: Any, **k: Any) -> Any:
        if down["on"]:
            raise Transient("503 Service Unavailable")
        return await real_grant(self, *a, **k)

    monkeypatch.setattr(MemoryConnector, "grant", grant)
    return down


async def _approved_while_down(s: Stack, clock: ManualClock, hours: int = 8) -> str:
    req = await s.requests.submit(requester="alice@example.com", eligibility="ops", duration=timedelta(hours=hours),
                                  justification="deploy the fix")
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    return req.id


async def _rows(s: Stack) -> tuple[AccessRequest, Grant]:
    async with s.rt.db.sessions() as session:
        return ((await session.execute(select(AccessRequest))).scalar_one(),
                (await session.execute(select(Grant))).scalar_one())


async def _drain(s: Stack) -> None:
    for _ in range(5):
        await s.worker.run_until_idle()
    await s.worker.grants.settle()
    await s.worker.run_until_idle()


async def test_a_waiting_grant_whose_target_changed_is_refused_and_the_requester_told(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await make_stack(db_factory(), _policy(), clock)
    down = _idp_down(monkeypatch)
    rid = await _approved_while_down(s, clock)
    s.rt.loaded = _policy(target="readonly")  # ops now grants another group
    s.rt.directory.invalidate()
    clock.advance(timedelta(hours=1))
    down["on"] = False
    await _drain(s)
    req, g = await _rows(s)
    assert (req.status, g.status, g.end_reason) == (Status.REVOKED.value, "ended", "ineligible")
    assert not await s.is_member("alice@example.com", "prod-admins")
    assert not await s.is_member("alice@example.com", "readonly")
    async with s.rt.db.sessions() as session:
        refused = (await session.execute(select(Event).where(Event.kind == "grant_refused"))).scalar_one()
    assert "now grants group readonly" in refused.detail["reason"]
    dms = [m for m in s.notifier.of_kind("requester") if "was not carried out" in m["text"]]
    assert len(dms) == 1 and rid in dms[0]["text"] and "not the group prod-admins" in dms[0]["text"]


async def test_a_lowered_maximum_caps_a_waiting_grant(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await make_stack(db_factory(), _policy(), clock)
    down = _idp_down(monkeypatch)
    await _approved_while_down(s, clock)
    s.rt.loaded = _policy(maxd="1h")
    clock.advance(timedelta(minutes=30))
    down["on"] = False
    await _drain(s)
    req, g = await _rows(s)
    assert req.status == Status.ACTIVE.value and g.granted_at is not None and g.expires_at is not None
    assert g.expires_at - g.granted_at == timedelta(hours=1)


async def test_waiting_on_the_idp_comes_out_of_the_approved_window(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await make_stack(db_factory(), _policy(), clock)
    down = _idp_down(monkeypatch)
    approved_at = clock.now()
    await _approved_while_down(s, clock)
    clock.advance(timedelta(hours=7, minutes=50))
    down["on"] = False
    await _drain(s)
    req, g = await _rows(s)
    assert req.status == Status.ACTIVE.value and g.expires_at is not None and g.granted_at is not None
    assert g.granted_at - approved_at >= timedelta(hours=7, minutes=50)
    assert g.expires_at <= approved_at + timedelta(hours=8)  # not granted_at + 8h


async def test_a_grant_past_its_approved_window_is_not_carried_out(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await make_stack(db_factory(), _policy(settings="settings: {grant_retry_for: 1d}"), clock)
    down = _idp_down(monkeypatch)
    await _approved_while_down(s, clock, hours=1)
    clock.advance(timedelta(hours=2))
    down["on"] = False
    await _drain(s)
    req, g = await _rows(s)
    assert (req.status, g.status, g.end_reason) == (Status.REVOKED.value, "ended", "ineligible")
    assert not await s.is_member("alice@example.com", "prod-admins")
    dms = [m for m in s.notifier.of_kind("requester") if "was not carried out" in m["text"]]
    assert len(dms) == 1 and "approved window ended" in dms[0]["text"]


async def test_a_scheduled_grant_carried_out_late_ends_at_its_start_plus_the_duration(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await make_stack(db_factory(), _policy(), clock)
    starts = clock.now() + timedelta(hours=1)
    req = await s.requests.submit(requester="alice@example.com", eligibility="ops", duration=timedelta(hours=2),
                                  justification="deploy the fix", starts_at=starts)
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    down = _idp_down(monkeypatch)
    clock.set(starts)
    await s.worker.run_until_idle()  # due, and the IdP fails
    clock.advance(timedelta(minutes=45))
    down["on"] = False
    await _drain(s)
    _, g = await _rows(s)
    assert g.status == "active" and g.expires_at == starts + timedelta(hours=2)


def test_grant_retry_for_has_an_upper_bound() -> None:
    with pytest.raises(PolicyError, match="grant_retry_for must be at most 7d"):
        _policy(settings="settings: {grant_retry_for: 30d}")
    _policy(settings="settings: {grant_retry_for: 7d}")
