"""Recovery-account monitoring: Okta System Log sign-ins alerted exactly once, across polls and restarts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.policy_file import LoadedPolicy, PolicyError, parse_policy
from bot.services import kvstate
from bot.services.background.recovery_watch import SCHEDULE_KEY, RecoveryWatch
from bot.services.clock import ManualClock
from storage.tables import Event
from tests.conftest import POLICY, DbFactory
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.tls import localhost_tls
from tests.services.stack import Stack, make_stack

TOKEN = "00okta-recovery-watch-token"
ROOT = "okta-root@example.com"


@pytest.fixture
async def okta(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> AsyncIterator[tuple[FakeOkta, str]]:
    for name in list(os.environ):
        if name.startswith("OKTA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    context, ca_file = localhost_tls()
    fake = FakeOkta(api_token=TOKEN, page_size=2)
    await fake.start(context)
    yield fake, ca_file
    await fake.stop()


def _policy(fake: FakeOkta, ca_file: str) -> LoadedPolicy:
    okta = (f"  okta:\n    type: okta\n    org_url: {fake.base_url}\n    api_token: {TOKEN}\n"
            f"    ca_file: {ca_file}\n    timeout: 5\n")
    text = POLICY.replace("eligibilities:\n", okta + "eligibilities:\n", 1)
    return parse_policy(text + f"recovery_accounts:\n  - {{email: {ROOT}, connector: okta}}\n", env={})


async def _close(*stacks: Stack) -> None:
    for s in stacks:
        for connector in s.rt.connectors.values():
            await connector.aclose()


def _alerts(s: Stack) -> list[str]:
    return [p["text"] for p in s.notifier.of_kind("alert") if "Recovery account" in p["text"]]


async def test_each_sign_in_is_alerted_once_across_polls_and_restarts(
        db_factory: DbFactory, okta: tuple[FakeOkta, str]) -> None:
    fake, ca_file = okta
    loaded = _policy(fake, ca_file)
    clock = ManualClock(datetime.now(UTC))
    log = fake.system_log
    now = clock.now()
    log.add_sign_in(ROOT, at=now - timedelta(days=2))  # older than the first poll's look-back
    for i in range(3):  # three events: two pages of two
        log.add_sign_in(ROOT, at=now - timedelta(hours=3 - i), ip=f"198.51.100.{i}")
    log.add_sign_in("alice@example.com", at=now - timedelta(hours=1))  # not a recovery account

    s = await make_stack(db_factory(), loaded, clock)
    await s.worker.run_until_idle()
    alerts = _alerts(s)
    assert len(alerts) == 3 and all(ROOT in a for a in alerts)
    assert "IP 198.51.100.0" in alerts[0] and "Berlin" in alerts[0] and "Mozilla" in alerts[0]
    assert len([r for r in log.requests if "after" in r]) >= 2  # paging was exercised

    log.add_sign_in(ROOT, at=now + timedelta(minutes=1), ip="192.0.2.50")
    await s.worker.run_until_idle()
    assert len(_alerts(s)) == 3  # not due yet: one poll per 5 minutes across replicas
    clock.advance(timedelta(minutes=6))
    await s.worker.run_until_idle()
    alerts = _alerts(s)
    assert len(alerts) == 4 and "192.0.2.50" in alerts[3]

    # Restart: a new runtime on the same database polls again and repeats nothing.
    restarted = await make_stack(db_factory(), loaded, clock)
    clock.advance(timedelta(minutes=6))
    await restarted.worker.run_until_idle()
    assert _alerts(restarted) == []
    log.add_sign_in(ROOT, at=clock.now(), ip="192.0.2.51")
    clock.advance(timedelta(minutes=6))
    await restarted.worker.run_until_idle()
    assert [a for a in _alerts(restarted) if "192.0.2.51" in a] and len(_alerts(restarted)) == 1

    async with restarted.rt.db.sessions() as session:
        kinds = (await session.execute(select(Event.kind).where(Event.kind == "recovery_sign_in"))).scalars().all()
    assert len(kinds) == 5
    await _close(s, restarted)


async def test_provider_failure_keeps_the_cursor(db_factory: DbFactory, okta: tuple[FakeOkta, str]) -> None:
    fake, ca_file = okta
    clock = ManualClock(datetime.now(UTC))
    s = await make_stack(db_factory(), _policy(fake, ca_file), clock)
    fake.system_log.add_sign_in(ROOT, at=clock.now() - timedelta(minutes=5))
    fake.fail_next(503)
    watch = RecoveryWatch(s.rt)
    assert await watch.poll() == 0
    assert await watch.poll() == 1  # the same event, once the provider answers again
    assert await watch.poll() == 0
    async with s.rt.db.sessions() as session:
        assert await kvstate.read(session, SCHEDULE_KEY) is None  # poll() itself ignores the schedule
    await _close(s)


def test_recovery_accounts_need_a_known_connector() -> None:
    with pytest.raises(PolicyError, match="unknown connector 'nope'"):
        parse_policy(POLICY + "recovery_accounts: [{email: a@example.com, connector: nope}]\n", env={})
