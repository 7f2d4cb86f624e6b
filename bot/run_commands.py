"""The commands that run or reach something: ``start``, ``worker``, ``connectors check``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from typing import Any

from bot import gc_tuning
from bot.cli_support import CliError, configured_policy, configured_settings, database_url, lazy_command
from bot.services.outbox.dispatcher import Delivery, Notifier
from bot.services.runtime import Runtime

log = logging.getLogger("jitbot")


def cmd_connectors_check(args: argparse.Namespace) -> int:
    loaded = configured_policy(args, connectors=False)
    names = [*loaded.policy.connectors, *loaded.policy.context_connectors]
    if args.name is not None:
        if args.name not in names:
            raise CliError(f"jitbot: no connector {args.name!r} in {loaded.path} (have: {', '.join(names)})", 2)
        names = [args.name]

    from bot.governance.connector_check import check_connectors

    report = asyncio.run(check_connectors(loaded.policy, names))
    print("\n".join(report.lines))
    return 0 if report.ok else 1


class LoggingNotifier:
    """Logs every outbox message instead of sending it (``jitbot worker --log-messages``: headless runs)."""

    async def deliver(self, kind: str, payload: dict[str, Any]) -> Delivery:
        log.info("notify %s %s", kind, json.dumps(payload, sort_keys=True, default=str)[:500])
        return Delivery()


def make_notifier(rt: Runtime, http: Any = None) -> Notifier:
    """Slack when ``SLACK_BOT_TOKEN`` is set; otherwise (``--log-messages`` only) messages are logged and
    counted as delivered."""
    settings = configured_settings()
    if settings.SLACK_BOT_TOKEN is None:
        log.warning("SLACK_BOT_TOKEN is not set: outbox messages are only logged (--log-messages)")
        return LoggingNotifier()
    from bot.notify.fallback import with_email
    from bot.slack.client import web_client
    from bot.slack.notifier import SlackNotifier

    client = web_client(settings.SLACK_BOT_TOKEN.get_secret_value(), settings.SLACK_API_URL, http)
    return with_email(SlackNotifier(client, rt.db, audit_channel=rt.policy.audit_channel,
                                    security_channel=rt.policy.security_channel, clock=rt.clock), rt)


def cmd_start(args: argparse.Namespace) -> int:
    """``make run``: the Slack bot when SLACK_BOT_TOKEN is set, else the local playground."""
    if configured_settings().SLACK_BOT_TOKEN is not None:
        args.socket_mode, args.no_worker = False, False
        return int(lazy_command("bot.slack.server", "serve_main")(args))
    args.port = args.port or 8080
    return int(lazy_command("bot.playground.main", "playground_main")(args))


async def run_worker(args: argparse.Namespace) -> int:
    from bot.bootstrap import build_runtime, close_runtime
    from bot.governance.reload import PolicyReloader
    from bot.services.background.worker import Worker
    from bot.services.outbox.dispatcher import OutboxDispatcher

    loaded = configured_policy(args)
    if configured_settings().SLACK_BOT_TOKEN is None and not args.log_messages:
        # Without Slack the messages would be logged and marked sent: lost for good. Only on request.
        raise CliError("jitbot: SLACK_BOT_TOKEN is not set, so the worker cannot deliver Slack messages; set it, "
                       "or pass --log-messages to log them instead (they are then marked sent)", 2)
    rt = await build_runtime(loaded, database_url(args), instance_id=configured_settings().JITBOT_INSTANCE_ID,
                             pool_size=configured_settings().JITBOT_DB_POOL_SIZE)
    rt.outbox_retention = configured_settings().outbox_retention()
    import aiohttp

    http = aiohttp.ClientSession()
    worker = Worker(rt, OutboxDispatcher(rt.db, make_notifier(rt, http), rt.clock,
                                         lane_interval=configured_settings().JITBOT_AUDIT_CHANNEL_INTERVAL))
    link = None
    if (token := configured_settings().SLACK_BOT_TOKEN) is not None:  # a token Slack refuses is said once, at start
        from bot.slack.client import web_client
        from bot.slack.slack_link import SlackLink

        link = SlackLink(web_client(token.get_secret_value(), configured_settings().SLACK_API_URL, http))
        link.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The worker runs the policy applied to the database (its file only until one is); SIGHUP re-reads
    # the file and applies it when valid and changed, as serve does (bot/governance/reload.py).
    reloader = PolicyReloader(rt, loaded.path, actor="jitbot worker")
    await reloader.catch_up()
    reloader.follow()
    reloader.install(loop)
    from bot.events import stream as event_stream

    events = None
    try:
        worker.start(interval=args.interval)
        events = event_stream.start(rt.db, lambda: rt.policy.event_sinks, rt.clock, http=http, owner=rt.instance_id)
        log.info("worker %s running on %s (policy %s); Ctrl-C stops it", worker.worker_id,
                 rt.db.url.split("@")[-1], loaded.path)
        gc_tuning.settle(configured_settings().JITBOT_GC)  # start-up is over: its objects stay (bot/gc_tuning.py)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await reloader.stop_following()
        await worker.stop()
        if events is not None:
            await events.stop()
        if link is not None:
            await link.close()
        await http.close()
        await close_runtime(rt)
    log.info("worker stopped after %d ticks", worker.ticks)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from bot import event_loop
    from bot.observability.logs import configure_from_settings

    configure_from_settings()
    return event_loop.run(run_worker(args))
