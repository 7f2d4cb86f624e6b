"""A layer's ask in its approver channel (policy: ``approvers: {channel, notify}``).

The first ask posts the approval message (the same blocks as the DM: a channel never shows more than
a DM would) and keeps its ts as one of the layer's copies (``approval:<layer>``), so the layer's
decision edits it in place like every DM copy. Later asks of the layer (a reminder, an escalation)
reply in that post's thread. A post Slack refuses for good (the bot is not in the channel, the channel
is gone or archived) falls back to a DM for each approver, and an alert says why.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError

from bot.services import notices
from bot.services.outbox.dispatcher import Delivery, FollowUp, Ref, message_refs
from bot.slack import blocks, request_messages

# chat.postMessage errors that no retry mends (https://docs.slack.dev/reference/methods/chat.postMessage)
UNPOSTABLE = {"not_in_channel", "channel_not_found", "is_archived", "restricted_action"}


def recipient(channel: str) -> str:
    """How a channel copy is named among the layer's copies (an approver's copy is their email)."""
    return f"channel:{channel}"


async def deliver(notifier: Any, p: dict[str, Any]) -> Delivery:
    """Deliver one channel ask (``notifier``: the SlackNotifier, for its client and database)."""
    snap, layer, channel, note = p["request"], int(p["layer"]), str(p["channel"]), p.get("note")
    if not await notifier._layer_open(snap["id"], layer):  # decided meanwhile: nothing to post
        return Delivery()
    posted = [r for r in await message_refs(notifier.db, snap["id"], f"approval:{layer}")
              if r.recipient == recipient(channel)]
    try:
        if posted:  # the layer's message is there: a later ask replies in its thread
            if note:
                await notifier._post(channel=posted[0].channel, thread_ts=posted[0].ts,
                                     text=blocks.notice(f"{note} Access request {snap['id']} still needs a "
                                                        "decision: use the buttons above."))
            return Delivery()
        resp = await notifier._post(
            channel=channel, text=(f"{note} " if note else "")
            + f"Access request {snap['id']} from {snap['requester']} needs a decision (layer {layer})",
            blocks=request_messages.approval_message(snap, layer, note))
    except SlackApiError as exc:
        error = str(exc.response.get("error", "")) if isinstance(exc.response.data, dict) else ""
        if error not in UNPOSTABLE:
            raise  # the notifier's guard decides: retry later, or give up
        return fall_back(p, error)
    return Delivery([Ref(snap["id"], f"approval:{layer}", str(resp["channel"]), str(resp["ts"]),
                         recipient(channel))])


def fall_back(p: dict[str, Any], error: str) -> Delivery:
    """The channel refused the post: each approver is asked by DM instead, and an alert says why."""
    snap, layer, channel = p["request"], int(p["layer"]), str(p["channel"])
    follow: list[FollowUp] = []
    for approver in p.get("approvers") or []:
        ask: dict[str, Any] = {"request": snap, "layer": layer, "approver": approver}
        if p.get("note"):
            ask["note"] = p["note"]
        follow.append(FollowUp(notices.ask_key(snap["id"], layer, approver), "approval_request", ask))
    follow.append(FollowUp(notices.audit_key(snap["id"]), "alert", {
        "request": snap, "text": f"{snap['id']}: could not post layer {layer}'s approval in {channel} ({error}); "
                                 "its approvers were asked by DM instead. Invite the bot to the channel "
                                 "(/invite @jitbot) or fix the policy's approvers.channel."}))
    return Delivery(follow_ups=follow)
