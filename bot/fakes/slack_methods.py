"""The Web API methods the fake Slack implements, as plain functions over `SlackState`.

Each takes the merged request arguments and returns the ``ok: true`` body or raises `ApiFailure`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bot.fakes.blockkit import MAX_MESSAGE_BLOCKS, MAX_MESSAGE_TEXT, validate_blocks, validate_view
from bot.fakes.slack_state import (
    MAX_MODAL_STACK,
    TRIGGER_LIFETIME_S,
    Channel,
    Ephemeral,
    SlackState,
    UploadedFile,
    View,
    clone,
)


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


Handler = Callable[[SlackState, dict[str, Any]], dict[str, Any]]

# The scope each method needs (bot token). Views methods need none.
METHOD_SCOPES: dict[str, str | None] = {
    "auth.test": None, "users.info": "users:read", "users.lookupByEmail": "users:read.email",
    "conversations.open": "im:write", "conversations.info": "channels:read",
    "conversations.list": "channels:read", "chat.postMessage": "chat:write", "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write", "views.open": None, "views.update": None, "views.push": None,
    "views.publish": None, "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
}


def require(args: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if args.get(n) in (None, "")]
    if missing:
        raise ApiFailure("invalid_arguments", [f"missing required field: {n}" for n in missing])


def _json_arg(args: dict[str, Any], name: str, error: str) -> Any:
    """Form-encoded requests carry blocks/view as JSON strings; JSON requests carry objects."""
    value = args.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ApiFailure(error, [f"could not parse JSON [json-pointer:/{name}]"]) from None
    return value


def _flag(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True")


def _resolve_channel(state: SlackState, channel: str) -> Channel:
    if channel in state.users:  # a user id posts to the app's DM with that user
        return state.im_for(channel)
    found = state.channels.get(channel)
    if found is None:
        raise ApiFailure("channel_not_found")
    return found


def _message_content(args: dict[str, Any], *, required: bool = True) -> tuple[str | None, Any]:
    text = args.get("text")
    blocks = _json_arg(args, "blocks", "invalid_blocks_format")
    if blocks is not None:
        errors = validate_blocks(blocks, max_blocks=MAX_MESSAGE_BLOCKS)
        if errors:
            raise ApiFailure("invalid_blocks", errors, errors=errors)
    if required and not text and not blocks and not args.get("attachments"):
        raise ApiFailure("no_text")
    if text is not None and not isinstance(text, str):
        raise ApiFailure("invalid_arguments", ["must be a string [json-pointer:/text]"])
    if text and len(text) > MAX_MESSAGE_TEXT:
        raise ApiFailure("msg_too_long")
    return text, blocks


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
        channel = _resolve_channel(state, str(args["channel"]))
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
    if _flag(args.get("return_im")):
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
             and not (_flag(args.get("exclude_archived")) and c.is_archived)]
    page = found[start:start + limit]
    more = f"c{start + limit}" if start + limit < len(found) else ""
    return {"channels": [_channel_api(state, c) for c in page], "response_metadata": {"next_cursor": more}}


def _by_name(state: SlackState, channel: str) -> str:
    """chat.postMessage takes "an encoded ID or channel name" (https://docs.slack.dev/reference/methods/
    chat.postMessage, ``channel``): ``#name`` is the channel of that name (its id is in the answer)."""
    if channel.startswith("#"):
        for c in state.channels.values():
            if not c.is_im and c.name == channel[1:]:
                return c.id
    return channel


