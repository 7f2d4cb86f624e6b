"""Slack user → email (users.info, cached). The email is the key into the identity provider.

Only people of the workspace (or Enterprise Grid organisation) jitbot is installed in are matched, and
not its guests, unless the policy admits them (``settings.allow_slack_external_users`` /
``allow_slack_guests``): an email is only as trustworthy as the workspace that vouches for it, and a
user of another workspace whose profile carries an approver's address must not act as that approver.
The user object's fields are Slack's (https://api.slack.com/types/user): ``team_id``, ``is_stranger``,
``is_restricted`` (multi-channel guest), ``is_ultra_restricted`` (single-channel guest), ``deleted``,
``enterprise_user.enterprise_id`` / ``.teams``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

NO_EMAIL = ("jitbot cannot see an email address for your Slack account, so it cannot match you to an "
            "identity-provider account.")
GUEST = "jitbot does not act for guest accounts; ask a JIT administrator if you need access."
EXTERNAL = "jitbot acts only for members of the Slack workspace it is installed in."


class NoEmail(Exception):
    """The Slack user cannot be matched to an identity-provider account (a bot, no visible email, a
    guest, someone of another workspace); ``message`` says why, for that user."""

    def __init__(self, user_id: str, message: str = NO_EMAIL) -> None:
        super().__init__(user_id)
        self.message = message


@dataclass(frozen=True)
class Installation:
    """Where this app is installed, from Bolt's authorisation (``auth.test`` of the bot token)."""

    team_id: str | None
    enterprise_id: str | None


@dataclass(frozen=True)
class Admission:
    """Which Slack users besides the workspace's full members may act (the policy's settings)."""

    guests: bool = False
    external: bool = False


@dataclass(frozen=True)
class _Seen:
    at: float
    email: str
    guest: bool
    teams: frozenset[str]
    enterprise_id: str | None
    stranger: bool


class SlackIdentity:
    def __init__(self, ttl: float = 600.0, *, admission: Callable[[], Admission] = Admission) -> None:
        self.ttl = ttl
        self.admission = admission
        # Set from every request before its listener runs (bot/slack/installation.py); until then no
        # user counts as the workspace's own.
        self.installation: Installation | None = None
        self._cache: dict[str, _Seen] = {}

    def is_external(self, *, teams: frozenset[str], enterprise_id: str | None, stranger: bool = False) -> bool:
        """Whether a user of these teams / this enterprise is outside the installation."""
        inst = self.installation
        if stranger or inst is None:
            return True
        if inst.team_id is not None:
            return inst.team_id not in teams
        return inst.enterprise_id is None or inst.enterprise_id != enterprise_id  # an org-wide installation

    async def email(self, client: AsyncWebClient, user_id: str) -> str:
        """The user's email, lower case; raises NoEmail (with a message for them) when they may not act."""
        seen = self._cache.get(user_id)
        if seen is None or time.monotonic() - seen.at >= self.ttl:
            resp = await client.users_info(user=user_id)
            seen = _seen(resp["user"], user_id)
            self._cache[user_id] = seen
        admit = self.admission()
        if not admit.external and self.is_external(teams=seen.teams, enterprise_id=seen.enterprise_id,
                                                   stranger=seen.stranger):
            raise NoEmail(user_id, EXTERNAL)
        if seen.guest and not admit.guests:
            raise NoEmail(user_id, GUEST)
        return seen.email


def _seen(user: dict[str, Any], user_id: str) -> _Seen:
    email = (user.get("profile") or {}).get("email")
    if user.get("is_bot") or user.get("deleted") or not email:
        raise NoEmail(user_id)
    grid = user.get("enterprise_user") or {}
    teams = {str(t) for t in grid.get("teams") or [] if t} | ({str(user["team_id"])} if user.get("team_id") else set())
    guest = bool(user.get("is_restricted") or user.get("is_ultra_restricted"))
    return _Seen(time.monotonic(), str(email).lower(), guest, frozenset(teams), grid.get("enterprise_id"),
                 bool(user.get("is_stranger")))
