"""Slack user → email (users.info, cached). The email is the key into the identity provider."""

from __future__ import annotations

import time

from slack_sdk.web.async_client import AsyncWebClient


class NoEmail(Exception):
    """The Slack user has no email we can see (bots, guests without the scope)."""


class SlackIdentity:
    def __init__(self, ttl: float = 600.0) -> None:
        self.ttl = ttl
        self._cache: dict[str, tuple[float, str]] = {}

    async def email(self, client: AsyncWebClient, user_id: str) -> str:
        hit = self._cache.get(user_id)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        resp = await client.users_info(user=user_id)
        user = resp["user"]
        email = (user.get("profile") or {}).get("email")
        if user.get("is_bot") or not email:
            raise NoEmail(user_id)
        self._cache[user_id] = (time.monotonic(), str(email).lower())
        return str(email).lower()
