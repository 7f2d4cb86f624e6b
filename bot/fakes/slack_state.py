"""In-memory state of the fake Slack workspace: users, channels, messages, views, triggers, calls."""

from __future__ import annotations

import copy
import hashlib
import itertools
import marshal
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

TRIGGER_LIFETIME_S = 3.0
MAX_MODAL_STACK = 3


_T = TypeVar("_T")


def clone(value: _T) -> _T:
    """A deep copy of JSON data (what the API stores and returns): marshal copies it in C, several times
    faster than ``copy.deepcopy``; anything marshal cannot hold falls back to ``deepcopy``."""
    try:
        return marshal.loads(marshal.dumps(value))  # type: ignore[no-any-return,arg-type]
    except ValueError:
        return copy.deepcopy(value)


@dataclass
class SlackUser:
    """A workspace member as `users.info` describes it."""

    id: str
    name: str
    real_name: str
    email: str | None
    tz: str
    team_id: str
    is_bot: bool = False
    deleted: bool = False
    # Guests (https://api.slack.com/types/user): multi-channel (is_restricted), single-channel (both set).
    is_restricted: bool = False
    is_ultra_restricted: bool = False
    # A user of another workspace seen through a shared channel, and Enterprise Grid membership.
    is_stranger: bool = False
    enterprise_user: dict[str, Any] | None = None

    def to_api(self, *, with_email: bool) -> dict[str, Any]:
        profile: dict[str, Any] = {"real_name": self.real_name, "display_name": self.name,
                                   "real_name_normalized": self.real_name}
        if with_email and self.email:
            profile["email"] = self.email
        return {"id": self.id, "team_id": self.team_id, "name": self.name, "deleted": self.deleted,
                "real_name": self.real_name, "tz": self.tz, "tz_label": self.tz, "tz_offset": 0,
                "is_bot": self.is_bot, "is_admin": False, "is_owner": False, "is_app_user": False,
                "is_restricted": self.is_restricted, "is_ultra_restricted": self.is_ultra_restricted,
                "profile": profile, **({"is_stranger": True} if self.is_stranger else {}),
                **({"enterprise_user": dict(self.enterprise_user)} if self.enterprise_user else {})}


@dataclass
class Channel:
    """A public/private channel, or an IM (``is_im``, id ``D...``) between the bot and ``user``."""

    id: str
    name: str
    is_im: bool = False
    is_private: bool = False
    members: set[str] = field(default_factory=set)
    user: str | None = None
    is_archived: bool = False


