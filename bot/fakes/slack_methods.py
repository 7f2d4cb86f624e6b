"""The Web API methods the fake Slack implements: the table from method name to handler (`METHODS`) and the
scope each needs with the bot token (`METHOD_SCOPES`). The handlers are plain functions over `SlackState`,
grouped by API family: ``slack_conversations.py`` (auth, users, conversations), ``slack_chat.py`` (chat,
files) and ``slack_views.py`` (views); what they share, `ApiFailure` among it, is ``slack_args.py``.
Each takes the merged request arguments and returns the ``ok: true`` body or raises `ApiFailure`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.fakes.slack_args import ApiFailure as ApiFailure
from bot.fakes.slack_args import require as require
from bot.fakes.slack_chat import (
    chat_post_ephemeral,
    chat_post_message,
    chat_update,
    files_complete_upload,
    files_get_upload_url,
)
from bot.fakes.slack_conversations import (
    auth_test,
    conversations_info,
    conversations_list,
    conversations_open,
    users_info,
    users_lookup_by_email,
)
from bot.fakes.slack_state import SlackState
from bot.fakes.slack_views import views_open, views_publish, views_push, views_update

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
