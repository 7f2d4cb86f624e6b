"""The Web API client every process builds (bot/slack/client.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.fakes import FakeSlack, SlackSender
from bot.services.clock import ManualClock
from bot.slack.client import API_LOGGER, web_client


@pytest.fixture
def api_logger_reset() -> Iterator[logging.Logger]:
    logger = logging.getLogger(API_LOGGER)
    level, root = logger.level, logging.getLogger().level
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.setLevel(level)
    logging.getLogger().setLevel(root)


async def _debug_calls(logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(logger, "debug", lambda msg, *a, **k: calls.append(str(msg)))
    slack = FakeSlack(token="xoxb-t")
    slack.add_channel("C0AUDIT", "jit-audit")
    async with slack, aiohttp.ClientSession() as http:
        client = web_client("xoxb-t", slack.url, http)
        assert client.logger is logger
        await client.chat_postMessage(channel="C0AUDIT", text="hello")
    return calls


async def test_debug_lines_are_not_built_when_logging_is_above_debug(
        api_logger_reset: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    """slack_sdk formats every call's arguments and response body when its logger's own level is NOTSET
    (it checks ``logger.level``, not the effective level): the client's logger has its level set."""
    logging.getLogger().setLevel(logging.INFO)
    assert await _debug_calls(api_logger_reset, monkeypatch) == []
    assert api_logger_reset.level == logging.INFO


async def test_debug_lines_still_appear_when_logging_is_at_debug(
        api_logger_reset: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    calls = await _debug_calls(api_logger_reset, monkeypatch)
    assert any("chat.postMessage" in c for c in calls)
    assert not any("xoxb-t" in c for c in calls)  # the token is redacted in them


async def test_replies_to_a_response_url_go_over_the_bots_one_session(
        tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bolt's own respond() opens a new aiohttp session (a new TCP and TLS connection) per reply; the
    bot's replies use the session its Web API client has."""
    from aiohttp import web

    from bot.policy_file import parse_policy
    from bot.slack.app import build_app
    from bot.slack.server import web_app
    from storage.db import Database
    from tests.conftest import POLICY
    from tests.services.stack import make_stack

    slack = FakeSlack(token="xoxb-t")
    slack.add_user("U1ALICE", "alice", email="alice@example.com")
    async with slack, aiohttp.ClientSession() as http:
        stack = await make_stack(Database(f"sqlite+aiosqlite:///{tmp_path}/r.db"),
                                 parse_policy(POLICY, source="test", env={}), clock)
        app = build_app(stack.rt, client=web_client("xoxb-t", slack.url, http), signing_secret="s",
                        process_before_response=True)
        runner = web.AppRunner(web_app(app, stack.rt, signing_secret="s"))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        sender = SlackSender(slack, f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", "s")
        opened: list[object] = []
        real_init = aiohttp.ClientSession.__init__

        def counting_init(self: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
            opened.append(self)
            real_init(self, *args, **kwargs)

        try:
            await sender.command("U1ALICE", "help")  # warm up: Bolt's auth.test, the sender's own session
            before = len(slack.ephemerals("U1ALICE"))
            monkeypatch.setattr(aiohttp.ClientSession, "__init__", counting_init)
            await sender.command("U1ALICE", "help")
            await sender.command("U1ALICE", "list")
            monkeypatch.undo()
            replies = slack.ephemerals("U1ALICE")[before:]
            assert [r.source for r in replies] == ["response_url"] * 2, replies
            assert "You have no access or requests." in replies[1].text
            assert opened == []
        finally:
            await sender.aclose()
            await runner.cleanup()
            await stack.rt.db.dispose()


async def test_messages_go_out_as_slack_sdk_would_send_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's chat.postMessage / chat.update skip slack_sdk's conversion of Block objects when the
    blocks are plain dicts; the request is the one slack_sdk's own method sends, None arguments left out.
    Block objects still go through slack_sdk's conversion."""
    from slack_sdk.models.blocks import SectionBlock
    from slack_sdk.web import async_client

    conversions: list[int] = []
    convert = async_client._parse_web_class_objects  # type: ignore[attr-defined]
    monkeypatch.setattr(async_client, "_parse_web_class_objects",
                        lambda kwargs: (conversions.append(1), convert(kwargs))[1])
    slack = FakeSlack(token="xoxb-t")
    slack.add_channel("C0AUDIT", "jit-audit")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    async with slack, aiohttp.ClientSession() as http:
        ours = web_client("xoxb-t", slack.url, http)
        theirs = async_client.AsyncWebClient(token="xoxb-t", base_url=slack.url, session=http)
        for client in (ours, theirs):
            posted = await client.chat_postMessage(channel="C0AUDIT", text="hi", blocks=blocks, thread_ts=None)
            await client.chat_update(channel="C0AUDIT", ts=posted["ts"], text="bye", blocks=blocks)
        assert conversions == [1, 1]  # slack_sdk's own client only
        await ours.chat_postMessage(channel="C0AUDIT", text="obj", blocks=[SectionBlock(text="*obj*")])
        assert conversions == [1, 1, 1]
    calls = [(c.method, {k: v for k, v in c.args.items() if k != "ts"}) for c in slack.calls()
             if c.method.startswith("chat.")]
    assert calls[:2] == calls[2:4]
    assert "thread_ts" not in calls[0][1] and calls[0][1]["blocks"] == blocks
    assert calls[4][1]["blocks"] == [{"type": "section", "text": {"type": "mrkdwn", "text": "*obj*"}}]
