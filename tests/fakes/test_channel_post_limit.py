"""The fake Slack's opt-in per-channel chat.postMessage limit (token bucket), driven by slack_sdk."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.fakes import FakeSlack

TOKEN = "xoxb-test-token"


class Monotonic:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mono() -> Monotonic:
    return Monotonic()


def _workspace(fake: FakeSlack) -> FakeSlack:
    fake.add_user("U1", "alice", email="alice@example.com")
    fake.add_channel("C0AUDIT", "jit-audit", members=["U1"])
    fake.add_channel("C0OTHER", "jit-other", members=["U1"])
    return fake


@pytest.fixture
async def slack(mono: Monotonic) -> AsyncIterator[FakeSlack]:
    async with _workspace(FakeSlack(token=TOKEN, channel_post_limit=(1.0, 3), now=mono)) as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=slack.url)


async def _rejected(client: AsyncWebClient, channel: str, thread_ts: str | None = None) -> str:
    """Post expecting the limit; returns the Retry-After header."""
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel=channel, text="too fast", thread_ts=thread_ts)
    assert err.value.response.status_code == 429
    assert err.value.response.data == {"ok": False, "error": "ratelimited"}
    return str(err.value.response.headers["Retry-After"])


async def test_burst_is_allowed_then_429_with_retry_after_and_nothing_stored(
        client: AsyncWebClient, slack: FakeSlack) -> None:
    parent = await client.chat_postMessage(channel="C0AUDIT", text="parent")
    for n in range(2):  # thread replies spend the same channel's tokens
        await client.chat_postMessage(channel="C0AUDIT", text=f"reply {n}", thread_ts=parent["ts"])
    assert await _rejected(client, "C0AUDIT", thread_ts=parent["ts"]) == "1"
    assert await _rejected(client, "C0AUDIT") == "1"
    assert [m.text for m in slack.messages("C0AUDIT")] == ["parent", "reply 0", "reply 1"]
    assert [c.status for c in slack.calls("chat.postMessage")] == [200, 200, 200, 429, 429]
    assert slack.rejected_posts("C0AUDIT") == 2 and slack.rejected_posts() == 2


async def test_retry_after_rounds_up_the_wait_for_a_token(mono: Monotonic) -> None:
    async with _workspace(FakeSlack(token=TOKEN, channel_post_limit=(0.4, 1), now=mono)) as slack:
        client = AsyncWebClient(token=TOKEN, base_url=slack.url)
        await client.chat_postMessage(channel="C0AUDIT", text="one")
        assert await _rejected(client, "C0AUDIT") == "3"  # a token every 2.5 s
        mono.now += 2.0
        assert await _rejected(client, "C0AUDIT") == "1"  # 0.5 s to go, never "0"
        mono.now += 0.5
        await client.chat_postMessage(channel="C0AUDIT", text="two")
        assert slack.rejected_posts("C0AUDIT") == 2


async def test_tokens_refill_with_the_injected_clock_up_to_the_burst(
        client: AsyncWebClient, slack: FakeSlack, mono: Monotonic) -> None:
    for n in range(3):
        await client.chat_postMessage(channel="C0AUDIT", text=f"burst {n}")
    await _rejected(client, "C0AUDIT")
    mono.now += 0.5
    assert await _rejected(client, "C0AUDIT") == "1"
    mono.now += 0.5
    await client.chat_postMessage(channel="C0AUDIT", text="refilled")
    await _rejected(client, "C0AUDIT")
    mono.now += 60.0  # a long pause refills to the burst, no further
    for n in range(3):
        await client.chat_postMessage(channel="C0AUDIT", text=f"again {n}")
    await _rejected(client, "C0AUDIT")
    assert len(slack.messages("C0AUDIT")) == 7
    assert slack.rejected_posts("C0AUDIT") == 4


async def test_other_channels_have_their_own_buckets_and_a_user_id_means_their_im(
        client: AsyncWebClient, slack: FakeSlack) -> None:
    for n in range(3):
        await client.chat_postMessage(channel="C0AUDIT", text=f"audit {n}")
    await _rejected(client, "C0AUDIT")
    for n in range(3):
        await client.chat_postMessage(channel="C0OTHER", text=f"other {n}")
    first = await client.chat_postMessage(channel="U1", text="dm 0")
    await client.chat_postMessage(channel=first["channel"], text="dm 1")  # the IM id: same bucket
    await client.chat_postMessage(channel="U1", text="dm 2")
    await _rejected(client, "U1")
    await _rejected(client, "C0OTHER")
    assert len(slack.dm_messages("U1")) == 3 and len(slack.messages("C0OTHER")) == 3
    assert slack.rejected_posts("U1") == slack.rejected_posts(first["channel"]) == 1
    assert slack.rejected_posts("C0AUDIT") == 1 and slack.rejected_posts() == 3


async def test_chat_update_and_ephemeral_posts_are_not_limited(
        client: AsyncWebClient, slack: FakeSlack) -> None:
    posted = [await client.chat_postMessage(channel="C0AUDIT", text=f"m{n}") for n in range(3)]
    await _rejected(client, "C0AUDIT")
    for n in range(5):
        await client.chat_update(channel="C0AUDIT", ts=posted[0]["ts"], text=f"edit {n}")
        await client.chat_postEphemeral(channel="C0AUDIT", user="U1", text=f"psst {n}")
    assert slack.messages("C0AUDIT")[0].text == "edit 4" and len(slack.ephemerals("U1")) == 5
    assert {c.status for c in slack.calls("chat.update") + slack.calls("chat.postEphemeral")} == {200}
    await _rejected(client, "C0AUDIT")  # and they gave no tokens back


async def test_no_limit_by_default_until_switched_on(mono: Monotonic) -> None:
    async with _workspace(FakeSlack(token=TOKEN)) as slack:
        client = AsyncWebClient(token=TOKEN, base_url=slack.url)
        for n in range(20):
            await client.chat_postMessage(channel="C0AUDIT", text=f"free {n}")
        assert len(slack.messages("C0AUDIT")) == 20 and slack.rejected_posts() == 0
        slack.limit_channel_posts(rate=1.0, burst=3, now=mono)
        for n in range(3):
            await client.chat_postMessage(channel="C0AUDIT", text=f"limited {n}")
        assert await _rejected(client, "C0AUDIT") == "1"
        assert len(slack.messages("C0AUDIT")) == 23 and slack.rejected_posts("C0AUDIT") == 1
