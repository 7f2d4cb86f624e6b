"""People's Slack user ids by email, kept in the database: shared by replicas and kept across restarts.

Slack's ``users.lookupByEmail`` is a Tier 3 method (50+ calls a minute per workspace,
https://docs.slack.dev/reference/methods/users.lookupByEmail): a burst of expiry notices to ten
thousand people that each needed a lookup would take over three hours. So an id, once learned, is
written here; every replica reads it back instead of asking Slack again, a restart loses nothing. Only
Slack's own answer to a lookup is written: its ``user_change`` / ``team_join`` events merely *forget* what
they concern (the person's new address, and the address last learned for their id), so that the next
message asks Slack again — an event's content (which a guest or a user of another workspace can shape:
their own profile's email) never decides where a DM goes. An entry older than ``TTL`` is asked again.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete

from bot.services import kvstate
from storage.db import Database
from storage.tables import KeyValue

TTL = timedelta(days=7)
_PREFIX = "slack:person:"
_BY_ID = "slack:person-id:"  # user id → the address last learned for it (so that an event can forget it)


def _key(email: str) -> str:
    email = email.strip().lower()
    # the kv key holds 128 characters: a long address is keyed by its digest
    return _PREFIX + (email if len(_PREFIX) + len(email) <= 128 else "sha256:" + hashlib.sha256(
        email.encode()).hexdigest())


async def known(db: Database, email: str, now: datetime) -> str | None:
    """The Slack user id last seen for ``email``, unless it is older than ``TTL``."""
    async with db.sessions() as session:
        value = await kvstate.read(session, _key(email))
    if not value or not isinstance(value.get("user_id"), str):
        return None
    try:
        seen = datetime.fromisoformat(str(value.get("at")))
    except ValueError:
        return None
    return value["user_id"] if now - seen < TTL else None


async def remember(db: Database, email: str, user_id: str, now: datetime) -> None:
    """Write what Slack's ``users.lookupByEmail`` answered (and nothing else)."""
    async with db.transaction() as session:
        await kvstate.write(session, _key(email), {"user_id": user_id, "at": now.isoformat()})
        await kvstate.write(session, (_BY_ID + user_id)[:128], {"email": email.strip().lower()})


async def forget(db: Database, email: str, *, user_id: str | None = None) -> None:
    """Forget ``email``'s entry and, with ``user_id``, the address last learned for that id."""
    async with db.transaction() as session:
        keys = [_key(email)]
        if user_id:
            by_id = (_BY_ID + user_id)[:128]
            last = await kvstate.read(session, by_id)
            if last and isinstance(last.get("email"), str):
                keys.append(_key(last["email"]))
            keys.append(by_id)
        await session.execute(delete(KeyValue).where(KeyValue.key.in_(keys)))  # type: ignore[attr-defined]
