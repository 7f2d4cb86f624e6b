"""/healthz and /metrics tell an operator when a revocation is overdue."""

from __future__ import annotations

from datetime import timedelta

import aiohttp

from bot.services.clock import ManualClock
from tests.conftest import DbFactory
from tests.reliability.test_outages import FlakyRevoke
from tests.slack.harness import slack_env


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as res:
        return res.status, await res.text()


async def test_health_degrades_and_metrics_show_the_age_of_an_overdue_revocation(
        db_factory: DbFactory, policy_text: str, clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        base = env.sender.bot_url.removesuffix("/slack/events")
        await env.stack.worker.run_until_idle()  # a heartbeat
        status, body = await _get(f"{base}/healthz")
        assert status == 200 and '"status": "ok"' in body
        await env.stack.requests.submit(requester="alice@example.com", eligibility="readonly",
                                        duration=timedelta(hours=1), justification="logs")
        await env.settle()
        assert await env.stack.is_member("alice@example.com", "readonly")
        env.stack.rt.connectors["demo"] = FlakyRevoke(env.stack.rt.connectors["demo"], failures=1000)
        env.clock.advance(timedelta(hours=1, minutes=5))
        await env.settle()
        status, body = await _get(f"{base}/healthz")
        assert status == 200 and '"status": "degraded"' in body and '"oldest_overdue_revocation_s": 300.0' in body
        status, text = await _get(f"{base}/metrics")
        assert "jitbot_revocations_overdue 1" in text
        assert "jitbot_revocation_oldest_overdue_seconds 300.0" in text
