"""``policy check --live``, Slack's part: the bot is a member of every approver channel the policy names
(``approvers.channel``), before the first request is posted there.

Needs the bot token (``SLACK_BOT_TOKEN``) and the ``channels:read`` scope (``groups:read`` for a private
channel). A ``#name`` is looked up with conversations.list (a private channel is listed only to its
members); a channel id with conversations.info (https://docs.slack.dev/reference/methods/conversations.info).
"""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.policy import Policy


def approver_channels(policy: Policy) -> dict[str, list[str]]:
    """Each channel the policy posts approvals in → the layers that post there."""
    out: dict[str, list[str]] = {}
    for e in policy.eligibilities:
        for i, layer in enumerate(e.approvals, start=1):
            channel = layer.approvers.post_channel
            if channel is not None:
                out.setdefault(channel, []).append(f"{e.name}: approvals[{i}]")
    return out


async def _by_name(client: AsyncWebClient) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    cursor = ""
    while True:
        resp = await client.conversations_list(types="public_channel,private_channel", limit=1000,
                                               exclude_archived=False, cursor=cursor or None)
        for ch in resp.get("channels") or []:
            found[f"#{ch['name']}"] = ch
        cursor = str((resp.get("response_metadata") or {}).get("next_cursor") or "")
        if not cursor:
            return found


async def channel_problems(policy: Policy, client: AsyncWebClient) -> list[str]:
    """One line per approver channel the bot cannot post in (empty: all good)."""
    wanted = approver_channels(policy)
    if not wanted:
        return []
    problems: list[str] = []
    named: dict[str, dict[str, Any]] | None = None
    for channel, where in wanted.items():
        layers = ", ".join(where)
        try:
            if channel.startswith("#"):
                if named is None:
                    named = await _by_name(client)
                info = named.get(channel)
            else:
                info = (await client.conversations_info(channel=channel)).get("channel")
        except SlackApiError as exc:
            error = str(exc.response.get("error", ""))
            if error == "missing_scope":
                return [f"Slack: the bot token lacks the channels:read / groups:read scope, so the approver "
                        f"channels ({', '.join(wanted)}) cannot be checked; add the scopes and reinstall the app"]
            info = None if error == "channel_not_found" else {"error": error}
        if info is None:
            problems.append(f"{layers}: Slack channel {channel} does not exist (or is private and the bot is not "
                            "in it); invite the bot (/invite @jitbot) or fix approvers.channel")
        elif "error" in info:
            problems.append(f"{layers}: Slack channel {channel} could not be checked: {info['error']}")
        elif info.get("is_archived"):
            problems.append(f"{layers}: Slack channel {channel} is archived; requests would go by DM instead")
        elif not info.get("is_member"):
            problems.append(f"{layers}: the bot is not a member of Slack channel {channel}; invite it "
                            "(/invite @jitbot), else requests go to the approvers by DM instead")
    return problems
