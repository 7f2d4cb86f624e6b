"""/livez, /readyz and /metrics as an operator's probes and scraper see them, the database up and down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.observability.probes import add_ops_routes
from bot.policy_file import LoadedPolicy
from bot.services.clock import ManualClock
from bot.services.runtime import Runtime
from storage.db import Database
from tests.conftest import DbFactory
from tests.observability.expo import samples
from tests.services.stack import make_stack

DOWN = "postgresql+asyncpg://postgres@127.0.0.1:1/none"  # nothing listens there: refused at once


@asynccontextmanager
async def _served(rt: Runtime, worker_id: str | None = None) -> AsyncIterator[str]:
    application = web.Application()
    add_ops_routes(application, rt, worker_id=worker_id)
    server = TestServer(application)
    await server.start_server()
    try:
        yield str(server.make_url(""))
    finally:
        await server.close()


async def _get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as res:
        return res.status, res.headers.get("Content-Type", ""), await res.text()


async def test_metrics_have_types_and_zero_valued_series_from_the_start(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    await s.worker.run_until_idle()
    clock.advance(timedelta(seconds=7))
    async with _served(s.rt) as base:
        status, content_type, text = await _get(f"{base}/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    got = samples(text)
    for name in ("jitbot_database_up", "jitbot_requests", "jitbot_grants", "jitbot_revocations_overdue",
                 "jitbot_revocation_oldest_overdue_seconds", "jitbot_outbox_pending", "jitbot_grants_retrying",
                 "jitbot_worker_heartbeat_age_seconds"):
        assert f"# TYPE {name} gauge" in text
    assert got[("jitbot_database_up", ())] == 1
    assert got[("jitbot_requests", (("status", "failed"),))] == 0  # present before the first failure
    assert {dict(k[1])["status"] for k in got if k[0] == "jitbot_requests"} >= {"pending", "active", "failed"}
    assert got[("jitbot_grants", (("status", "revoking"),))] == 0
    assert got[("jitbot_worker_heartbeat_age_seconds", ())] == 7.0


async def test_with_the_database_down_metrics_answer_livez_lives_and_readyz_is_unready(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    down = replace(s.rt, db=Database(DOWN))
    try:
        async with _served(down, worker_id="w1") as base:
            status, _, text = await _get(f"{base}/metrics")
            assert status == 200 and samples(text)[("jitbot_database_up", ())] == 0
            assert "jitbot_requests" not in text  # nothing made up while the database is away
            assert (await _get(f"{base}/livez"))[0] == 200  # never restarted for a database outage
            status, _, body = await _get(f"{base}/readyz")
            assert status == 503 and '"database": "unreachable"' in body
    finally:
        await down.db.dispose()


async def test_readyz_waits_for_this_process_worker_and_goes_unready_when_it_stops_ticking(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    async with _served(s.rt, worker_id=s.worker.worker_id) as base:
        assert (await _get(f"{base}/readyz"))[0] == 503  # its worker has not ticked yet
        await s.worker.run_until_idle()
        status, _, body = await _get(f"{base}/readyz")
        assert status == 200 and '"status": "ready"' in body
        clock.advance(timedelta(seconds=31))
        assert (await _get(f"{base}/readyz"))[0] == 503
        assert (await _get(f"{base}/livez"))[0] == 200
    async with _served(s.rt) as base:  # serve --no-worker: the database is enough
        assert (await _get(f"{base}/readyz"))[0] == 200
