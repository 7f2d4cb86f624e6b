"""The HTTP server's access log (``JITBOT_ACCESS_LOG``): by default only the requests answered 4xx / 5xx."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp import web

from bot.slack.access_log import runner_options


async def ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def refused(_request: web.Request) -> web.Response:
    return web.Response(status=401, text="invalid signature")


@pytest.mark.parametrize(("mode", "logged"), [("failures", ["/refused", "/nowhere"]),
                                               ("all", ["/ok", "/refused", "/nowhere"]), ("off", [])])
async def test_the_access_log_keeps_what_the_setting_asks_for(mode: str, logged: list[str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/refused", refused)
    runner = web.AppRunner(app, **runner_options(mode))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    try:
        async with aiohttp.ClientSession() as client:
            for path in ("/ok", "/refused", "/nowhere"):
                async with client.get(f"http://127.0.0.1:{port}{path}") as response:
                    await response.read()
    finally:
        await runner.cleanup()
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert [next(p for p in ("/ok", "/refused", "/nowhere") if f"GET {p} " in line) for line in lines] == logged
