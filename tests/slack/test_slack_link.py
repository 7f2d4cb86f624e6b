"""Which answers of Slack count as refusing a token (bot/slack/slack_link.py): only those about the token
itself; an outage, a rate limit or anything unexpected lets the process go on and connect."""

from __future__ import annotations

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError

from bot.slack.slack_link import refusal


def _failing(exc: BaseException):  # type: ignore[no-untyped-def]
    async def call() -> None:
        raise exc

    return call


def _slack(error: str) -> SlackApiError:
    return SlackApiError("refused", {"ok": False, "error": error})


@pytest.mark.parametrize("error", ["invalid_auth", "token_revoked", "not_allowed_token_type", "account_inactive"])
async def test_an_answer_about_the_token_is_a_refusal(error: str) -> None:
    assert await refusal(_failing(_slack(error))) == error


@pytest.mark.parametrize("exc", [_slack("ratelimited"), _slack("service_unavailable"), _slack("fatal_error"),
                                 aiohttp.ClientConnectionError("refused"), TimeoutError(), ValueError("odd")])
async def test_anything_else_is_not(exc: BaseException) -> None:
    assert await refusal(_failing(exc)) is None


async def test_an_answer_is_not() -> None:
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    assert await refusal(ok) is None
