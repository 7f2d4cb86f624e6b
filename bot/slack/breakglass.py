"""``/jit breakglass`` and the Acknowledge / Flag buttons of the after-the-fact review."""

from __future__ import annotations

import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.durations import format_duration, parse_duration
from bot.domain.requests import PolicyViolation
from bot.services.breakglass import BreakGlassService, ReviewOutcome
from bot.services.runtime import Runtime
from bot.slack import ids
from bot.slack.blocks import esc
from bot.slack.identity import NoEmail, SlackIdentity

_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
USAGE = ("Usage: `/jit breakglass ACCESS DURATION REASON…`, e.g. `/jit breakglass prod-admin 30m primary DB "
         "is down`. Access is granted at once, announced to security and reviewed afterwards.")


async def breakglass_command(service: BreakGlassService, email: str, user_id: str, words: list[str]) -> str:
    """Run ``/jit breakglass WORDS…``; returns the ephemeral answer (raises PolicyViolation if refused)."""
    if len(words) < 3:
        return USAGE
    try:
        duration = parse_duration(words[1])
    except ValueError as exc:
        raise PolicyViolation(f"{exc}. {USAGE}") from None
    req = await service.invoke(requester=email, requester_slack=user_id, eligibility=words[0].lower(),
                               duration=duration, justification=" ".join(words[2:]))
    return (f":rotating_light: Break-glass {req.id}: granting {req.eligibility} for {format_duration(duration)} "
            "now. Security and the approvers were alerted and will review this use.")


def register(app: AsyncApp, rt: Runtime, identity: SlackIdentity) -> None:
    service = BreakGlassService(rt)

    async def review(body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond,
                     outcome: ReviewOutcome) -> None:
        request_id = str(action.get("value", ""))
        try:
            email = await identity.email(client, body["user"]["id"])
            if not _ID.fullmatch(request_id):  # a forged value: NUL bytes, markup, megabytes
                raise PolicyViolation("That button does not match any request.")
            text = await service.review(request_id=request_id, reviewer=email, outcome=outcome)
        except NoEmail as exc:
            text = exc.message
        except PolicyViolation as exc:
            text = esc(str(exc))  # it may quote what the click carried: no mentions, no links
        await respond(response_type="ephemeral", replace_original=False, text=text)

    @app.action(ids.REVIEW_ACK)
    async def review_acknowledged(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                                  client: AsyncWebClient, respond: AsyncRespond) -> None:
        await ack()
        await review(body, action, client, respond, ReviewOutcome.ACKNOWLEDGED)

    @app.action(ids.REVIEW_FLAG)
    async def review_flagged(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                             client: AsyncWebClient, respond: AsyncRespond) -> None:
        await ack()
        await review(body, action, client, respond, ReviewOutcome.FLAGGED)
