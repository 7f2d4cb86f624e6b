"""``terminate_sessions: true`` on an eligibility: every revoke also ends the user's sign-in sessions.

Ending sessions is best effort: when it fails (or the connector cannot), the membership is still
removed and the grant still ends; the failure is audited and alerted, never retried into a stuck revoke.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from connectors.base import Connector, IdpUser, Transient, session_terminator
from connectors.memory import MemoryConnector
from connectors.resilience import ResilientConnector
from storage.tables import Event, Grant
from tests.conftest import POLICY, DbFactory
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.tls import localhost_tls
from tests.services.stack import Stack, make_stack

SQLITE = pytest.mark.parametrize("db_factory", ["sqlite"], indirect=True)


class EndsSessions(MemoryConnector):
    """The memory connector plus the session capability, recording (or failing) each call."""

    ended: list[str]
    fail: Exception | None = None

    async def terminate_sessions(self, user: IdpUser) -> None:
        if self.fail is not None:
            raise self.fail
        self.ended.append(user.email)


def _policy(terminate: bool) -> str:
    old = "    max_duration: 4h\n    warn_before: 10m\n"
    return POLICY.replace(old, f"{old}    terminate_sessions: {str(terminate).lower()}\n")


async def _stack(db_factory: DbFactory, clock: ManualClock, *, terminate: bool, capable: bool = True,
                 fail: Exception | None = None) -> tuple[Stack, EndsSessions | None]:
    loaded = parse_policy(_policy(terminate), source="test", env={})
    assert loaded.policy.eligibilities[1].terminate_sessions is terminate
    stack = await make_stack(db_factory(), loaded, clock)
    connector = None
    if capable:
        memory = stack.rt.connectors["demo"]
        assert isinstance(memory, MemoryConnector)
        memory.__class__ = EndsSessions  # same state, one more capability
        connector = memory
        assert isinstance(connector, EndsSessions)
        connector.ended, connector.fail = [], fail
        # wrapped as in production: the wrapper must forward the capability
        wrapped: Connector = ResilientConnector(connector, max_attempts=1, sleep=_no_sleep)
        stack.rt.connectors["demo"] = wrapped  # type: ignore[index]
    return stack, connector


async def _no_sleep(_: float) -> None:
    return None


async def _use_and_expire(stack: Stack, clock: ManualClock) -> str:
    req = await stack.requests.submit(requester="alice@example.com", eligibility="readonly",
                                      duration=timedelta(hours=1), justification="read logs")
    await stack.worker.run_until_idle()
    assert await stack.is_member("alice@example.com", "readonly")
    clock.advance(timedelta(hours=1, seconds=1))
    await stack.worker.run_until_idle()
    assert not await stack.is_member("alice@example.com", "readonly")
    return req.id


async def _kinds(stack: Stack, rid: str) -> list[str]:
    async with stack.rt.db.sessions() as s:
        return list((await s.execute(select(Event.kind).where(Event.request_id == rid).order_by(Event.id))).scalars())


@SQLITE
async def test_sessions_are_ended_at_expiry_and_release(db_factory: DbFactory, clock: ManualClock) -> None:
    stack, conn = await _stack(db_factory, clock, terminate=True)
    assert conn is not None and session_terminator(stack.rt.connectors["demo"]) is stack.rt.connectors["demo"]
    rid = await _use_and_expire(stack, clock)
    assert conn.ended == ["alice@example.com"]
    kinds = await _kinds(stack, rid)
    assert kinds.index("expired") < kinds.index("sessions_ended")
    req = await stack.requests.submit(requester="alice@example.com", eligibility="readonly",
                                      duration=timedelta(hours=1), justification="again")
    await stack.worker.run_until_idle()
    await stack.grants.end_early(request_id=req.id, actor="alice@example.com", reason="released")
    await stack.worker.run_until_idle()
    assert conn.ended == ["alice@example.com"] * 2
    assert not stack.notifier.of_kind("alert")


@SQLITE
async def test_off_by_default(db_factory: DbFactory, clock: ManualClock) -> None:
    stack, conn = await _stack(db_factory, clock, terminate=False)
    rid = await _use_and_expire(stack, clock)
    assert conn is not None and conn.ended == []
    assert not {"sessions_ended", "sessions_not_ended"} & set(await _kinds(stack, rid))


@SQLITE
@pytest.mark.parametrize("capable", [True, False])
async def test_a_failure_is_audited_and_alerted_but_the_revoke_completes(db_factory: DbFactory, clock: ManualClock,
                                                                        capable: bool) -> None:
    stack, conn = await _stack(db_factory, clock, terminate=True, capable=capable,
                               fail=Transient("okta: 503 from /sessions"))
    rid = await _use_and_expire(stack, clock)  # membership removed regardless
    kinds = await _kinds(stack, rid)
    assert "expired" in kinds and "sessions_not_ended" in kinds and "sessions_ended" not in kinds
    alerts = [a["text"] for a in stack.notifier.of_kind("alert")]
    assert any("sign-in sessions" in t and "could not be ended" in t for t in alerts), alerts
    async with stack.rt.db.sessions() as s:
        grant = (await s.execute(select(Grant).where(Grant.request_id == rid))).scalar_one()
    assert grant.status == "ended" and grant.next_attempt_at is None  # not retried
    clock.advance(timedelta(minutes=10))
    await stack.worker.run_until_idle()
    assert (await _kinds(stack, rid)).count("sessions_not_ended") == 1


# ---- a real connector: Okta --------------------------------------------------------------------

OKTA_TOKEN = "00okta-session-test-token"


@pytest.fixture
async def okta(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[tuple[FakeOkta, str]]:
    for name in list(os.environ):
        if name.startswith("OKTA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    context, ca_file = localhost_tls()
    fake = FakeOkta(api_token=OKTA_TOKEN)
    await fake.start(context)
    yield fake, ca_file
    await fake.stop()


@SQLITE
@pytest.mark.parametrize("terminate", [True, False])
async def test_okta_sessions_are_revoked_on_release(db_factory: DbFactory, clock: ManualClock,
                                                    okta: tuple[FakeOkta, str], terminate: bool) -> None:
    fake, ca_file = okta
    alice = fake.add_user("alice@example.com", "Alice", "Adams")
    gid = fake.add_group("jit-admins")
    end = POLICY.index("eligibilities:")
    text = (POLICY[:end] + f"""  okta:
    type: okta
    org_url: "{fake.base_url}"
    ca_file: "{ca_file}"
    api_token: "{OKTA_TOKEN}"
""" + POLICY[end:] + f"""  - name: okta-admin
    connector: okta
    target: {{group: jit-admins}}
    requestors: {{groups: [engineers]}}
    max_duration: 1h
    terminate_sessions: {str(terminate).lower()}
""")
    stack = await make_stack(db_factory(), parse_policy(text, source="test", env={}), clock)
    assert isinstance(stack.rt.connectors["okta"], ResilientConnector)
    try:
        req = await stack.requests.submit(requester="alice@example.com", eligibility="okta-admin",
                                          duration=timedelta(minutes=30), justification="rotate")
        await stack.worker.run_until_idle()
        assert alice in fake.members[gid]
        await stack.grants.end_early(request_id=req.id, actor="alice@example.com", reason="released")
        await stack.worker.run_until_idle()
        assert alice not in fake.members[gid]
        assert fake.revoked_sessions == ([alice] if terminate else [])
        assert ("sessions_ended" in await _kinds(stack, req.id)) is terminate
    finally:
        for c in stack.rt.connectors.values():
            await c.aclose()
