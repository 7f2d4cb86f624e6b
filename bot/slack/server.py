"""``jitbot serve``: Bolt over aiohttp (HTTP mode) or Socket Mode, plus /healthz, /metrics and the worker."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from sqlalchemy import func, select

from bot import event_loop, gc_tuning
from bot.bootstrap import build_runtime, close_runtime
from bot.events import stream as event_stream
from bot.events.metrics import sink_lag_lines
from bot.governance.reload import PolicyReloader, refuse, startup_policy
from bot.notify.fallback import with_email
from bot.services.outbox import OutboxDispatcher
from bot.services.runtime import Runtime
from bot.services.worker import Worker
from bot.settings import SettingsError, load_settings
from bot.slack.access_log import runner_options
from bot.slack.app import build_app
from bot.slack.client import web_client
from bot.slack.notifier import SlackNotifier
from bot.slack.request_body import bolt_request as bolt_request_of
from bot.slack.slack_link import SlackLink
from bot.stepup.web import add_routes as add_step_up_routes
from storage.tables import AccessRequest, Grant, OutboxMessage, WorkerHeartbeat

log = logging.getLogger(__name__)


def slack_handler(app: AsyncApp) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler that hands a Slack request to Bolt and Bolt's answer back."""

    async def slack_events(request: web.Request) -> web.Response:
        bolt_request = await bolt_request_of(request)
        bolt_response = await app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    return slack_events


def web_app(app: AsyncApp, rt: Runtime, *, path: str = "/slack/events", slack_route: bool = True,
            link: SlackLink | None = None) -> web.Application:
    """The HTTP surface: Slack requests (only when a signing secret verifies them), health and metrics.
    ``link`` (bot/slack/slack_link.py): whether Slack refused a token and, in Socket Mode, whether the
    WebSocket is up — while it is not, no request reaches this process — so health says so."""
    slack_events = slack_handler(app)

    async def healthz(_: web.Request) -> web.Response:
        db_ok = await rt.db.ping()
        age: float | None = None
        oldest = 0.0
        if db_ok:
            async with rt.db.sessions() as session:
                beat = (await session.execute(select(func.max(WorkerHeartbeat.beat_at)))).scalar()
                oldest = await oldest_overdue_s(session)
            age = (rt.clock.now() - beat).total_seconds() if beat else None
        # 503 only when this process cannot work (no database): a restart would not fix an IdP outage,
        # so overdue revocations and a silent worker show as "degraded" (and in /metrics and alerts).
        slack: dict[str, str] = link.health() if link is not None else {}
        if link is not None and link.handler is not None:
            slack["socket_mode"] = await link.socket_status()
        degraded = (oldest > 60 or (age is not None and age > 30) or "slack_bot_token" in slack
                    or slack.get("socket_mode", "connected") != "connected")
        body = {"status": "unavailable" if not db_ok else "degraded" if degraded else "ok",
                "database": "ok" if db_ok else "unreachable", "worker_heartbeat_age_s": age,
                "oldest_overdue_revocation_s": round(oldest, 1), **slack}
        return web.json_response(body, status=200 if db_ok else 503)

    async def oldest_overdue_s(session: Any) -> float:
        now = rt.clock.now()
        first = (await session.execute(select(func.min(Grant.expires_at)).where(
            Grant.status.in_(["active", "revoking"]), Grant.expires_at < now))).scalar()  # type: ignore[attr-defined]
        return max(0.0, (now - first).total_seconds()) if first else 0.0

    async def metrics(_: web.Request) -> web.Response:
        lines = []
        async with rt.db.sessions() as session:
            for status, count in (await session.execute(select(AccessRequest.status, func.count())
                                                        .group_by(AccessRequest.status))).all():
                lines.append(f'jitbot_requests{{status="{status}"}} {count}')
            for status, count in (await session.execute(select(Grant.status, func.count())
                                                        .group_by(Grant.status))).all():
                lines.append(f'jitbot_grants{{status="{status}"}} {count}')
            now = rt.clock.now()
            overdue = (await session.execute(select(func.count()).select_from(Grant).where(
                Grant.status.in_(["active", "revoking"]), Grant.expires_at < now))).scalar()  # type: ignore[attr-defined]
            pending = (await session.execute(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.status == "pending"))).scalar()
            oldest = await oldest_overdue_s(session)
        lines += [f"jitbot_revocations_overdue {overdue}", f"jitbot_revocation_oldest_overdue_seconds {oldest:.1f}",
                  f"jitbot_outbox_pending {pending}"]
        lines += await sink_lag_lines(rt.db, rt.policy.event_sinks, rt.clock.now())
        if link is not None:
            lines.append(f"jitbot_slack_bot_token_refused {int(link.bot_refused is not None)}")
            if link.handler is not None:
                lines.append(f"jitbot_socket_mode_connected {int(await link.socket_status() == 'connected')}")
        return web.Response(text="\n".join(["# TYPE jitbot_requests gauge", *lines]) + "\n",
                            content_type="text/plain")

    web_application = web.Application()
    if slack_route:
        web_application.router.add_post(path, slack_events)
    web_application.router.add_get("/healthz", healthz)
    web_application.router.add_get("/metrics", metrics)
    add_step_up_routes(web_application, rt)  # /step-up/…: approvals that need a fresh sign-in
    return web_application


