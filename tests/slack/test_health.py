"""/healthz and /metrics tell an operator when a revocation is overdue."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import aiohttp

from bot.governance.applied import apply_policy
from bot.governance.reload import PolicyReloader
from bot.policy_file import parse_policy
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


async def test_health_and_metrics_show_this_replicas_policy_version_and_when_it_is_behind(
        db_factory: DbFactory, policy_text: str, clock: ManualClock, tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(policy_text)
    async with slack_env(db_factory(), policy_text, clock) as env:
        base = env.sender.bot_url.removesuffix("/slack/events")
        reloader = PolicyReloader(env.stack.rt, str(path))
        assert await reloader.reload()
        env.stack.rt.follower = reloader
        await env.stack.worker.run_until_idle()  # a heartbeat, with the version
        status, body = await _get(f"{base}/healthz")
        health = json.loads(body)
        assert (health["status"], health["policy_version"], health["policy_applied_version"]) == ("ok", 1, 1)
        # another replica applies a change; this one has not read it yet
        await apply_policy(env.stack.rt.db, parse_policy(policy_text.replace("max_duration: 4h", "max_duration: 2h"),
                                                         source="other.yml", env={}),
                           actor="ops", now=clock.now())
        status, body = await _get(f"{base}/healthz")
        health = json.loads(body)
        assert (health["status"], health["policy_version"], health["policy_applied_version"]) == ("degraded", 1, 2)
        status, text = await _get(f"{base}/metrics")
        assert "jitbot_policy_applied_version 2" in text
        assert 'jitbot_replica_policy_version{replica="slack-test"} 1' in text
        assert await reloader.catch_up() == 2
        status, text = await _get(f"{base}/metrics")
        assert "jitbot_policy_version{" in text and "} 2" in text.split("jitbot_policy_version{")[1].split("\n")[0]
