"""``POST /jira/webhook`` against hostile input (bot/webhooks/jira.py): each refused with a plain status and
one warning line, no traceback, nothing checked. ``TicketWatch.check_now`` is replaced by a counter."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import bot.webhooks.jira as hook

SECRET = "s3cret"


def _sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestClient, list[str]]]:
    checked: list[str] = []

    async def check_now(self: object, key: str) -> int:
        checked.append(key)
        return 0

    monkeypatch.setattr(hook.TicketWatch, "check_now", check_now)
    app = web.Application()
    hook.add_routes(app, None, SECRET)  # type: ignore[arg-type]  # the runtime is only handed to check_now
    async with TestClient(TestServer(app)) as c:
        yield c, checked


async def test_an_unsigned_body_with_a_broken_content_encoding_is_refused_without_a_traceback(
        client: tuple[TestClient, list[str]], caplog: pytest.LogCaptureFixture) -> None:
    c, checked = client
    caplog.set_level(logging.INFO)
    r = await c.post(hook.PATH, data=b"not gzip at all", headers={hook.HEADER: "sha256=00",
                                                                  "Content-Encoding": "gzip"})
    assert r.status == 400
    assert not checked
    # one warning of ours; aiohttp itself still logs the undecodable rest of the body as it drains it
    ours = [rec for rec in caplog.records if rec.name.startswith("bot.")]
    assert [rec.levelno for rec in ours] == [logging.WARNING] and not ours[0].exc_info


async def test_a_signed_body_nested_past_the_parsers_depth_checks_nothing(
        client: tuple[TestClient, list[str]], caplog: pytest.LogCaptureFixture) -> None:
    c, checked = client
    body = b"[" * 100_000 + b"]" * 100_000
    r = await c.post(hook.PATH, data=body, headers={hook.HEADER: _sign(body)})
    assert r.status == 204
    assert not checked
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info]


async def test_a_body_over_the_limit_without_a_length_is_refused_unread(client: tuple[TestClient, list[str]]) -> None:
    c, checked = client

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(2048):
            yield b"x" * 1024

    r = await c.post(hook.PATH, data=chunks(), headers={hook.HEADER: "sha256=00"})
    assert r.status == 413 and not checked