async def run_server(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        settings.require_slack()
    except SettingsError as exc:
        print(f"jitbot: {exc}", file=sys.stderr)
        return 2
    assert settings.SLACK_BOT_TOKEN is not None
    path = str(args.policy or settings.JITBOT_POLICY)
    loaded, problems = await startup_policy(settings.DATABASE_URL, path)
    if loaded is None:
        print("jitbot: " + "\n".join(problems), file=sys.stderr)
        return 2
    rt = await build_runtime(loaded, settings.DATABASE_URL, instance_id=settings.JITBOT_INSTANCE_ID,
                             pool_size=settings.JITBOT_DB_POOL_SIZE)
    rt.outbox_retention = settings.outbox_retention()
    reloader = PolicyReloader(rt, path)
    if problems:  # running on the last good policy from the database
        await refuse(rt, path, problems)
    else:
        await reloader.reload()
    http = aiohttp.ClientSession()
    client = web_client(settings.SLACK_BOT_TOKEN.get_secret_value(), settings.SLACK_API_URL, http)
    # Without a signing secret (Socket Mode only) no HTTP route accepts Slack requests at all; the
    # placeholder secret below is never used to verify anything.
    http_events = settings.SLACK_SIGNING_SECRET is not None
    secret = settings.SLACK_SIGNING_SECRET.get_secret_value() if settings.SLACK_SIGNING_SECRET else "unused"
    app = build_app(rt, client=client, signing_secret=secret)
    worker: Worker | None = None
    events: event_stream.Running | None = None
    if not args.no_worker:
        notifier = with_email(SlackNotifier(client, rt.db, audit_channel=rt.policy.audit_channel,
                                            security_channel=rt.policy.security_channel), rt)
        worker = Worker(rt, OutboxDispatcher(rt.db, notifier, rt.clock,
                                             lane_interval=settings.JITBOT_AUDIT_CHANNEL_INTERVAL))
        worker.start()
        # the SIEM sinks: their own task, apart from the outbox (bot/events/)
        events = event_stream.start(rt.db, lambda: rt.policy.event_sinks, rt.clock, http=http, owner=rt.instance_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloader.install(loop)
    runner: web.AppRunner | None = None
    handler: Any = None
    link: SlackLink | None = None
    try:
        if args.socket_mode or settings.SLACK_APP_TOKEN is not None:
            from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

            if settings.SLACK_APP_TOKEN is None:
                print("jitbot: SLACK_APP_TOKEN is not set (needed for --socket-mode)", file=sys.stderr)
                return 2
            handler = AsyncSocketModeHandler(app, settings.SLACK_APP_TOKEN.get_secret_value())
        link = SlackLink(client, handler, settings.SLACK_APP_TOKEN.get_secret_value() if handler else None)
        link.start()  # in the background: the tokens checked, the socket connected (bot/slack/slack_link.py)
        runner = web.AppRunner(web_app(app, rt, slack_route=http_events, link=link),
                               **runner_options(settings.JITBOT_ACCESS_LOG))
        await runner.setup()
        port = args.port or settings.PORT
        await web.TCPSite(runner, "0.0.0.0", port).start()
        log.info("jitbot listening on :%d (POST /slack/events, GET /healthz, GET /metrics)", port)
        gc_tuning.settle(settings.JITBOT_GC)  # start-up is over: its objects stay (bot/gc_tuning.py)
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        if link is not None:
            await link.close()
        if runner is not None:
            await runner.cleanup()
        if worker is not None:
            await worker.stop()
        if events is not None:
            await events.stop()
        await http.close()
        await close_runtime(rt)
    return 0


def serve_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return event_loop.run(run_server(args))


def health_json(body: dict[str, Any]) -> str:
    return json.dumps(body)
