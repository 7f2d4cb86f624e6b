"""The operator's HTTP routes of ``serve``: ``/livez``, ``/readyz``, ``/healthz`` and ``/metrics``.

- ``/livez``: the process answers (its event loop runs). Nothing else: a liveness probe that failed on a
  database outage would restart healthy pods in a loop.
- ``/readyz``: this process can do its work: the database answers and, when this process runs a
  worker, that worker ticked within ``WORKER_STALE_S``. 503 otherwise (the pod leaves the Service).
- ``/healthz``: the detailed JSON view (database, heartbeat, overdue revocations, Slack link).
- ``/metrics``: bot/observability/metrics.py.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy import func, select

from bot.observability.metrics import DB_TIMEOUT_S, applied_version, exposition, oldest_overdue_s
from bot.services.runtime import Runtime
from storage.tables import WorkerHeartbeat

WORKER_STALE_S = 30.0


class SlackLink(Protocol):
    """What the probes read of the Slack connection (bot/slack/slack_link.py implements it)."""

    handler: object | None
    bot_refused: object | None

    def health(self) -> dict[str, str]: ...

    async def socket_status(self) -> str: ...


async def _ping(rt: Runtime) -> bool:
    try:
        async with asyncio.timeout(DB_TIMEOUT_S):
            return await rt.db.ping()
    except TimeoutError:
        return False


async def _heartbeat_age(rt: Runtime, worker_id: str | None = None) -> float | None:
    stmt = select(func.max(WorkerHeartbeat.beat_at))
    if worker_id is not None:
        stmt = stmt.where(WorkerHeartbeat.worker_id == worker_id)  # type: ignore[arg-type]
    async with rt.db.sessions() as session:
        beat = (await session.execute(stmt)).scalar()
    return max(0.0, (rt.clock.now() - beat).total_seconds()) if beat else None


def add_ops_routes(application: web.Application, rt: Runtime, *, link: SlackLink | None = None,
                   worker_id: str | None = None) -> None:
    """Add the four routes. ``worker_id``: the worker this process runs (readiness waits for its
    heartbeat); ``link``: the Slack connection's state (bot/slack/slack_link.py)."""

    async def livez(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        if not await _ping(rt):
            return web.json_response({"status": "unready", "database": "unreachable"}, status=503)
        body: dict[str, Any] = {"status": "ready", "database": "ok"}
        if worker_id is not None:
            try:
                async with asyncio.timeout(DB_TIMEOUT_S):
                    age = await _heartbeat_age(rt, worker_id)
            except Exception:  # the database went away between the two reads
                return web.json_response({"status": "unready", "database": "unreachable"}, status=503)
            body["worker_heartbeat_age_s"] = None if age is None else round(age, 1)
            if age is None or age > WORKER_STALE_S:
                body["status"] = "unready"
                return web.json_response(body, status=503)
        return web.json_response(body)

    async def healthz(_: web.Request) -> web.Response:
        db_ok = await _ping(rt)
        age: float | None = None
        oldest = 0.0
        applied: int | None = None
        if db_ok:
            age = await _heartbeat_age(rt)
            async with rt.db.sessions() as session:
                oldest = await oldest_overdue_s(session, rt.clock.now())
                applied = await applied_version(session)
        # 503 only when this process cannot work (no database): a restart would not fix an IdP outage,
        # so overdue revocations and a silent worker show as "degraded" (and in /metrics and alerts).
        slack: dict[str, str] = link.health() if link is not None else {}
        if link is not None and link.handler is not None:
            slack["socket_mode"] = await link.socket_status()
        # behind the applied policy: it refuses decisions until it has loaded it (services/policy_version.py)
        behind = rt.follower is not None and applied is not None and applied > rt.policy_version
        guard = rt.clock_guard  # beyond the skew bound the worker does nothing judged by time (clock_guard.py)
        skew = round(guard.skew.total_seconds(), 3) if guard is not None and guard.skew is not None else None
        degraded = (oldest > 60 or (age is not None and age > WORKER_STALE_S) or "slack_bot_token" in slack
                    or slack.get("socket_mode", "connected") != "connected" or behind
                    or (guard is not None and not guard.ok))
        body = {"status": "unavailable" if not db_ok else "degraded" if degraded else "ok",
                "database": "ok" if db_ok else "unreachable", "worker_heartbeat_age_s": age,
                "oldest_overdue_revocation_s": round(oldest, 1), "policy_version": rt.policy_version,
                "policy_sha256": rt.loaded.sha256[:12], "policy_applied_version": applied,
                "clock_skew_s": skew, **slack}
        return web.json_response(body, status=200 if db_ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        # the classic text format (0.0.4), which every Prometheus version reads
        local: dict[str, float] = {}
        if link is not None:
            local["jitbot_slack_bot_token_refused"] = int(link.bot_refused is not None)
            if link.handler is not None:
                local["jitbot_socket_mode_connected"] = int(await link.socket_status() == "connected")
        return web.Response(body=await exposition(rt, local=local), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    application.router.add_get("/livez", livez)
    application.router.add_get("/readyz", readyz)
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/metrics", metrics)
