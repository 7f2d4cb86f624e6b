"""Approve ▸ a shorter duration (the menu next to Approve). The value of a click is never trusted: its
request id and layer are checked like Approve's, and the service refuses a duration longer than the
request's as it stands (bot/domain/approved_for.py)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.requests import Decision, PolicyViolation
from bot.domain.step_up_proof import StepUpRequired
from bot.services.requesting.approvals import ApprovalService
from bot.services.runtime import Runtime
from bot.slack import blocks, ids
from bot.slack.identity import NoEmail, SlackIdentity

_VALUE = re.compile(r"([A-Za-z0-9_-]{1,40}):([0-9]{1,2}):([0-9]{1,9})")
NOT_A_CHOICE = "That choice does not match any request."
STEP_UP = ("This layer needs a fresh sign-in to approve, which cannot carry a shorter duration; nothing was "
           "recorded. Use Approve, or Deny and say which duration you would approve.")


def parse(value: str) -> tuple[str, int, timedelta] | None:
    """``<request>:<layer>:<seconds>`` as the menu writes it, or None (forged: markup, huge numbers)."""
    m = _VALUE.fullmatch(value)
    return (m.group(1), int(m.group(2)), timedelta(seconds=int(m.group(3)))) if m else None


async def tell(body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond, text: str) -> None:
    """To the clicker only: ephemeral where the click has a response_url (a DM, a channel), else a DM."""
    if body.get("response_url"):
        await respond(response_type="ephemeral", replace_original=False, text=text)
    else:
        await client.chat_postMessage(channel=body["user"]["id"], text=text)


def register(app: AsyncApp, rt: Runtime, identity: SlackIdentity) -> None:
    approvals = ApprovalService(rt)

    @app.action(ids.matching(ids.APPROVE_FOR))
    async def approve_for_chosen(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                                 client: AsyncWebClient, respond: AsyncRespond) -> None:
        await ack()
        chosen = parse(str((action.get("selected_option") or {}).get("value", "")))
        if chosen is None:
            await tell(body, client, respond, NOT_A_CHOICE)
            return
        request_id, layer, duration = chosen
        try:
            email = await identity.email(client, body["user"]["id"])
        except NoEmail as exc:
            await tell(body, client, respond, exc.message)
            return
        try:
            result = await approvals.decide(request_id=request_id, layer=layer, approver=email,
                                            decision=Decision.APPROVE, approver_slack=body["user"]["id"],
                                            duration=duration)
            text = result.message
        except StepUpRequired:
            text = STEP_UP
        except PolicyViolation as exc:
            text = blocks.esc(str(exc))  # it may quote a forged id: no mentions, no links
        await tell(body, client, respond, text)
