"""Slash commands and button clicks are acknowledged before their listener starts.

Bolt (HTTP mode) starts a listener as a task, then looks every 10 ms whether it has called ``ack()``
(``AsyncioListenerRunner.run``): the first look comes before the task has run at all, so every answer
to Slack waited at least one 10 ms poll, and more when the listener's work after its ``ack()`` held the
loop at the moment of the next look. Every one of jitbot's command and ``block_actions`` listeners acks
first and with an empty body (nothing in them can change the answer; their checks and refusals come
after, as messages). So this middleware — after Bolt's signature check and authorisation, which still
refuse a bad request with 401 — acks those two kinds of request itself: the runner finds ``ack()``
done and answers at once, and the listener's own ``ack()`` changes nothing. Modal submissions
(``view_submission``) are not acked here: their ack carries field errors or the next view. A request
no listener matches is still answered 404 by Bolt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.request.payload_utils import is_block_actions, is_slash_command


def acked_early(body: dict[str, Any]) -> bool:
    """The requests whose listeners all ack first, with nothing in the ack."""
    return is_slash_command(body) or is_block_actions(body)


def install(app: AsyncApp) -> None:
    @app.middleware
    async def _ack_early(context: AsyncBoltContext, body: dict[str, Any],
                         next: Callable[[], Awaitable[None]]) -> None:
        if acked_early(body):
            await context.ack()
        await next()
