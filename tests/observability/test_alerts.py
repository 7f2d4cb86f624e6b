"""Every alert documented in docs/operations.md, evaluated on the real exposition: quiet before the
condition, firing once it holds. An alert added to the docs without a scenario here fails the test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from bot.observability.metrics import exposition
from bot.policy_file import LoadedPolicy
from bot.services.clock import ManualClock
from bot.services.runtime import Runtime
from connectors.base import PermissionDenied, Target, Transient
from storage.db import Database
from storage.tables import OutboxMessage
from tests.conftest import DbFactory
from tests.observability.expo import Samples, documented_alerts, fires, samples
from tests.services.stack import Stack, make_stack

Scenario = Callable[[Stack, pytest.MonkeyPatch], Awaitable[dict[str, float] | Runtime | None]]


async def _scrape(rt: Runtime, local: dict[str, float] | None = None) -> Samples:
    return samples((await exposition(rt, local=local or {})).decode())


async def _submit(s: Stack, who: str = "alice@example.com") -> None:
    await s.requests.submit(requester=who, eligibility="readonly", duration=timedelta(hours=1),
                            justification="logs")


def _failing_grant(s: Stack, monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    async def grant(user: Any, target: Target, **kw: Any) -> Any:
        raise exc

    monkeypatch.setattr(s.rt.connectors["demo"], "grant", grant)


async def revocation_overdue(s: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    await _submit(s)
    await s.worker.run_until_idle()
    s.rt.clock.advance(timedelta(hours=1, seconds=5))  # type: ignore[attr-defined]  # no worker pass since


async def grants_failed(s: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_grant(s, monkeypatch, PermissionDenied("403 from the IdP", user_message="Refused."))
    await _submit(s)
    await s.worker.run_until_idle()
    await s.worker.grants.settle()


async def grants_waiting(s: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_grant(s, monkeypatch, Transient("503 from the IdP", user_message="Down."))
    await _submit(s)
    await s.worker.run_until_idle()
    await s.worker.grants.settle()


async def outbox_backlog(s: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    now = s.rt.clock.now()
    async with s.rt.db.transaction() as session:
        await session.execute(insert(OutboxMessage), [
            {"created_at": now, "order_key": f"k{i}", "kind": "alert", "payload": {"text": "x"}, "status": "pending"}
            for i in range(101)])


async def worker_silent(s: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    s.rt.clock.advance(timedelta(seconds=61))  # type: ignore[attr-defined]


async def database_down(s: Stack, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    from dataclasses import replace

    return replace(s.rt, db=Database("postgresql+asyncpg://postgres@127.0.0.1:1/none"))


async def slack_token_refused(s: Stack, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    return {"jitbot_slack_bot_token_refused": 1}


SCENARIOS: dict[str, Scenario] = {
    "JitbotRevocationOverdue": revocation_overdue,
    "JitbotGrantsFailed": grants_failed,
    "JitbotGrantsWaitingOnIdp": grants_waiting,
    "JitbotOutboxBacklog": outbox_backlog,
    "JitbotWorkerSilent": worker_silent,
    "JitbotDatabaseDown": database_down,
    "JitbotSlackTokenRefused": slack_token_refused,
}
PROMETHEUS_OWN = {"JitbotDown"}  # up{...}: written by Prometheus about the scrape, not by jitbot


def test_every_documented_alert_has_a_scenario() -> None:
    names = {a["alert"] for a in documented_alerts()}
    assert names == set(SCENARIOS) | PROMETHEUS_OWN


@pytest.mark.parametrize("alert", [a for a in documented_alerts() if a["alert"] in SCENARIOS], ids=lambda a: a["alert"])
async def test_documented_alert_is_quiet_then_fires_on_the_exposition(
        alert: dict[str, str], db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    await s.worker.run_until_idle()  # a heartbeat: a healthy start
    before = await _scrape(s.rt, {"jitbot_slack_bot_token_refused": 0})
    assert not fires(alert["expr"], before, before), f"{alert['alert']} fires on a healthy bot"
    outcome = await SCENARIOS[alert["alert"]](s, monkeypatch)
    rt = outcome if isinstance(outcome, Runtime) else s.rt
    local = outcome if isinstance(outcome, dict) else {"jitbot_slack_bot_token_refused": 0}
    after = await _scrape(rt, local)
    assert fires(alert["expr"], before, after), f"{alert['alert']} did not fire: {alert['expr']}"
