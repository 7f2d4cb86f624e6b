"""Admin authorisation through an identity-provider outage: the last known membership of an admin group
(kept in the database with when it was read) decides, and the answer says so; with none, a clear refusal."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.domain.requests import PolicyViolation
from bot.policy_file import PolicyError, parse_policy
from bot.services.admin import AdminService
from bot.services.clock import ManualClock
from bot.slack.admin import admin_command
from connectors.base import ConnectorError, IdpUser, NotFound, PermissionDenied, Target, TargetKind, Transient
from connectors.memory import MemoryConnector
from storage.tables import Event
from tests.conftest import POLICY, DbFactory
from tests.services.stack import Stack, make_stack

GROUP_ADMINS = POLICY.replace("admins: {users: [root@example.com]}", "admins: {groups: [security]}")


async def _stack(db_factory: DbFactory, clock: ManualClock) -> Stack:
    return await make_stack(db_factory(), parse_policy(GROUP_ADMINS, env={}), clock)


def _idp_down(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    async def down(self: MemoryConnector, group: str) -> Any:
        calls.append(group)
        raise Transient("GET /groups/security/members: 503 Service Unavailable",
                        user_message="The directory is having trouble.")

    monkeypatch.setattr(MemoryConnector, "list_members", down)
    return calls


async def test_an_admin_keeps_their_tools_through_an_idp_outage_with_the_membership_age_said(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await _stack(db_factory, clock)
    admin = AdminService(s.rt)
    assert (await admin.check_admin("dave@example.com")).note is None  # read from the IdP, and kept
    req = await s.requests.submit(requester="bob@example.com", eligibility="readonly",
                                  duration=timedelta(hours=1), justification="logs")
    await s.worker.run_until_idle()

    clock.advance(timedelta(minutes=30))
    s.rt.directory.invalidate()
    calls = _idp_down(monkeypatch)
    answer = await admin_command(admin, "dave@example.com", ["pending"])
    assert calls and "as last seen 30m ago was used" in answer
    await admin.revoke(actor="dave@example.com", request_id=req.id, origin={"via": "cli", "os_user": "ops"})
    async with s.rt.db.sessions() as session:
        event = (await session.execute(select(Event).where(Event.kind == "revoked_requested"))).scalar_one()
    assert event.actor == "dave@example.com" and event.detail["os_user"] == "ops"
    assert "30m ago" in event.detail["authorised_by"]
    with pytest.raises(PolicyViolation, match="Only JIT administrators.*as last seen 30m ago"):
        await admin.check_admin("bob@example.com")  # not in the last known membership


async def test_with_no_membership_stored_an_outage_refuses_clearly(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await _stack(db_factory, clock)
    _idp_down(monkeypatch)
    with pytest.raises(PolicyViolation, match="identity provider did not answer for security"):
        await admin_command(AdminService(s.rt), "dave@example.com", ["pending"])


def _idp_says(monkeypatch: pytest.MonkeyPatch, error: ConnectorError) -> None:
    async def failing(self: MemoryConnector, group: str) -> Any:
        raise error

    monkeypatch.setattr(MemoryConnector, "list_members", failing)


async def _remove_from_security(s: Stack, email: str) -> None:
    await s.rt.connectors["demo"].revoke(IdpUser(id=email, email=email), Target(TargetKind.GROUP, "security"),
                                         grant_id="test")


@pytest.mark.parametrize("error", [
    NotFound("GET /groups/security/members: 404", user_message="the group security does not exist"),
    PermissionDenied("GET /groups/security/members: 403", user_message="jitbot may not read security"),
], ids=["group deleted", "permission denied"])
async def test_only_an_outage_falls_back_on_the_stored_membership(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, error: ConnectorError) -> None:
    s = await _stack(db_factory, clock)
    admin = AdminService(s.rt)
    assert (await admin.check_admin("dave@example.com")).note is None  # stored
    clock.advance(timedelta(minutes=5))
    s.rt.directory.invalidate()
    _idp_says(monkeypatch, error)
    with pytest.raises(PolicyViolation, match=f"could not check.*{error.user_message}"):
        await admin.check_admin("dave@example.com")
    monkeypatch.undo()
    if isinstance(error, NotFound):  # the group is gone: an outage afterwards finds no one in it
        _idp_down(monkeypatch)
        s.rt.directory.invalidate()
        with pytest.raises(PolicyViolation, match="Only JIT administrators"):
            await admin.check_admin("dave@example.com")


async def test_a_stored_membership_older_than_the_limit_decides_nothing(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await _stack(db_factory, clock)
    admin = AdminService(s.rt)
    await admin.check_admin("dave@example.com")
    clock.advance(timedelta(hours=4, minutes=1))  # settings.admin_outage_max_age: 4h by default
    s.rt.directory.invalidate()
    _idp_down(monkeypatch)
    with pytest.raises(PolicyViolation, match="4h1m old, older than the 4h settings.admin_outage_max_age"):
        await admin.check_admin("dave@example.com")


async def test_the_worker_keeps_the_stored_membership_current(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await _stack(db_factory, clock)
    admin = AdminService(s.rt)
    await admin.check_admin("dave@example.com")
    await _remove_from_security(s, "dave@example.com")  # nobody uses an admin command afterwards
    for _ in range(3):  # every 15 minutes the worker reads the admin groups again
        clock.advance(timedelta(minutes=15))
        s.rt.directory.invalidate()
        await s.worker.tick()
    clock.advance(timedelta(hours=1))
    s.rt.directory.invalidate()
    _idp_down(monkeypatch)
    with pytest.raises(PolicyViolation, match="Only JIT administrators.*as last seen 1h ago"):
        await admin.check_admin("dave@example.com")
    assert (await admin.check_admin("carol@example.com")).note is not None  # still in it: still an admin


def test_admin_outage_max_age_is_a_bounded_setting() -> None:
    assert parse_policy(GROUP_ADMINS, env={}).policy.settings.admin_outage_max_age == timedelta(hours=4)
    with pytest.raises(PolicyError, match="admin_outage_max_age must be at most 7d"):
        parse_policy(GROUP_ADMINS.replace('audit_channel: "#jit-audit"',
                                          'audit_channel: "#jit-audit"\nsettings: {admin_outage_max_age: 30d}'),
                     env={})
