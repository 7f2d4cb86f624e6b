"""Fakes shipped with the app: a strict fake Slack (Web API server + Slack's side, over signed HTTP or,
with an app-level token, Socket Mode: ``slack_socket``, ``socket_sender``) for tests and the playground."""

from bot.fakes.slack_api import DEFAULT_BOT_SCOPES, FakeSlack
from bot.fakes.slack_client import BotResponse, SlackSender, ViewInputError
from bot.fakes.slack_state import Call, Channel, Ephemeral, Message, ResponseUrlPost, SlackUser, View

__all__ = [
    "DEFAULT_BOT_SCOPES",
    "BotResponse",
    "Call",
    "Channel",
    "Ephemeral",
    "FakeSlack",
    "Message",
    "ResponseUrlPost",
    "SlackSender",
    "SlackUser",
    "View",
    "ViewInputError",
]
