"""Slack's ``user_change`` and ``team_join`` events keep the people directory (``bot/services/people.py``)
current by *forgetting* what they concern — the address in the event and the one last learned for that
user id — so that the next message asks Slack (``users.lookupByEmail``, the workspace's own answer).
Nothing in an event is written: a guest or a user of another workspace can put an approver's address in
their own profile, and must not receive that approver's DMs."""

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
        if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
            return
        await people.forget(rt.db, email if isinstance(email, str) else "", user_id=user_id)

    @app.event("user_change")
    async def user_changed(event: dict[str, Any]) -> None:
        await person_changed(event)

    @app.event("team_join")
    async def team_joined(event: dict[str, Any]) -> None:
        await person_changed(event)
