"""Requests from another workspace or organisation are refused before any listener runs.

Slack signs every workspace's requests to an app with the app's one signing secret, so a valid signature
says "Slack sent this", not "this comes from our workspace". Bolt's authorisation (``auth.test`` of the
bot token) says where jitbot is installed; this middleware compares the request's team and enterprise
(and the acting user's team) with it, and records the installation for ``SlackIdentity``, which checks
each user's own record (bot/slack/identity.py). Unless the policy admits external users, a request from
elsewhere is answered with a refusal and a warning line, and nothing else happens.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.response import BoltResponse

from bot.slack.identity import EXTERNAL, Installation, SlackIdentity

log = logging.getLogger(__name__)


def install(app: AsyncApp, identity: SlackIdentity) -> None:
    """Register the check; call it before any other middleware or listener is added."""

    @app.middleware
    async def _installed_workspace_only(context: AsyncBoltContext, body: dict[str, Any],
                                        next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
        result = context.authorize_result
        if result is not None:
            identity.installation = Installation(result.team_id, result.enterprise_id)
        user = body.get("user")
        user_team = user.get("team_id") if isinstance(user, dict) else None
        teams = frozenset(t for t in (context.team_id, user_team) if t)
        elsewhere = any(identity.is_external(teams=frozenset({t}), enterprise_id=context.enterprise_id)
                        for t in teams) or (result is not None and result.enterprise_id is not None
                                            and context.enterprise_id not in (None, result.enterprise_id))
        if elsewhere and not identity.admission().external:
            log.warning("refused a Slack request from team %s / enterprise %s (user team %s): jitbot is "
                        "installed in team %s / enterprise %s", context.team_id, context.enterprise_id, user_team,
                        result.team_id if result else None, result.enterprise_id if result else None)
            return BoltResponse(status=200, body=EXTERNAL)
        await next()
        return None
