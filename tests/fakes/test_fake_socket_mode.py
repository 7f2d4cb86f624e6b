"""The fake Slack's Socket Mode is as strict as Slack's: the app-level token and nothing else opens a
connection, a connection URL works once, envelopes are acknowledged by id within the deadline, and a
payload is taken only where Slack takes one. Driven with a plain aiohttp WebSocket client and with
slack_sdk's own ``apps_connections_open``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.fakes import FakeSlack
from bot.fakes.slack_socket import SocketMode
from bot.fakes.socket_sender import SocketModeSender

TOKEN, APP_TOKEN = "xoxb-fake-bot-token", "xapp-1-A0JITBOT01-1-fake"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(token=TOKEN, app_token=APP_TOKEN) as fake:
        yield fake


def _socket(slack: FakeSlack) -> SocketMode:
    assert slack.socket_mode is not None
    return slack.socket_mode


async def _open(slack: FakeSlack, token: str) -> str:
    response = await AsyncWebClient(token=token, base_url=slack.url).apps_connections_open(app_token=token)
    return str(response["url"])


@pytest.mark.parametrize(("token", "error"), [(TOKEN, "not_allowed_token_type"), ("xapp-1-other", "invalid_auth")])
async def test_only_the_app_level_token_opens_a_connection(slack: FakeSlack, token: str, error: str) -> None:
    with pytest.raises(SlackApiError) as refused:
        await _open(slack, token)
    assert refused.value.response["error"] == error
    # and the app-level token does nothing else
    with pytest.raises(SlackApiError) as other:
        await AsyncWebClient(token=APP_TOKEN, base_url=slack.url).chat_postMessage(channel="C1", text="hi")
    assert other.value.response["error"] == "not_allowed_token_type"


async def test_a_connection_url_works_once_and_greets_with_hello(slack: FakeSlack) -> None:
    url = await _open(slack, APP_TOKEN)
    assert url.startswith("ws://127.0.0.1:") and "ticket=" in url
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello" and hello["connection_info"]["app_id"] == slack.state.app_id
            assert _socket(slack).connections == 1
            with pytest.raises(aiohttp.WSServerHandshakeError) as again:
                await http.ws_connect(url)
            assert again.value.status == 401


async def _connected(slack: FakeSlack, http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(await _open(slack, APP_TOKEN))
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    return ws


async def test_envelopes_are_answered_by_their_acknowledgement(slack: FakeSlack) -> None:
    socket = _socket(slack)
    async with aiohttp.ClientSession() as http, await _connected(slack, http) as ws:
        async def app(answer: dict[str, Any] | None) -> dict[str, Any]:
            envelope = await ws.receive_json(timeout=5)
            await ws.send_json({"envelope_id": envelope["envelope_id"], **({"payload": answer} if answer else {})})
            return dict(envelope)

        # a modal submission accepts an answer: the field errors come back to the caller
        errors = {"response_action": "errors", "errors": {"b": "Say more"}}
        seen, (body, _) = await asyncio.gather(app(errors), socket.deliver("interactive", {"type": "view_submission"}))
        assert seen["type"] == "interactive" and seen["accepts_response_payload"] is True
        assert body == errors
        # a click does not: a payload in its acknowledgement is ignored, as Slack ignores it
        seen, (body, _) = await asyncio.gather(app({"text": "x"}),
                                               socket.deliver("interactive", {"type": "block_actions"}))
        assert seen["accepts_response_payload"] is False and body is None
        # events carry their retry fields
        seen, (body, _) = await asyncio.gather(app(None), socket.deliver("events_api", {"type": "event_callback"}))
        assert seen["retry_attempt"] == 0 and body is None
        # an acknowledgement of nothing in flight is kept aside, not taken for another envelope's
        await ws.send_json({"envelope_id": "made-up"})
        socket.ack_deadline = 0.2
        async def late() -> None:
            envelope = await ws.receive_json(timeout=5)
            await asyncio.sleep(0.4)
            await ws.send_json({"envelope_id": envelope["envelope_id"]})

        sender = SocketModeSender(slack)
        late_task = asyncio.create_task(late())
        slow = await sender.post_payload({"type": "block_actions"})
        assert slow.status == 408 and slow.slack_error is not None and "operation_timeout" in slow.slack_error
        await late_task
        for _ in range(100):
            if len(socket.stray_acks) == 2:
                break
            await asyncio.sleep(0.01)
        assert [a["envelope_id"] for a in socket.stray_acks][0] == "made-up" and len(socket.stray_acks) == 2
        with pytest.raises(TypeError):  # nothing is signed in Socket Mode
            await sender.post_payload({"type": "block_actions"}, secret="x")


async def test_refresh_asks_the_app_to_reconnect(slack: FakeSlack) -> None:
    async with aiohttp.ClientSession() as http, await _connected(slack, http) as ws:
        await _socket(slack).refresh()
        message = await ws.receive_json(timeout=5)
        assert message["type"] == "disconnect" and message["reason"] == "refresh_requested"
