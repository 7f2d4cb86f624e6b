"""The playground's world: the fake Slack workspace, the real bot on HTTP, its worker and its clock.

Everything a person does on the page goes to the bot as a signed Slack request through `SlackSender`;
everything the page shows is read back from `FakeSlack`'s state (what the bot posted through the Web API).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web

from bot.bootstrap import build_runtime, close_runtime
from bot.fakes import BotResponse, FakeSlack, Message, SlackSender, View, ViewInputError
from bot.governance.channel_check import approver_channels
from bot.playground.stepup import PlaygroundStepUp
from bot.playground.vendors import PlaygroundVendors
from bot.policy_file import LoadedPolicy
from bot.services.background.worker import Worker
from bot.services.clock import OffsetClock
from bot.services.outbox.dispatcher import OutboxDispatcher
from bot.services.runtime import Runtime
from bot.slack.app import build_app
from bot.slack.client import web_client
from bot.slack.notifier import SlackNotifier
from bot.slack.server import web_app

TOKEN = "xoxb-playground-token"
# The largest single step of a clock jump: warnings fire before expiries however far one jumps.
JUMP_STEP = timedelta(minutes=5)


@dataclass
class Persona:
    id: str
    name: str
    real_name: str
    email: str
    role: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "real_name": self.real_name, "email": self.email,
                "role": self.role}


def personas_from(loaded: LoadedPolicy) -> list[Persona]:
    """One persona per person the memory connectors know, with the role the policy gives them."""
    policy = loaded.policy
    people: dict[str, str] = {}
    groups: dict[str, set[str]] = {}
    for settings in policy.connectors.values():
        if settings.get("type") != "memory":
            continue
        for user in settings.get("users") or []:
            people.setdefault(str(user["email"]), str(user.get("name") or user["email"].split("@")[0]))
        for group, members in (settings.get("groups") or {}).items():
            groups.setdefault(str(group), set()).update(str(m) for m in members or [])

    def within(groups_: tuple[str, ...], users: tuple[str, ...], email: str) -> bool:
        return email in users or any(email in groups.get(g, set()) for g in groups_)

    out: list[Persona] = []
    for email, real_name in people.items():
        roles: list[str] = []
        if within(policy.admins.groups, policy.admins.users, email):
            roles.append("admin")
        layers = sorted({n for e in policy.eligibilities for n, layer in enumerate(e.approvals, 1)
                         if within(layer.approvers.groups, layer.approvers.users, email)})
        roles += [f"layer-{n} approver" for n in layers]
        if any(within(e.requestors.groups, e.requestors.users, email) for e in policy.eligibilities):
            roles.append("requester")
        name = email.split("@")[0].lower()
        slack_id = "U0" + "".join(c for c in name.upper() if c.isalnum())[:9]
        out.append(Persona(slack_id, name, real_name, email, ", ".join(roles) or "member"))
    order = {"requester": 0, "layer-1 approver": 1, "layer-2 approver": 2, "layer-3 approver": 3, "admin": 4}
    out.sort(key=lambda p: (min(order.get(r, 9) for r in p.role.split(", ")), p.name))
    return out


def _message(m: Message, replies: list[Message] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"ts": m.ts, "text": m.text, "blocks": m.blocks, "user": m.user,
                           "bot": m.bot_id is not None, "edited": bool(m.edits)}
    if replies is not None:
        out["replies"] = [_message(r) for r in replies]
    return out


def _view(v: View) -> dict[str, Any]:
    return {"id": v.id, "hash": v.hash, "type": v.type, "title": v.body.get("title"),
            "submit": v.body.get("submit"), "close": v.body.get("close"), "blocks": v.blocks,
            "errors": v.errors}


class Playground:
    """Start with `start()`, stop with `aclose()`. Methods mirror what a person can do in Slack."""

    def __init__(self, loaded: LoadedPolicy, database_url: str) -> None:
        self.loaded, self.database_url = loaded, database_url
        self.clock = OffsetClock()
        self.personas = personas_from(loaded)
        self.audit_channel = loaded.policy.audit_channel
        self.slack = FakeSlack(token=TOKEN, clock=lambda: self.clock.now().timestamp())
        self.signing_secret = secrets.token_hex(16)
        self._rt: Runtime | None = None
        self._worker: Worker | None = None
        self._runner: web.AppRunner | None = None
        self._sender: SlackSender | None = None
        requester = next((p.email for p in self.personas if "requester" in p.role.split(", ")), None)
        # PagerDuty and Jira for the policy's context connectors (bot/playground/vendors.py)
        self.vendors = PlaygroundVendors(loaded, self.clock, [p.email for p in self.personas], requester)
        # an OpenID Connect provider for the policy's step-up approvals (bot/playground/stepup.py)
        self.step_up = PlaygroundStepUp(loaded, self.clock, [p.email for p in self.personas])
        self.bot_url = ""

    @property
    def rt(self) -> Runtime:
        assert self._rt is not None, "the playground is not started"
        return self._rt

    @property
    def worker(self) -> Worker:
        assert self._worker is not None, "the playground is not started"
        return self._worker

    @property
    def sender(self) -> SlackSender:
        assert self._sender is not None, "the playground is not started"
        return self._sender

    async def start(self) -> Playground:
        for p in self.personas:
            self.slack.add_user(p.id, p.name, real_name=p.real_name, email=p.email)
        self.slack.add_channel(self.audit_channel, "jit-audit")
        for channel in approver_channels(self.loaded.policy):  # everyone is in each approver channel
            name = channel[1:] if channel.startswith("#") else f"approvals-{channel.lower()}"
            cid = channel if not channel.startswith("#") else "C0" + hashlib.sha1(name.encode()).hexdigest()[:9].upper()
            self.slack.add_channel(cid, name, members=[p.id for p in self.personas])
        await self.slack.start()
        self.loaded = await self.vendors.start()
        await self.step_up.start()
        self._rt = await build_runtime(self.loaded, self.database_url, clock=self.clock)
        client = web_client(TOKEN, self.slack.url, None)
        notifier = SlackNotifier(client, self.rt.db, audit_channel=self.audit_channel,
                                 security_channel=self.loaded.policy.security_channel, clock=self.clock)
        self._worker = Worker(self.rt, OutboxDispatcher(self.rt.db, notifier, self.clock), worker_id="playground")
        # process_before_response: the bot's answer comes back after its listener ran, so the page
        # shows the result of a click as soon as the click returns.
        app = build_app(self.rt, client=client, signing_secret=self.signing_secret, process_before_response=True)
        self._runner = web.AppRunner(web_app(app, self.rt, signing_secret=self.signing_secret), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        bot_port = self._runner.addresses[0][1]
        self.bot_url = f"http://127.0.0.1:{bot_port}"
        # the bot's address is known now: step-up links point at it, the providers at their fakes
        self.rt.loaded = self.step_up.point(self.rt.loaded, self.bot_url)
        self._sender = SlackSender(self.slack, f"http://127.0.0.1:{bot_port}/slack/events", self.signing_secret)
        self.worker.start()
        return self

    async def aclose(self) -> None:
        if self._worker is not None:
            await self._worker.stop()
        if self._sender is not None:
            await self._sender.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.slack.stop()
        await self.vendors.aclose()
        await self.step_up.aclose()
        if self._rt is not None:
            await close_runtime(self._rt)
        self._rt = self._worker = self._runner = self._sender = None

    def persona(self, user_id: str) -> Persona:
        for p in self.personas:
            if p.id == user_id:
                return p
        raise KeyError(f"unknown persona {user_id!r}")

    # what the page shows ----------------------------------------------------------------------------
    def state(self, user_id: str) -> dict[str, Any]:
        self.persona(user_id)
        dm = self.slack.im_channel(user_id)
        audit = [_message(m, self.slack.thread(self.audit_channel, m.ts))
                 for m in self.slack.messages(self.audit_channel, include_replies=False)]
        home = self.slack.home(user_id)
        names = {u.id: u.real_name for u in self.slack.state.users.values()}
        return {
            "now": self.clock.now().isoformat(), "offset_s": self.clock.offset.total_seconds(),
            "user": user_id, "personas": [p.to_json() for p in self.personas], "names": names,
            "bot_user": self.slack.state.bot_user_id, "dm_channel": dm, "audit_channel": self.audit_channel,
            "dms": [_message(m) for m in (self.slack.messages(dm) if dm else [])],
            "ephemerals": [{"ts": e.message_ts, "channel": e.channel, "text": e.text, "blocks": e.blocks}
                           for e in self.slack.ephemerals(user_id)],
            "modals": [_view(v) for v in self.slack.modal_stack(user_id)],
            "home": _view(home) if home is not None else None,
            "audit": audit,
            "channels": [{"id": c.id, "name": c.name,
                          "messages": [_message(m, self.slack.thread(c.id, m.ts))
                                       for m in self.slack.messages(c.id, include_replies=False)]}
                         for c in self.slack.state.channels.values()
                         if not c.is_im and c.id != self.audit_channel and user_id in c.members],
        }

    # what a person does -----------------------------------------------------------------------------
    async def settle(self) -> None:
        """Let the worker send everything that is due now, so that the page shows the outcome."""
        await self.worker.run_until_idle()

    @staticmethod
    def _result(res: BotResponse | None) -> dict[str, Any]:
        if res is None:
            return {"ok": True}
        problem = res.slack_error or (None if res.status == 200 else f"the bot answered HTTP {res.status}")
        return {"ok": problem is None, "error": problem}

    async def command(self, user_id: str, text: str) -> dict[str, Any]:
        words = text.strip().split(maxsplit=1)
        if not words or not words[0].startswith("/"):
            return {"ok": False, "error": "Type a slash command, e.g. /jit"}
        if words[0] != "/jit":
            return {"ok": False, "error": f"{words[0]} is not a valid command (try /jit)"}
        res = await self.sender.command(self.persona(user_id).id, words[1] if len(words) > 1 else "")
        await self.settle()
        return self._result(res)

    async def click(self, user_id: str, channel: str, ts: str, action_id: str, block_id: str | None,
                    choice: Any = None) -> dict[str, Any]:
        res = await self.sender.click(self.persona(user_id).id, channel, ts, action_id, block_id=block_id,
                                      choice=choice)
        await self.settle()
        return self._result(res)

    async def click_in_view(self, user_id: str, view_id: str, action_id: str, block_id: str | None,
                            choice: Any = None, values: dict[str, Any] | None = None) -> dict[str, Any]:
        res = await self.sender.click_in_view(self.persona(user_id).id, view_id, action_id, block_id=block_id,
                                              choice=choice, values=values or {})
        await self.settle()
        return self._result(res)

    async def submit(self, user_id: str, view_id: str, values: dict[str, Any]) -> dict[str, Any]:
        try:
            res = await self.sender.submit_view(self.persona(user_id).id, view_id, values)
        except ViewInputError as exc:  # Slack's client refuses before anything is sent
            view = self.slack.view(view_id)
            if view is not None:
                view.errors = dict(exc.errors)
            return {"ok": True, "client_errors": exc.errors}
        await self.settle()
        return self._result(res)

    async def close_view(self, user_id: str, view_id: str) -> dict[str, Any]:
        res = await self.sender.close_view(self.persona(user_id).id, view_id)
        await self.settle()
        return self._result(res)

    async def open_home(self, user_id: str) -> dict[str, Any]:
        res = await self.sender.open_home(self.persona(user_id).id)
        return self._result(res)

    async def jump(self, minutes: int) -> dict[str, Any]:
        """Move the bot's clock forward, in steps, letting the worker act at each step (warnings,
        expiries, revocations, lapsed approvals happen in the order they would have)."""
        remaining = timedelta(minutes=max(0, min(minutes, 60 * 24 * 7)))
        while remaining > timedelta(0):
            step = min(remaining, JUMP_STEP)
            self.clock.advance(step)
            remaining -= step
            await self.settle()
        return {"ok": True, "now": self.clock.now().isoformat()}
