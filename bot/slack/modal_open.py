"""Opening a modal within the life of Slack's trigger_id — or, when that cannot be done, never silence.

A ``trigger_id`` is valid for 3 seconds after the click or command (Slack: "Using triggers"). Building
the request form asks the directory what the person may request; on a slow identity provider (a cold
cache, an outage) that can outlast the trigger, and a ``views.open`` after it fails with
``expired_trigger_id``: no modal, and without this module no message either. So the view is built
under a deadline; when it misses it, when the IdP fails, or when Slack refuses the trigger, the person
gets a message with a button that opens the form — a click, so a fresh trigger. The directory's calls
go on in the background (they are shared and cached, ``bot/services/directory.py``): the second try
is usually instant.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from connectors.base import ConnectorError

log = logging.getLogger(__name__)

# Seconds the view may take to build: Slack's trigger lives 3 s from the click, and the command's
# own way here (ack, the Slack identity) and views.open itself need some of it.
BUILD_DEADLINE = 2.0
STALE_TRIGGER = frozenset({"expired_trigger_id", "invalid_trigger_id", "exchanged_trigger_id"})

SLOW = "The identity provider is slow to answer, so the form could not open in time."
IDP_FAILED = "The identity provider did not answer, so the form could not open."
EXPIRED = "Slack closed the window for opening the form before it was ready."

Tell = Callable[[str, list[dict[str, Any]]], Awaitable[None]]


def retry_blocks(text: str, *, label: str, action_id: str, value: str) -> list[dict[str, Any]]:
    """``text`` and one button that opens the form again (its click brings a fresh trigger_id)."""
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "elements": [{"type": "button", "action_id": action_id, "value": value,
                                          "style": "primary", "text": {"type": "plain_text", "text": label}}]},
    ]


async def open_view(client: AsyncWebClient, trigger_id: str, build: Callable[[], Awaitable[dict[str, Any]]], *,
                    tell: Tell, label: str, action_id: str, value: str,
                    deadline: float | None = None) -> bool:
    """Build the view (within ``deadline`` seconds) and open it; True when it opened. Otherwise ``tell``
    the person why, with a button (``action_id``/``value``) that tries again, and return False."""
    deadline = BUILD_DEADLINE if deadline is None else deadline
    try:
        view = await asyncio.wait_for(build(), deadline)
    except TimeoutError:
        reason = SLOW
        log.warning("a view was not ready within %.1f s; offered a button instead", deadline)
    except ConnectorError as exc:
        reason = IDP_FAILED
        log.warning("a view could not be built: %s; offered a button instead", exc)
    else:
        try:
            await client.views_open(trigger_id=trigger_id, view=view)
            return True
        except SlackApiError as exc:
            if exc.response.get("error") not in STALE_TRIGGER:
                raise
            reason = EXPIRED
            log.warning("views.open refused the trigger (%s); offered a button instead", exc.response.get("error"))
    text = f"{reason} Press the button to try again."
    await tell(text, retry_blocks(text, label=label, action_id=action_id, value=value))
    return False
