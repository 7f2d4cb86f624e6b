"""The fake Slack's ``auth.*``, ``users.*`` and ``conversations.*`` methods, as plain functions over
`SlackState`: who the bot is, users by id or email (with the email only under ``users:read.email``), the
app's IM with a user, and the channels the bot can see (a private one only as a member, with
``groups:read``), listed with Slack's types, archived filter and cursor paging. Each takes the merged
request arguments and returns the ``ok: true`` body or raises `ApiFailure`.
"""

from __future__ import annotations

from typing import Any

from bot.fakes.slack_args import ApiFailure, flag, require, resolve_channel
from bot.fakes.slack_state import Channel, SlackState


def auth_test(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    return {"url": "https://jitbot-fake.slack.com/", "team": "jitbot fake", "user": "jitbot",
            "team_id": state.team_id, "user_id": state.bot_user_id, "bot_id": state.bot_id,
            "is_enterprise_install": False}


def users_info(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    require(args, "user")
    user = state.users.get(str(args["user"]))
    if user is None:
        raise ApiFailure("user_not_found")
    return {"user": user.to_api(with_email="users:read.email" in state.scopes)}


def users_lookup_by_email(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    require(args, "email")
    wanted = str(args["email"]).lower()
    for user in state.users.values():
        if user.email and user.email.lower() == wanted and not user.deleted:
            return {"user": user.to_api(with_email=True)}
    raise ApiFailure("users_not_found")


def conversations_open(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    if args.get("channel"):
        channel = resolve_channel(state, str(args["channel"]))
        return {"no_op": True, "already_open": True, "channel": {"id": channel.id}}
    users = [u for u in str(args.get("users") or "").split(",") if u]
    if not users:
        raise ApiFailure("users_list_not_supplied")
    if len(users) > 1:
        raise ApiFailure("not_supported", ["the fake opens only one-to-one IMs"])
    user = state.users.get(users[0])
    if user is None:
        raise ApiFailure("user_not_found")
    if user.deleted:
        raise ApiFailure("user_disabled")
    existed = any(c.is_im and c.user == user.id for c in state.channels.values())
    channel = state.im_for(user.id)
    body: dict[str, Any] = {"channel": {"id": channel.id}}
    if existed:
        body.update(no_op=True, already_open=True)
    if flag(args.get("return_im")):
        body["channel"].update(is_im=True, user=user.id, created=int(state.clock()))
    return body


def _channel_api(state: SlackState, channel: Channel) -> dict[str, Any]:
    return {"id": channel.id, "name": channel.name, "is_channel": not channel.is_private and not channel.is_im,
            "is_group": channel.is_private, "is_im": channel.is_im, "is_private": channel.is_private,
            "is_archived": channel.is_archived, "is_member": state.bot_user_id in channel.members}


def _can_see(state: SlackState, channel: Channel) -> bool:
    """A bot sees a public channel, and a private one only as a member (with groups:read)."""
    return not channel.is_private or ("groups:read" in state.scopes and state.bot_user_id in channel.members)


def conversations_info(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    """https://docs.slack.dev/reference/methods/conversations.info: by channel id only (a ``#name`` is
    ``channel_not_found``); a private channel the bot is not in is ``channel_not_found`` too."""
    require(args, "channel")
    channel = state.channels.get(str(args["channel"]))
    if channel is None or channel.is_im or not _can_see(state, channel):
        raise ApiFailure("channel_not_found")
    return {"channel": _channel_api(state, channel)}


def conversations_list(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    """https://docs.slack.dev/reference/methods/conversations.list: ``types`` (default public_channel),
    ``exclude_archived``, ``limit`` (≤ 1000, default 100) and ``cursor`` paging."""
    types = set(str(args.get("types") or "public_channel").split(","))
    if types - {"public_channel", "private_channel", "mpim", "im"}:
        raise ApiFailure("invalid_types")
    if "private_channel" in types and "groups:read" not in state.scopes:
        raise ApiFailure("missing_scope", needed="groups:read")
    limit = int(args.get("limit") or 100)
    if not 1 <= limit <= 1000:
        raise ApiFailure("invalid_limit")
    start = int(str(args.get("cursor") or "0").removeprefix("c"))
    found = [c for c in state.channels.values() if not c.is_im and _can_see(state, c)
             and (("private_channel" if c.is_private else "public_channel") in types)
             and not (flag(args.get("exclude_archived")) and c.is_archived)]
    page = found[start:start + limit]
    more = f"c{start + limit}" if start + limit < len(found) else ""
    return {"channels": [_channel_api(state, c) for c in page], "response_metadata": {"next_cursor": more}}

