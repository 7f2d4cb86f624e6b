"""event_sinks in the policy (clear messages for bad ones), each sink's lag in /metrics while a grant
goes through with the sink down, and ``jitbot events replay``."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from bot.cli import main
from bot.events import cursor
from bot.policy_file import PolicyError, parse_policy
from bot.services.clock import ManualClock
from storage.db import Database
from tests.conftest import POLICY, DbFactory
from tests.events.receivers import SECRET, WebhookReceiver
from tests.events.test_webhook_stream import write
from tests.slack.harness import slack_env


def sinks_yaml(url: str, secret: str = "${SIEM_SECRET}") -> str:
    return textwrap.dedent(f"""\
        event_sinks:
          - name: siem
            type: webhook
            url: {url}
            secret: {secret}
        """)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = await WebhookReceiver().start()
    yield r
    await r.stop()


@pytest.mark.parametrize(("sink", "message"), [
    ("{name: siem, type: webhook, secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}", "a webhook needs an http(s) url"),
    ("{name: siem, type: webhook, url: 'https://siem.example/in'}", "a webhook needs a signing secret"),
    ("{name: siem, type: webhook, url: 'https://siem.example/in', secret: whsec_c2hvcnQ=}",
     "the secret must be whsec_ followed by the base64 of 24 to 64 random bytes"),
    ("{name: siem, type: syslog}", "a syslog sink needs a host"),
    ("{name: siem, type: kafka, host: x}", "Input should be 'webhook' or 'syslog'"),
])
def test_a_bad_sink_is_refused_with_a_clear_message(sink: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(POLICY + f"event_sinks:\n  - {sink}\n", env={})
    assert message in str(caught.value)


def test_the_secret_comes_from_the_environment_and_is_never_shown() -> None:
    loaded = parse_policy(POLICY + sinks_yaml("https://siem.example/in"), env={"SIEM_SECRET": SECRET})
    sink = loaded.policy.event_sinks[0]
    assert sink.secret is not None and sink.secret.get_secret_value() == SECRET
    assert SECRET not in repr(loaded.policy) and SECRET not in str(loaded.policy.model_dump())
    assert "${SIEM_SECRET}" in loaded.text


async def test_metrics_show_the_lag_of_a_down_sink_while_access_is_granted(
        db_factory: DbFactory, clock: ManualClock, receiver: WebhookReceiver) -> None:
    receiver.up = False
    async with slack_env(db_factory(), POLICY + sinks_yaml(receiver.url, SECRET), clock) as env:
        await cursor.start(env.stack.rt.db, "siem")
        await env.stack.requests.submit(requester="alice@example.com", eligibility="readonly",
                                        duration=timedelta(hours=1), justification="logs")
        await env.settle()
        assert await env.stack.is_member("alice@example.com", "readonly")  # the sink being down held nothing
        behind = await cursor.head_id(env.stack.rt.db)
        base = env.sender.bot_url.removesuffix("/slack/events")
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as res:
            text = await res.text()
    assert behind > 0 and f'jitbot_event_sink_lag_events{{sink="siem"}} {behind}' in text
    assert 'jitbot_event_sink_lag_seconds{sink="siem"}' in text


async def test_events_replay_sends_again_from_the_event_named(
        tmp_path: Path, clock: ManualClock, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIEM_SECRET", SECRET)
    db_file, policy_file = tmp_path / "jitbot.db", tmp_path / "policy.yml"
    policy_file.write_text(POLICY + sinks_yaml(receiver.url))
    db = Database(f"sqlite+aiosqlite:///{db_file}")
    await db.migrate()
    await write(db, clock, *[(f"R-{i}", "requested") for i in range(4)])
    await cursor.start(db, "siem")  # as if the running jitbot had sent all four
    await db.dispose()
    argv = ["events", "replay", "--policy", str(policy_file), "--database", f"sqlite+aiosqlite:///{db_file}"]
    assert await asyncio.to_thread(main, [*argv, "--since", "2"]) == 0
    assert receiver.ids() == [2, 3, 4] and receiver.refused == []
    assert await asyncio.to_thread(main, [*argv, "--since", "3", "--sink", "nope"]) == 2
    assert await asyncio.to_thread(main, [*argv, "--since", "99"]) == 2
    assert receiver.calls == 3
