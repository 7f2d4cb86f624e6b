"""The database going away (PostgreSQL behind a proxy that is cut): nothing is lost or doubled, people
are told, /healthz says so, and the worker catches up on its own once the database is back."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.services.auditing.audit import verify_chain
from bot.services.clock import ManualClock
from bot.slack.listeners import UNAVAILABLE
from storage.db import Database
from storage.tables import Event
from tests import pg
from tests.conftest import _drop_pg_schema, _pg_schema
from tests.fakes.tcp_proxy import TcpProxy
from tests.slack.harness import slack_env
from tests.slack.test_scenarios import _click, _request

pytestmark = pytest.mark.postgres


async def _until(condition, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _health(base: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as res:
        return res.status


async def test_database_outage_delays_revocation_until_it_is_back_and_loses_nothing(
        policy_text: str, clock: ManualClock) -> None:
    schema = await _pg_schema()
    host, port = pg.address()
    async with TcpProxy(host, port) as proxy:
        db = Database(pg.url_at("127.0.0.1", proxy.port), schema=schema)
        try:
            async with slack_env(db, policy_text, clock) as env:
                base = env.sender.bot_url.removesuffix("/slack/events")
                await _request(env)
                await _click(env, "U2BOB", "jit_approve")
                await _click(env, "U4DAVE", "jit_approve")
                assert await env.stack.is_member("alice@example.com", "prod-admins")
                worker = env.stack.worker
                worker.start(interval=0.05)  # the production loop: ticks that fail must not stop it
                try:
                    proxy.cut()
                    clock.advance(timedelta(hours=1, minutes=1))  # the grant is now overdue
                    refused = proxy.refused

                    async def retried() -> bool:
                        return proxy.refused >= refused + 3

                    await _until(retried, "the worker to keep trying while the database is down")
                    assert await _health(base) == 503

                    # A person acting meanwhile is told that nothing happened, instead of silence.
                    # (The harness runs Bolt with process_before_response, so the HTTP status is the
                    # handler's; in production the ack has already gone out.)
                    await env.sender.command("U5ERIN", "")
                    assert any(m.text == UNAVAILABLE for m in env.slack.dm_messages("U5ERIN"))

                    proxy.restore()

                    async def revoked() -> bool:
                        return not await env.stack.is_member("alice@example.com", "prod-admins")

                    await _until(revoked, "the overdue revocation after the database came back")
                finally:
                    await worker.stop()
                assert await _health(base) == 200
                async with db.sessions() as session:
                    kinds = (await session.execute(select(Event.kind, func.count()).group_by(Event.kind))).all()
                counts = dict(kinds)
                assert counts.get("expired") == 1 and counts.get("granted") == 1, counts  # once, despite failed ticks
                assert (await verify_chain(db)).ok
        finally:
            await db.dispose()
            await _drop_pg_schema(schema)
