"""``jitbot serve``: Bolt over aiohttp (HTTP mode) or Socket Mode, plus /healthz, /metrics and the worker."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp

from bot import __version__, event_loop, gc_tuning
from bot.bootstrap import build_runtime, close_runtime
from bot.events import stream as event_stream
from bot.governance.reload import PolicyReloader, refuse, startup_policy
from bot.notify.fallback import with_email
from bot.observability.probes import add_ops_routes
from bot.services.background.worker import Worker
from bot.services.outbox.dispatcher import OutboxDispatcher
from bot.services.runtime import Runtime
from bot.settings import SettingsError, load_settings
from bot.slack.access_log import runner_options
from bot.slack.app import build_app
from bot.slack.client import web_client
from bot.slack.notifier import SlackNotifier
from bot.slack.request_body import MalformedBody, body_text
from bot.slack.request_body import bolt_request as bolt_request_of
from bot.slack.signature import refusal
from bot.slack.slack_link import SlackLink
from bot.stepup.web import add_routes as add_step_up_routes
from bot.webhooks.jira import add_routes as add_jira_webhook

log = logging.getLogger(__name__)


def slack_handler(app: AsyncApp, signing_secret: str, *,
                  now: Callable[[], float] = time.time) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler that hands a Slack request to Bolt and Bolt's answer back. The signature is
    checked on the raw bytes first (bot/slack/signature.py): a request that is not Slack's is answered
    401 before any of it is decoded or parsed; a signed one that is malformed, 400. Each refusal is one
    warning line (no request content in it)."""
    secret = signing_secret.encode()

    async def slack_events(request: web.Request) -> web.Response:
        raw = await request.read()
        reason = refusal(secret, request.headers, raw, now=now())
        if reason is not None:
            log.warning("refused a Slack request from %s: %s", request.remote, reason)
            return web.Response(status=401)
        try:
            bolt_request = bolt_request_of(request, body_text(raw, request.charset))
        except MalformedBody as exc:
            log.warning("refused a Slack request from %s: signed, but %s", request.remote, exc)
            return web.Response(status=400)
        bolt_response = await app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    return slack_events


def web_app(app: AsyncApp, rt: Runtime, *, signing_secret: str | None, path: str = "/slack/events",
            link: SlackLink | None = None, worker_id: str | None = None,
            jira_webhook_secret: str | None = None) -> web.Application:
    """The HTTP surface: Slack requests (only with a ``signing_secret`` to verify them), and the probes and
    metrics (bot/observability/probes.py). ``link`` (bot/slack/slack_link.py): whether Slack refused a
    token and, in Socket Mode, whether the WebSocket is up — while it is not, no request reaches this
    process — so health says so. ``worker_id``: the worker this process runs, for readiness."""

    web_application = web.Application()
    if signing_secret is not None:
        web_application.router.add_post(path, slack_handler(app, signing_secret))
    add_ops_routes(web_application, rt, link=link, worker_id=worker_id)
    add_step_up_routes(web_application, rt)  # /step-up/…: approvals that need a fresh sign-in
    add_jira_webhook(web_application, rt, jira_webhook_secret)  # /jira/webhook, when a secret is set
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
    await reloader.catch_up()  # whatever the database has applied since (or the last good one, versioned)
    reloader.follow()  # every replica runs the applied version (bot/services/policy_version.py)
    http = aiohttp.ClientSession()
    client = web_client(settings.SLACK_BOT_TOKEN.get_secret_value(), settings.SLACK_API_URL, http)
    # Without a signing secret (Socket Mode only) no HTTP route accepts Slack requests at all; the
    # placeholder secret below is never used to verify anything.
    secret = settings.SLACK_SIGNING_SECRET.get_secret_value() if settings.SLACK_SIGNING_SECRET else None
    app = build_app(rt, client=client, signing_secret=secret or "unused")
    worker: Worker | None = None
    events: event_stream.Running | None = None
    if not args.no_worker:
        notifier = with_email(SlackNotifier(client, rt.db, audit_channel=rt.policy.audit_channel,
                                            security_channel=rt.policy.security_channel, clock=rt.clock), rt)
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
        runner = web.AppRunner(web_app(app, rt, signing_secret=secret, link=link,
                                       worker_id=worker.worker_id if worker is not None else None,
                                       jira_webhook_secret=settings.JIRA_WEBHOOK_SECRET.get_secret_value()
                                       if settings.JIRA_WEBHOOK_SECRET else None),
                               **runner_options(settings.JITBOT_ACCESS_LOG))
        await runner.setup()
        port = args.port or settings.PORT
        await web.TCPSite(runner, settings.HOST, port).start()
        log.info("jitbot %s listening on %s:%d (POST /slack/events, GET /livez /readyz /healthz /metrics)",
                 __version__, settings.HOST, port)
        gc_tuning.settle(settings.JITBOT_GC)  # start-up is over: its objects stay (bot/gc_tuning.py)
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        await reloader.stop_following()
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
    from bot.observability.logs import configure_from_settings

    configure_from_settings()
    return event_loop.run(run_server(args))


def health_json(body: dict[str, Any]) -> str:
    return json.dumps(body)
