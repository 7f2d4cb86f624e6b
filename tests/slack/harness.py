"""The real Bolt app on aiohttp, its Web API client pointed at the strict fake Slack, a clock we control."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.fakes import FakeSlack, SlackSender
from bot.policy_file import parse_policy
from bot.services.background.worker import Worker
from bot.services.clock import ManualClock
from bot.services.outbox.dispatcher import OutboxDispatcher
from bot.slack.app import build_app
from bot.slack.notifier import SlackNotifier
from bot.slack.server import web_app
from storage.db import Database
from tests.services.stack import Stack, make_stack

TOKEN = "xoxb-test-token"
SECRET = "test-signing-secret"
USERS = {"U1ALICE": "alice", "U2BOB": "bob", "U3CAROL": "carol", "U4DAVE": "dave", "U5ERIN": "erin",
         "U6ROOT": "root"}
AUDIT = "C0AUDIT"
SECURITY = "C0SECURITY"


@dataclass
class Env:
    slack: FakeSlack
    sender: SlackSender
    stack: Stack
    clock: ManualClock

    async def settle(self) -> None:
        """Let the worker do everything due now (grants, revokes, messages)."""
        await self.stack.worker.run_until_idle()

    def dms(self, user: str) -> list[str]:
        return [m.text for m in self.slack.dm_messages(user)]


@asynccontextmanager
async def slack_env(db: Database, policy_text: str, clock: ManualClock, *,
                    process_before_response: bool = True) -> AsyncIterator[Env]:
    loaded = parse_policy(policy_text.replace('"#jit-audit"', AUDIT), source="test", env={})
    slack = FakeSlack(token=TOKEN)
    for uid, name in USERS.items():
        slack.add_user(uid, name, real_name=name.title(), email=f"{name}@example.com")
    slack.add_user("U9BOTTY", "otherbot", is_bot=True)
    slack.add_channel(AUDIT, "jit-audit")
    slack.add_channel(SECURITY, "security")
    async with slack:
        stack = await make_stack(db, loaded, clock)
        client = AsyncWebClient(token=TOKEN, base_url=slack.url)
        notifier = SlackNotifier(client, stack.rt.db, audit_channel=AUDIT,
                                 security_channel=loaded.policy.security_channel, clock=clock)
        stack.worker = Worker(stack.rt, OutboxDispatcher(stack.rt.db, notifier, clock), worker_id="slack-test")
        app = build_app(stack.rt, client=client, signing_secret=SECRET,
                        process_before_response=process_before_response)
        runner = web.AppRunner(web_app(app, stack.rt, signing_secret=SECRET))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        sender = SlackSender(slack, f"http://127.0.0.1:{port}/slack/events", SECRET)
        try:
            yield Env(slack, sender, stack, clock)
        finally:
            await sender.aclose()
            await runner.cleanup()