@dataclass
class Message:
    """A message as stored by the fake; ``edits`` keeps every earlier (text, blocks) version."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    user: str
    bot_id: str | None = None
    thread_ts: str | None = None
    reply_ts: list[str] = field(default_factory=list)
    edits: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "message", "text": self.text, "user": self.user, "ts": self.ts,
                               "team": self.extra.get("team", ""), "blocks": clone(self.blocks)}
        if self.bot_id:
            out["bot_id"] = self.bot_id
            out["app_id"] = self.extra.get("app_id", "")
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.reply_ts:
            out["thread_ts"] = self.ts
            out["reply_count"] = len(self.reply_ts)
        if self.edits:
            out["edited"] = {"user": self.user, "ts": self.edits[-1]["edited_ts"]}
        if self.files:
            out["files"] = clone(self.files)
        if self.extra.get("metadata"):
            out["metadata"] = clone(self.extra["metadata"])
        return out


@dataclass
class Ephemeral:
    """A message only ``user`` sees (chat.postEphemeral, command ack bodies, response_url posts)."""

    channel: str
    user: str
    text: str
    blocks: list[dict[str, Any]]
    message_ts: str
    source: str = "chat.postEphemeral"


@dataclass
class View:
    """An open modal or a published home tab. ``body`` is what the bot sent (type, title, blocks, ...)."""

    id: str
    user_id: str
    body: dict[str, Any]
    hash: str
    team_id: str
    app_id: str
    bot_id: str
    root_view_id: str
    previous_view_id: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    state_values: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.body.get("type", ""))

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return list(self.body.get("blocks", []))

    def to_api(self) -> dict[str, Any]:
        b = self.body
        return {
            "id": self.id, "team_id": self.team_id, "type": self.type, "blocks": clone(self.blocks),
            "private_metadata": b.get("private_metadata", ""), "callback_id": b.get("callback_id", ""),
            "state": {"values": clone(self.state_values)}, "hash": self.hash,
            "title": b.get("title"), "clear_on_close": bool(b.get("clear_on_close", False)),
            "notify_on_close": bool(b.get("notify_on_close", False)), "close": b.get("close"),
            "submit": b.get("submit"), "previous_view_id": self.previous_view_id,
            "root_view_id": self.root_view_id, "app_id": self.app_id, "external_id": b.get("external_id", ""),
            "app_installed_team_id": self.team_id, "bot_id": self.bot_id,
        }


@dataclass
class Call:
    """One Web API call as received: method, merged arguments, HTTP verb, status and response body."""

    method: str
    args: dict[str, Any]
    http_method: str
    status: int
    response: dict[str, Any]


@dataclass
class ResponseUrlPost:
    """A post to a ``response_url`` the fake handed out, with the context it was issued for."""

    url_id: str
    body: dict[str, Any]
    context: dict[str, Any]


@dataclass
class Trigger:
    id: str
    user_id: str
    issued_at: float
    used: bool = False


@dataclass
class UploadedFile:
    id: str
    filename: str
    length: int
    data: bytes | None = None
    title: str | None = None
    completed: bool = False
    channels: list[str] = field(default_factory=list)


class SlackState:
    """The workspace. All methods are synchronous and in memory; the HTTP layer lives elsewhere."""

    def __init__(self, *, team_id: str, bot_user_id: str, bot_id: str, app_id: str,
                 clock: Callable[[], float]) -> None:
        self.team_id, self.bot_user_id, self.bot_id, self.app_id = team_id, bot_user_id, bot_id, app_id
        self.clock = clock
        self.scopes: set[str] = set()
        self.root_url = ""
        self.users: dict[str, SlackUser] = {}
        self.channels: dict[str, Channel] = {}
        self.messages: dict[str, list[Message]] = {}
        self.ephemerals: list[Ephemeral] = []
        self.modal_stacks: dict[str, list[View]] = {}
        self.homes: dict[str, View] = {}
        self.triggers: dict[str, Trigger] = {}
        self.calls: list[Call] = []
        self.response_posts: list[ResponseUrlPost] = []
        self.response_urls: dict[str, dict[str, Any]] = {}
        self.files: dict[str, UploadedFile] = {}
        self._last_ts_us = 0
        self._ids = itertools.count(1)

    # ids ------------------------------------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        """A Slack-looking id (``V0000000001``-style), unique within this workspace."""
        return f"{prefix}{next(self._ids):010d}"

    def next_ts(self) -> str:
        """A message ts ``"1700000000.000100"`` style, strictly increasing even with a frozen clock."""
        now_us = int(self.clock() * 1_000_000)
        self._last_ts_us = max(now_us, self._last_ts_us + 100)
        return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

    def issue_trigger(self, user_id: str) -> str:
        """A trigger_id valid for 3 s of the injected clock and one views.open/views.push."""
        tid = f"{next(self._ids)}.{int(self.clock())}.{secrets.token_hex(16)}"
        self.triggers[tid] = Trigger(tid, user_id, self.clock())
        return tid

    def issue_response_url(self, root_url: str, context: dict[str, Any]) -> str:
        url_id = secrets.token_hex(12)
        self.response_urls[url_id] = {**context, "issued_at": self.clock(), "uses": 0}
        return f"{root_url}response/{self.team_id}/{url_id}"

    @staticmethod
    def view_hash(body: dict[str, Any], salt: str) -> str:
        digest = hashlib.sha1(f"{salt}{body!r}".encode()).hexdigest()[:32]
        return f"{salt.split('.')[0]}.{digest}"

    # people and places ------------------------------------------------------------------------------
    def im_for(self, user_id: str) -> Channel:
        """The bot's IM with ``user_id``, created on first use (as conversations.open does)."""
        for ch in self.channels.values():
            if ch.is_im and ch.user == user_id:
                return ch
        ch = Channel(id=self.new_id("D"), name=user_id, is_im=True, members={user_id, self.bot_user_id},
                     user=user_id)
        self.channels[ch.id] = ch
        self.messages.setdefault(ch.id, [])
        return ch

    def find_message(self, channel: str, ts: str) -> Message | None:
        for msg in reversed(self.messages.get(channel, [])):  # newest first: the ones usually updated
            if msg.ts == ts:
                return msg
        return None

    def add_message(self, channel: str, *, text: str, blocks: list[dict[str, Any]], user: str,
                    bot: bool, thread_ts: str | None = None, **extra: Any) -> Message:
        msg = Message(channel=channel, ts=self.next_ts(), text=text, blocks=blocks, user=user,
                      bot_id=self.bot_id if bot else None, thread_ts=thread_ts, extra=dict(extra))
        msg.extra["team"] = self.team_id
        if bot:
            msg.extra["app_id"] = self.app_id
        if thread_ts:
            parent = self.find_message(channel, thread_ts)
            if parent is not None:
                parent.reply_ts.append(msg.ts)
        self.messages.setdefault(channel, []).append(msg)
        return msg

    def find_view(self, view_id: str | None = None, external_id: str | None = None) -> View | None:
        candidates = [v for stack in self.modal_stacks.values() for v in stack] + list(self.homes.values())
        for view in candidates:
            if view_id and view.id == view_id:
                return view
            if external_id and view.body.get("external_id") == external_id:
                return view
        return None
