"""Slash commands and button clicks are acknowledged before their listener starts.

Bolt (HTTP mode) starts a listener as a task, then looks every 10 ms whether it has called ``ack()``
(``AsyncioListenerRunner.run``): the first look comes before the task has run at all, so every answer
to Slack waited at least one 10 ms poll, and more when the listener's work after its ``ack()`` held the
loop at the moment of the next look. Every one of jitbot's command and ``block_actions`` listeners acks
first and with an empty body (nothing in them can change the answer; their checks and refusals come
after, as messages). So this middleware — after Bolt's signature check and authorisation, which still
refuse a bad request with 401 — acks those two kinds of request itself: the runner finds ``ack()``
done and answers at once, and the listener's own ``ack()`` changes nothing. Modal submissions
(``view_submission``) carry field errors in their ack: the request modal's are computed here without
I/O (``bot/slack/request_form.py``), then the few that need it (a Jira ticket, a multi-pick's items)
within 2 s, and acked, and the form is left in the context for the listener,
whose own ``ack()`` gives the same answer; other modals ack in their listener. A request no listener
matches is still answered 404 by Bolt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.request.payload_utils import is_block_actions, is_slash_command, is_view_submission

from bot.services.runtime import Runtime
from bot.slack import ids
from bot.slack.identity import SlackIdentity
from bot.slack.request_form import CONTEXT_KEY, check_form_io, read_request_form


def acked_early(body: dict[str, Any]) -> bool:
    """The requests whose listeners all ack first, with nothing in the ack."""
    return is_slash_command(body) or is_block_actions(body)


def is_request_form(body: dict[str, Any]) -> bool:
    """A submission of the request modal (``/jit``'s)."""
    view = body.get("view")
    return is_view_submission(body) and isinstance(view, dict) and view.get("callback_id") == ids.REQUEST_VIEW


def install(app: AsyncApp, rt: Runtime, identity: SlackIdentity) -> None:
    @app.middleware
    async def _ack_early(context: AsyncBoltContext, body: dict[str, Any],
                         next: Callable[[], Awaitable[None]]) -> None:
        if acked_early(body):
            await context.ack()
        elif is_request_form(body):
            try:
                form = read_request_form(rt, body)
            except (KeyError, TypeError, AttributeError):  # a malformed form: the listener answers it
                pass
            else:
                # Jira, and a multi-pick's items (I/O): only forms that ask it
                form = await check_form_io(rt, form, lambda user: identity.email(context.client, user))
                context[CONTEXT_KEY] = form
                await context.ack(**form.ack_args())
        await next()
