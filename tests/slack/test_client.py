"""The Web API client every process builds (bot/slack/client.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import aiohttp
import pytest

from bot.fakes import FakeSlack
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
