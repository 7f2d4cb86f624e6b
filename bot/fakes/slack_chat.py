"""The fake Slack's ``chat.*`` and ``files.*`` methods, as plain functions over `SlackState`: posting,
updating and ephemeral messages (text and Block Kit checked against Slack's limits, ``#name`` channels, the
bot a member of the channel), and the two-step external file upload whose completion posts the files to a
conversation as a message. Each takes the merged request arguments and returns the ``ok: true`` body or
raises `ApiFailure`.
"""

from __future__ import annotations

from typing import Any

from bot.fakes.blockkit import MAX_MESSAGE_BLOCKS, MAX_MESSAGE_TEXT, validate_blocks
from bot.fakes.slack_args import ApiFailure, json_arg, require, resolve_channel
from bot.fakes.slack_state import Ephemeral, SlackState, UploadedFile, clone


def _message_content(args: dict[str, Any], *, required: bool = True) -> tuple[str | None, Any]:
    text = args.get("text")
    blocks = json_arg(args, "blocks", "invalid_blocks_format")
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
    channel = resolve_channel(state, _by_name(state, str(args["channel"])))
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
    metadata = json_arg(args, "metadata", "invalid_metadata")
    msg = state.add_message(channel.id, text=text or "", blocks=blocks or [], user=state.bot_user_id,
                            bot=True, thread_ts=thread_ts, metadata=metadata)
    return {"channel": channel.id, "ts": msg.ts, "message": msg.to_api()}


def chat_update(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    require(args, "channel", "ts")
    channel = resolve_channel(state, str(args["channel"]))
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
    channel = resolve_channel(state, str(args["channel"]))
    user = str(args["user"])
    if user not in state.users:
        raise ApiFailure("user_not_found")
    if user not in channel.members:
        raise ApiFailure("user_not_in_channel")
    text, blocks = _message_content(args)
    ts = state.next_ts()
    state.ephemerals.append(Ephemeral(channel.id, user, text or "", blocks or [], ts))
    return {"message_ts": ts}



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
    items = json_arg(args, "files", "invalid_arguments")
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
        channel = resolve_channel(state, str(channel_id))
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
