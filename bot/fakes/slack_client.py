"""Slack's side of the conversation: signed requests from the fake workspace to the bot.

`SlackSender` sends slash commands, ``block_actions``, ``view_submission`` / ``view_closed`` and
``event_callback`` envelopes to the bot's URL, shaped like Slack's documented payloads and signed
with the v0 scheme (``X-Slack-Signature``, ``X-Slack-Request-Timestamp``). It then does what Slack
does with the bot's answer: a command's ack body becomes an ephemeral message, a view submission's
``response_action`` updates, pushes, clears or annotates the modal stack in `FakeSlack`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from slack_sdk.signature import SignatureVerifier

from bot.fakes.blockkit import MAX_MESSAGE_BLOCKS, validate_blocks, validate_view
from bot.fakes.slack_api import FakeSlack
from bot.fakes.slack_payloads import action_payload, find_element, view_state
from bot.fakes.slack_state import MAX_MODAL_STACK, View

ACK_DEADLINE_S = 3.0


@dataclass
class BotResponse:
    """The bot's HTTP answer. ``body`` is parsed JSON when possible, else text (None when empty).
    ``slack_error`` says why Slack would refuse that answer (e.g. invalid view), if it would."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    slack_error: str | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.slack_error is None


class ViewInputError(ValueError):
    """Slack's client refused to submit the modal (required field empty, text too long)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(f"Slack would not submit this view: {errors}")
        self.errors = errors


class SlackSender:
    """Plays Slack towards the bot at ``bot_url`` (e.g. ``http://127.0.0.1:3000/slack/events``)."""

    def __init__(self, slack: FakeSlack, bot_url: str, signing_secret: str, *,
                 verification_token: str = "fake-verification-token",
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.slack, self.bot_url, self.signing_secret = slack, bot_url, signing_secret
        self.verification_token = verification_token
        # Signatures use the wall clock: the bot checks them against real time, whatever the
        # workspace clock (which drives ts and trigger expiry) says.
        self.wall_clock = wall_clock
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> SlackSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # transport -------------------------------------------------------------------------------------
    def sign(self, body: str, timestamp: str, secret: str | None = None) -> dict[str, str]:
        """The headers Slack adds: ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature`` (v0 HMAC)."""
        verifier = SignatureVerifier(secret if secret is not None else self.signing_secret)
        signature = verifier.generate_signature(timestamp=timestamp, body=body)
        assert signature is not None
        return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}

    async def post(self, body: str, content_type: str, *, secret: str | None = None,
                   timestamp: float | None = None, headers: Mapping[str, str] | None = None) -> BotResponse:
        """POST a signed body to the bot. ``secret`` / ``timestamp`` override to test rejection."""
        ts = str(int(self.wall_clock() if timestamp is None else timestamp))
        all_headers = {"Content-Type": content_type, "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
                       **self.sign(body, ts, secret), **(headers or {})}
        if self._session is None:
            self._session = aiohttp.ClientSession()
        started = time.monotonic()
        async with self._session.post(self.bot_url, data=body.encode(), headers=all_headers) as res:
            text = await res.text()
        elapsed = time.monotonic() - started
        parsed: Any = None
        if text:
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
        response = BotResponse(res.status, parsed, dict(res.headers), elapsed=elapsed)
        if elapsed > ACK_DEADLINE_S:  # Slack gives up and shows the user an error
            response.slack_error = f"operation_timeout: the bot answered after {elapsed:.1f} s"
        return response

    async def post_form(self, fields: Mapping[str, str], **kwargs: Any) -> BotResponse:
        return await self.post(urlencode(fields), "application/x-www-form-urlencoded", **kwargs)

    async def post_payload(self, payload: Mapping[str, Any], **kwargs: Any) -> BotResponse:
        """Interactivity: form field ``payload`` holding the JSON, as Slack sends it."""
        return await self.post_form({"payload": json.dumps(payload)}, **kwargs)

    async def post_event(self, envelope: Mapping[str, Any], **kwargs: Any) -> BotResponse:
        return await self.post(json.dumps(envelope), "application/json", **kwargs)

    # shapes ----------------------------------------------------------------------------------------
    def _user(self, user_id: str) -> dict[str, Any]:
        user = self.slack.state.users.get(user_id)
        if user is None:
            raise KeyError(f"unknown Slack user {user_id!r}: add it with FakeSlack.add_user")
        return {"id": user.id, "username": user.name, "name": user.name, "team_id": user.team_id}

    def _team(self) -> dict[str, Any]:
        return {"id": self.slack.state.team_id, "domain": self.slack.team_domain}

    def _channel(self, channel_id: str) -> dict[str, Any]:
        channel = self.slack.state.channels[channel_id]
        return {"id": channel.id, "name": "directmessage" if channel.is_im else channel.name}

    def _base(self, kind: str, user_id: str) -> dict[str, Any]:
        return {"type": kind, "user": self._user(user_id), "api_app_id": self.slack.state.app_id,
                "token": self.verification_token, "team": self._team(), "enterprise": None,
                "is_enterprise_install": False}

    # slash commands --------------------------------------------------------------------------------
    async def command(self, user_id: str, text: str = "", *, command: str = "/jit",
                      channel_id: str | None = None, **kwargs: Any) -> BotResponse:
        """Send a slash command typed in ``channel_id`` (default: the user's DM with the bot)."""
        user = self._user(user_id)
        channel = self.slack.state.channels[channel_id] if channel_id else self.slack.state.im_for(user_id)
        context = {"channel": channel.id, "user": user_id, "kind": "command"}
        fields = {
            "token": self.verification_token, "team_id": self.slack.state.team_id,
            "team_domain": self.slack.team_domain, "channel_id": channel.id,
            "channel_name": "directmessage" if channel.is_im else channel.name,
            "user_id": user_id, "user_name": user["name"], "command": command, "text": text,
            "api_app_id": self.slack.state.app_id, "is_enterprise_install": "false",
            "response_url": self.slack.issue_response_url(**context),
            "trigger_id": self.slack.issue_trigger(user_id),
        }
        response = await self.post_form(fields, **kwargs)
        if response.slack_error is not None:
            return response
        if response.status == 200 and isinstance(response.body, dict) and response.body:
            self._apply_ack_message(context, response)
        elif response.status == 200 and isinstance(response.body, str) and response.body:
            self.slack.apply_response(context, {"text": response.body}, [], source="command_ack")
        return response

    def _apply_ack_message(self, context: dict[str, Any], response: BotResponse) -> None:
        blocks = response.body.get("blocks") or []
        errors = validate_blocks(blocks, max_blocks=MAX_MESSAGE_BLOCKS) if blocks else []
        if errors:
            response.slack_error = f"invalid_blocks: {errors}"
            return
        self.slack.apply_response(context, response.body, blocks, source="command_ack")

    # block actions ---------------------------------------------------------------------------------
    async def click(self, user_id: str, channel: str, ts: str, action_id: str, *,
                    choice: Any = None, block_id: str | None = None, **kwargs: Any) -> BotResponse:
        """Click a button (or pick ``choice`` in a select/overflow/datepicker) in a stored message,
        or in an ephemeral message ``user_id`` sees (``ts`` = its ``message_ts``)."""
        message = self.slack.message(channel, ts)
        ephemeral = None if message is not None else self.slack.find_ephemeral(user_id, ts)
        if message is None and ephemeral is None:
            raise KeyError(f"no message {ts} in {channel} (nor an ephemeral one for {user_id})")
        blocks = message.blocks if message is not None else ephemeral.blocks if ephemeral else []
        bid, element = find_element(blocks, action_id, block_id)
        key = "message_ts" if message is not None else "ephemeral_ts"
        context = {"channel": channel, "user": user_id, key: ts, "kind": "block_actions"}
        payload: dict[str, Any] = {
            **self._base("block_actions", user_id),
            "container": {"type": "message", "message_ts": ts, "channel_id": channel,
                          "is_ephemeral": message is None},
            "trigger_id": self.slack.issue_trigger(user_id),
            "channel": self._channel(channel), "state": {"values": {}},
            "response_url": self.slack.issue_response_url(**context),
            "actions": [action_payload(bid, element, choice, self.slack.state.next_ts())],
        }
        if message is not None:  # Slack leaves the message out for ephemeral ones
            payload["message"] = message.to_api()
        return await self.post_payload(payload, **kwargs)

    async def click_in_view(self, user_id: str, view_id: str, action_id: str, *, choice: Any = None,
                            values: Mapping[str, Any] | None = None, block_id: str | None = None,
                            **kwargs: Any) -> BotResponse:
        """Click or choose inside an open modal or the App Home; ``values`` fill the view's state."""
        view = self._view(user_id, view_id)
        bid, element = find_element(view.blocks, action_id, block_id)
        view.state_values, _ = view_state(view.blocks, values or {}, check=False)
        payload = {
            **self._base("block_actions", user_id),
            "container": {"type": "view", "view_id": view.id},
            "trigger_id": self.slack.issue_trigger(user_id), "view": view.to_api(),
            "actions": [action_payload(bid, element, choice, self.slack.state.next_ts())],
        }
        return await self.post_payload(payload, **kwargs)

    def _view(self, user_id: str, view_id: str) -> View:
        view = self.slack.view(view_id)
        if view is None or view.user_id != user_id:
            raise KeyError(f"view {view_id} is not open for {user_id}")
        return view

    # views -----------------------------------------------------------------------------------------
    async def submit_view(self, user_id: str, view_id: str, values: Mapping[str, Any] | None = None,
                          **kwargs: Any) -> BotResponse:
        """Submit the top modal. ``values`` by action_id, block_id or "block_id/action_id" (option
        values for selects, lists for checkboxes, "YYYY-MM-DD" / "HH:MM" for pickers); fields left
        out keep their initial value. Raises `ViewInputError` where Slack's client would refuse."""
        view = self._view(user_id, view_id)
        stack = self.slack.state.modal_stacks.get(user_id, [])
        if not stack or stack[-1] is not view:
            raise KeyError(f"view {view_id} is not the top modal of {user_id}")
        view.state_values, errors = view_state(view.blocks, values or {}, check=True)
        if errors:
            raise ViewInputError(errors)
        payload = {**self._base("view_submission", user_id), "trigger_id": self.slack.issue_trigger(user_id),
                   "view": view.to_api(), "response_urls": []}
        response = await self.post_payload(payload, **kwargs)
        if response.status == 200 and response.slack_error is None:
            self._apply_submission(user_id, view, response)
        return response

    def _apply_submission(self, user_id: str, view: View, response: BotResponse) -> None:
        stack = self.slack.state.modal_stacks.setdefault(user_id, [])
        body = response.body if isinstance(response.body, dict) else {}
        action = body.get("response_action")
        if action is None:
            del stack[stack.index(view):]
        elif action == "clear":
            stack.clear()
        elif action == "errors":
            errors = body.get("errors") or {}
            input_ids = {b.get("block_id") for b in view.blocks if b.get("type") == "input"}
            if not isinstance(errors, dict) or not errors or set(errors) - input_ids:
                response.slack_error = f"errors must name input block_ids {sorted(map(str, input_ids))}"
            else:
                view.errors = {str(k): str(v) for k, v in errors.items()}
        elif action in ("update", "push"):
            new = body.get("view")
            problems = validate_view(new)
            if problems:
                response.slack_error = f"invalid view: {problems}"
            elif action == "update":
                assert isinstance(new, dict)
                view.body, view.errors = new, {}
                view.hash = self.slack.state.view_hash(new, self.slack.state.next_ts())
            elif len(stack) >= MAX_MODAL_STACK:
                response.slack_error = "push_limit_reached"
            else:
                assert isinstance(new, dict)
                pushed = View(id=self.slack.state.new_id("V"), user_id=user_id, body=new,
                              hash=self.slack.state.view_hash(new, self.slack.state.next_ts()),
                              team_id=view.team_id, app_id=view.app_id, bot_id=view.bot_id,
                              root_view_id=view.root_view_id, previous_view_id=view.id)
                stack.append(pushed)
        else:
            response.slack_error = f"unknown response_action {action!r}"

    async def close_view(self, user_id: str, view_id: str, **kwargs: Any) -> BotResponse | None:
        """Press Close on the top modal. Slack tells the bot (view_closed) only if notify_on_close."""
        view = self._view(user_id, view_id)
        stack = self.slack.state.modal_stacks.get(user_id, [])
        cleared = bool(view.body.get("clear_on_close"))
        closing = list(stack) if cleared else stack[stack.index(view):]
        del stack[0 if cleared else stack.index(view):]
        if not any(v.body.get("notify_on_close") for v in closing):
            return None
        payload = {**self._base("view_closed", user_id), "view": view.to_api(), "is_cleared": cleared}
        return await self.post_payload(payload, **kwargs)

    # events ----------------------------------------------------------------------------------------
    async def event(self, event: Mapping[str, Any], **kwargs: Any) -> BotResponse:
        """Send an ``event_callback`` envelope around ``event``."""
        state = self.slack.state
        envelope = {
            "token": self.verification_token, "team_id": state.team_id, "api_app_id": state.app_id,
            "event": dict(event), "type": "event_callback", "event_id": f"Ev{secrets.token_hex(5).upper()}",
            "event_time": int(state.clock()), "is_ext_shared_channel": False,
            "authorizations": [{"enterprise_id": None, "team_id": state.team_id, "user_id": state.bot_user_id,
                                "is_bot": True, "is_enterprise_install": False}],
        }
        return await self.post_event(envelope, **kwargs)

    async def open_home(self, user_id: str, **kwargs: Any) -> BotResponse:
        """The user opens the app's Home tab: ``app_home_opened`` with ``tab: "home"``."""
        self._user(user_id)
        state = self.slack.state
        event: dict[str, Any] = {"type": "app_home_opened", "user": user_id,
                                 "channel": state.im_for(user_id).id, "tab": "home",
                                 "event_ts": state.next_ts()}
        home = self.slack.home(user_id)
        if home is not None:
            event["view"] = home.to_api()
        return await self.event(event, **kwargs)
