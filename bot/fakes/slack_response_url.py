"""What the fake Slack does with a ``response_url`` post and with a slash command's acknowledgement body:
a response URL answers 404 once it has expired (30 minutes) or been used five times, checks the blocks, and
then, as Slack does, deletes or replaces the original message or ephemeral (``delete_original``,
``replace_original``), posts to the channel (``response_type: in_channel``), or shows a new ephemeral to the
user. Free functions taking the fake (``slack_api.FakeSlack``), whose ``apply_response`` method and
``/response/...`` route call them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.fakes.blockkit import MAX_MESSAGE_BLOCKS, validate_blocks
from bot.fakes.slack_state import Ephemeral, ResponseUrlPost

if TYPE_CHECKING:
    from bot.fakes.slack_api import FakeSlack

RESPONSE_URL_LIFETIME_S = 30 * 60
RESPONSE_URL_MAX_USES = 5


async def serve(slack: FakeSlack, request: web.Request) -> web.Response:
    if slack._outage == "503":
        return web.Response(status=503, text="service unavailable")
    context = slack.state.response_urls.get(request.match_info["url_id"])
    if context is None:
        return web.Response(status=404, text="no_such_url")
    # Slack: a response_url may be used up to 5 times within 30 minutes.
    if slack.state.clock() - float(context["issued_at"]) > RESPONSE_URL_LIFETIME_S:
        return web.Response(status=404, text="expired_url")
    if int(context["uses"]) >= RESPONSE_URL_MAX_USES:
        return web.Response(status=404, text="used_url")
    context["uses"] = int(context["uses"]) + 1
    try:
        body = json.loads(await request.text()) if request.content_type == "application/json" \
            else dict(await request.post())
    except ValueError:
        return web.Response(status=400, text="invalid_payload")
    slack.state.response_posts.append(ResponseUrlPost(request.match_info["url_id"], body, context))
    blocks: Any = body.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if blocks is not None and validate_blocks(blocks, max_blocks=MAX_MESSAGE_BLOCKS):
        return web.Response(status=400, text="invalid_blocks")
    apply_response(slack, context, body, blocks or [])
    return web.Response(text="ok")


def apply_response(slack: FakeSlack, context: dict[str, Any], body: dict[str, Any], blocks: list[Any],
                   *, source: str = "response_url") -> None:
    """Do what Slack does with a response_url post or a command's ack body."""
    channel, user = str(context.get("channel", "")), str(context.get("user", ""))
    original = slack.state.find_message(channel, str(context.get("message_ts", "")))
    text = str(body.get("text") or "")
    ephemeral = slack.find_ephemeral(user, str(context.get("ephemeral_ts", "")))
    if ephemeral is not None and _truthy(body.get("delete_original")):
        slack.state.ephemerals.remove(ephemeral)
    elif ephemeral is not None and _truthy(body.get("replace_original")):
        ephemeral.text, ephemeral.blocks = text, blocks
    elif original is not None and _truthy(body.get("delete_original")):
        slack.state.messages[channel].remove(original)
    elif original is not None and _truthy(body.get("replace_original")):
        original.edits.append({"text": original.text, "blocks": original.blocks,
                               "edited_ts": slack.state.next_ts()})
        original.text, original.blocks = text, blocks
    elif body.get("response_type") == "in_channel":
        slack.state.add_message(channel, text=text, blocks=blocks, user=slack.state.bot_user_id, bot=True)
    else:
        slack.state.ephemerals.append(Ephemeral(channel, user, text, blocks, slack.state.next_ts(), source))



def _truthy(value: Any) -> bool:
    return value in (True, "true", "1", 1)
