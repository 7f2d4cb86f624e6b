"""What every method of the fake Slack Web API shares: Slack's ``ok: false`` answer (`ApiFailure`), the
check of required arguments (``invalid_arguments``), arguments that form-encoded requests carry as JSON
strings (``json_arg``), Slack's booleans (``flag``), and the conversation a ``channel`` argument names, a
user id meaning the app's IM with that user (``resolve_channel``). The methods themselves are grouped by
API family in ``slack_conversations.py``, ``slack_chat.py`` and ``slack_views.py``.
"""

from __future__ import annotations

import json
from typing import Any

from bot.fakes.slack_state import Channel, SlackState


class ApiFailure(Exception):
    """A Slack ``ok: false`` answer: ``error`` plus optional ``response_metadata.messages`` detail."""

    def __init__(self, error: str, messages: list[str] | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.error, self.messages, self.extra = error, messages or [], extra

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": False, "error": self.error, **self.extra}
        if self.messages:
            out["response_metadata"] = {"messages": [f"[ERROR] {m}" for m in self.messages]}
        return out



def require(args: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if args.get(n) in (None, "")]
    if missing:
        raise ApiFailure("invalid_arguments", [f"missing required field: {n}" for n in missing])


def json_arg(args: dict[str, Any], name: str, error: str) -> Any:
    """Form-encoded requests carry blocks/view as JSON strings; JSON requests carry objects."""
    value = args.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ApiFailure(error, [f"could not parse JSON [json-pointer:/{name}]"]) from None
    return value


def flag(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True")


def resolve_channel(state: SlackState, channel: str) -> Channel:
    if channel in state.users:  # a user id posts to the app's DM with that user
        return state.im_for(channel)
    found = state.channels.get(channel)
    if found is None:
        raise ApiFailure("channel_not_found")
    return found

