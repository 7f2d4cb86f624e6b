"""Admin authorisation through an identity-provider outage: the last known membership of an admin group
(kept in the database with when it was read) decides, and the answer says so; with none, a clear refusal."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.domain.requests import PolicyViolation
from bot.policy_file import parse_policy
from bot.services.admin import AdminService
from bot.services.clock import ManualClock
from bot.slack.admin import admin_command
from connectors.base import Transient
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
