"""Slack's ``user_change`` and ``team_join`` events keep the people directory (``bot/services/people.py``)
current: a changed email is written at once, a deactivated account is forgotten."""

from __future__ import annotations

import re
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.services import people
from bot.services.runtime import Runtime

_USER_ID = re.compile(r"[UW][A-Z0-9]{2,40}")


def register(app: AsyncApp, rt: Runtime) -> None:
    async def person_changed(event: dict[str, Any]) -> None:
        user = event.get("user") or {}
        user_id, email = user.get("id"), (user.get("profile") or {}).get("email")
        if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id) or not isinstance(email, str) or not email:
            return
        if user.get("deleted") or user.get("is_bot"):
            await people.forget(rt.db, email)
        else:
            await people.remember(rt.db, email, user_id, rt.clock.now())

    @app.event("user_change")
    async def user_changed(event: dict[str, Any]) -> None:
        await person_changed(event)

    @app.event("team_join")
    async def team_joined(event: dict[str, Any]) -> None:
        await person_changed(event)
