"""Plays Slack towards a bot connected in Socket Mode: the same requests as ``SlackSender`` (commands,
clicks, modal submissions, events), sent as envelopes over the bot's WebSocket instead of signed
HTTP posts; the bot's acknowledgement becomes the ``BotResponse`` (status 200, its payload as body).
No acknowledgement within 3 s is a 408 with Slack's ``operation_timeout``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.fakes.slack_api import FakeSlack
from bot.fakes.slack_client import BotResponse, SlackSender
from bot.fakes.slack_socket import SocketMode


class SocketModeSender(SlackSender):
    def __init__(self, slack: FakeSlack) -> None:
        if slack.socket_mode is None:
            raise ValueError("this fake Slack has no app-level token: FakeSlack(app_token='xapp-…')")
        super().__init__(slack, bot_url="", signing_secret="")
        self.socket: SocketMode = slack.socket_mode

    async def _send(self, kind: str, payload: dict[str, Any], kwargs: Mapping[str, Any]) -> BotResponse:
        if kwargs:  # a signature's secret or timestamp: there is none in Socket Mode
            raise TypeError(f"Socket Mode envelopes are not signed: {sorted(kwargs)}")
        try:
            body, elapsed = await self.socket.deliver(kind, payload)
        except TimeoutError:
            deadline = self.socket.ack_deadline
            return BotResponse(408, None, slack_error=f"operation_timeout: no acknowledgement in {deadline:g} s")
        return BotResponse(200, body, elapsed=elapsed)

    async def post_form(self, fields: Mapping[str, str], **kwargs: Any) -> BotResponse:
        """A slash command: Socket Mode carries its fields as a JSON object."""
        return await self._send("slash_commands", dict(fields), kwargs)

    async def post_payload(self, payload: Mapping[str, Any], **kwargs: Any) -> BotResponse:
        return await self._send("interactive", dict(payload), kwargs)

    async def post_event(self, envelope: Mapping[str, Any], **kwargs: Any) -> BotResponse:
        return await self._send("events_api", dict(envelope), kwargs)