def chat_post_message(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    require(args, "channel")
    channel = _resolve_channel(state, _by_name(state, str(args["channel"])))
    if channel.is_archived:
        raise ApiFailure("is_archived")
    if not channel.is_im and state.bot_user_id not in channel.members:
        raise ApiFailure("not_in_channel")
    text, blocks = _message_content(args)
    thread_ts = args.get("thread_ts") or None
    if thread_ts:
        parent = state.find_message(channel.id, str(thread_ts))
        if parent is None:
            raise ApiFailure("thread_not_found")
        thread_ts = parent.thread_ts or parent.ts
    metadata = _json_arg(args, "metadata", "invalid_metadata")
    msg = state.add_message(channel.id, text=text or "", blocks=blocks or [], user=state.bot_user_id,
                            bot=True, thread_ts=thread_ts, metadata=metadata)
    return {"channel": channel.id, "ts": msg.ts, "message": msg.to_api()}


def chat_update(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    require(args, "channel", "ts")
    channel = _resolve_channel(state, str(args["channel"]))
    msg = state.find_message(channel.id, str(args["ts"]))
    if msg is None:
        raise ApiFailure("message_not_found")
    if msg.bot_id != state.bot_id:
        raise ApiFailure("cant_update_message")
    text, blocks = _message_content(args)
    msg.edits.append({"text": msg.text, "blocks": clone(msg.blocks), "edited_ts": state.next_ts()})
    if text is not None:
        msg.text = text
    if blocks is not None:
        msg.blocks = blocks
    return {"channel": channel.id, "ts": msg.ts, "text": msg.text, "message": msg.to_api()}


def chat_post_ephemeral(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    require(args, "channel", "user")
    channel = _resolve_channel(state, str(args["channel"]))
    user = str(args["user"])
    if user not in state.users:
        raise ApiFailure("user_not_found")
    if user not in channel.members:
        raise ApiFailure("user_not_in_channel")
    text, blocks = _message_content(args)
    ts = state.next_ts()
    state.ephemerals.append(Ephemeral(channel.id, user, text or "", blocks or [], ts))
    return {"message_ts": ts}


def _checked_view(args: dict[str, Any]) -> dict[str, Any]:
    require(args, "view")
    view = _json_arg(args, "view", "invalid_arguments")
    errors = validate_view(view)
    if errors:
        raise ApiFailure("invalid_arguments", errors)
    assert isinstance(view, dict)
    return view


def _use_trigger(state: SlackState, args: dict[str, Any]) -> str:
    require(args, "trigger_id")
    trigger = state.triggers.get(str(args["trigger_id"]))
    if trigger is None:
        raise ApiFailure("invalid_trigger_id")
    if state.clock() - trigger.issued_at > TRIGGER_LIFETIME_S:
        raise ApiFailure("expired_trigger_id")
    if trigger.used:
        raise ApiFailure("exchanged_trigger_id")
    trigger.used = True
    return trigger.user_id


def _new_view(state: SlackState, user_id: str, body: dict[str, Any], *, root: str | None = None,
              previous: str | None = None) -> View:
    view_id = state.new_id("V")
    return View(id=view_id, user_id=user_id, body=body, hash=state.view_hash(body, state.next_ts()),
                team_id=state.team_id, app_id=state.app_id, bot_id=state.bot_id,
                root_view_id=root or view_id, previous_view_id=previous)


def _external_id_free(state: SlackState, body: dict[str, Any], own: View | None = None) -> None:
    ext = body.get("external_id")
    other = state.find_view(external_id=ext) if ext else None
    if other is not None and other is not own:
        raise ApiFailure("duplicate_external_id")


def views_open(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    view = _checked_view(args)
    if view.get("type") != "modal":
        raise ApiFailure("invalid_arguments", ["must be a valid enum value [json-pointer:/view/type]"])
    user_id = _use_trigger(state, args)
    _external_id_free(state, view)
    opened = _new_view(state, user_id, view)
    state.modal_stacks[user_id] = [opened]
    return {"view": opened.to_api()}


def views_push(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    view = _checked_view(args)
    user_id = _use_trigger(state, args)
    stack = state.modal_stacks.get(user_id) or []
    if not stack:
        raise ApiFailure("not_found", ["no modal is open to push onto"])
    if len(stack) >= MAX_MODAL_STACK:
        raise ApiFailure("push_limit_reached")
    _external_id_free(state, view)
    pushed = _new_view(state, user_id, view, root=stack[0].id, previous=stack[-1].id)
    stack.append(pushed)
    return {"view": pushed.to_api()}


def views_update(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    view = _checked_view(args)
    if not args.get("view_id") and not args.get("external_id"):
        raise ApiFailure("invalid_arguments", ["must provide view_id or external_id"])
    target = state.find_view(args.get("view_id"), args.get("external_id"))
    if target is None or target.type != view.get("type"):
        raise ApiFailure("not_found")
    if args.get("hash") and args["hash"] != target.hash:
        raise ApiFailure("hash_conflict")
    _external_id_free(state, view, own=target)
    target.body, target.errors = view, {}
    target.hash = state.view_hash(view, state.next_ts())
    return {"view": target.to_api()}


def views_publish(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    require(args, "user_id")
    view = _checked_view(args)
    if view.get("type") != "home":
        raise ApiFailure("invalid_arguments", ["must be a valid enum value [json-pointer:/view/type]"])
    user_id = str(args["user_id"])
    if user_id not in state.users:
        raise ApiFailure("user_not_found")
    current = state.homes.get(user_id)
    if args.get("hash") and (current is None or args["hash"] != current.hash):
        raise ApiFailure("hash_conflict")
    if current is None:
        current = _new_view(state, user_id, view)
        state.homes[user_id] = current
    else:
        current.body = view
        current.hash = state.view_hash(view, state.next_ts())
    return {"view": current.to_api()}


def files_get_upload_url(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    require(args, "filename", "length")
    try:
        length = int(args["length"])
    except (TypeError, ValueError):
        raise ApiFailure("invalid_arguments", ["must be an integer [json-pointer:/length]"]) from None
    file = UploadedFile(id=state.new_id("F"), filename=str(args["filename"]), length=length)
    state.files[file.id] = file
    return {"upload_url": f"{state.root_url}upload/v1/{file.id}", "file_id": file.id}


def files_complete_upload(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    require(args, "files")
    items = _json_arg(args, "files", "invalid_arguments")
    if not isinstance(items, list) or not items:
        raise ApiFailure("invalid_arguments", ["must provide a non-empty array [json-pointer:/files]"])
    uploads = []
    for item in items:
        upload = state.files.get(str(item.get("id"))) if isinstance(item, dict) else None
        if upload is None:
            raise ApiFailure("file_not_found")
        if upload.data is None:
            raise ApiFailure("file_upload_not_complete")
        upload.title = str(item.get("title") or upload.filename)
        uploads.append(upload)
    channel_id = args.get("channel_id") or args.get("channels")
    described = [{"id": u.id, "name": u.filename, "title": u.title, "size": u.length} for u in uploads]
    if channel_id:
        channel = _resolve_channel(state, str(channel_id))
        if not channel.is_im and state.bot_user_id not in channel.members:
            raise ApiFailure("not_in_channel")
        msg = state.add_message(channel.id, text=str(args.get("initial_comment") or ""), blocks=[],
                                user=state.bot_user_id, bot=True, thread_ts=args.get("thread_ts") or None)
        msg.files = described
    for upload in uploads:
        upload.completed = True
        if channel_id:
            upload.channels.append(str(channel_id))
    return {"files": described}


METHODS: dict[str, Handler] = {
    "auth.test": auth_test,
    "users.info": users_info,
    "users.lookupByEmail": users_lookup_by_email,
    "conversations.open": conversations_open,
    "conversations.info": conversations_info,
    "conversations.list": conversations_list,
    "chat.postMessage": chat_post_message,
    "chat.update": chat_update,
    "chat.postEphemeral": chat_post_ephemeral,
    "views.open": views_open,
    "views.push": views_push,
    "views.update": views_update,
    "views.publish": views_publish,
    "files.getUploadURLExternal": files_get_upload_url,
    "files.completeUploadExternal": files_complete_upload,
}
