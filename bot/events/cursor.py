"""Each sink's cursor — the id of the last audit event it took — and its lease, in the ``kv`` table.

``event_sink:<name>`` holds ``{"last_id", "owner", "lease_until"}``. One replica at a time sends a sink's
events: it takes the lease before sending and moves the cursor only while it holds the lease and the
cursor is where it started from. ``rewind`` (``jitbot events replay``) moves the cursor back at any
time; a sender that started before the rewind then cannot move it forward, and sends again from the
rewound position on its next pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlmodel import col

from bot.services import kvstate
from storage.db import Database
from storage.tables import Event

PREFIX = "event_sink:"


@dataclass(frozen=True)
class Cursor:
    last_id: int
    owner: str | None
    lease_until: datetime | None

    def free_for(self, owner: str, now: datetime) -> bool:
        return self.owner in (None, owner) or self.lease_until is None or self.lease_until <= now


def _cursor(value: kvstate.Value | None) -> Cursor | None:
    if value is None:
        return None
    until = value.get("lease_until")
    return Cursor(int(value["last_id"]), value.get("owner"), datetime.fromisoformat(until) if until else None)


async def head_id(db: Database) -> int:
    """The id of the newest audit event (0 when there is none)."""
    async with db.sessions() as session:
        return int((await session.execute(select(func.max(Event.id)))).scalar() or 0)


async def read(db: Database, name: str) -> Cursor | None:
    async with db.sessions() as session:
        return _cursor(await kvstate.read(session, PREFIX + name))


async def read_all(db: Database, names: list[str]) -> dict[str, Cursor | None]:
    async with db.sessions() as session:
        return {n: _cursor(await kvstate.read(session, PREFIX + n)) for n in names}


async def start(db: Database, name: str) -> Cursor:
    """The sink's cursor; a sink seen for the first time starts after the newest event (older ones are
    sent by ``jitbot events replay --since``)."""
    found = await read(db, name)
    if found is not None:
        return found
    head = await head_id(db)
    await kvstate.compare_and_set(db, PREFIX + name, lambda v: {"last_id": head, "owner": None,
                                                                "lease_until": None} if v is None else None)
    found = await read(db, name)
    assert found is not None
    return found


async def take(db: Database, name: str, *, owner: str, at: int, now: datetime, lease: timedelta) -> bool:
    """Take (or renew) the lease to send the sink's events from ``at`` on; False if another replica holds
    it or the cursor is no longer at ``at``."""
    def decide(value: kvstate.Value | None) -> kvstate.Value | None:
        current = _cursor(value)
        if current is None or current.last_id != at or not current.free_for(owner, now):
            return None
        return {"last_id": at, "owner": owner, "lease_until": (now + lease).isoformat()}

    return await kvstate.compare_and_set(db, PREFIX + name, decide) is not None


async def advance(db: Database, name: str, *, owner: str, start: int, to: int, now: datetime,
                  lease: timedelta) -> bool:
    """Move the cursor from ``start`` to ``to`` (events up to ``to`` taken), renewing the lease; False, and
    nothing changed, if the lease was lost or the cursor was rewound meanwhile."""
    def decide(value: kvstate.Value | None) -> kvstate.Value | None:
        current = _cursor(value)
        if current is None or current.owner != owner or current.last_id != start:
            return None
        return {"last_id": to, "owner": owner, "lease_until": (now + lease).isoformat()}

    return await kvstate.compare_and_set(db, PREFIX + name, decide) is not None


async def rewind(db: Database, name: str, *, since: int) -> Cursor | None:
    """Send again from event ``since`` on: the cursor goes back to ``since - 1`` (never forward). None if
    the sink has no cursor yet (it was never started)."""
    def decide(value: kvstate.Value | None) -> kvstate.Value | None:
        current = _cursor(value)
        if current is None:
            return None
        return {**(value or {}), "last_id": min(current.last_id, since - 1)}

    written = await kvstate.compare_and_set(db, PREFIX + name, decide)
    return _cursor(written)


async def events_after(db: Database, last_id: int, limit: int) -> list[Event]:
    """Up to ``limit`` audit events after ``last_id``, oldest first."""
    async with db.sessions() as session:
        stmt = select(Event).where(Event.id > last_id).order_by(Event.id).limit(limit)  # type: ignore[arg-type,operator]
        return list((await session.execute(stmt)).scalars().all())


async def oldest_after(db: Database, last_id: int) -> datetime | None:
    """When the first event not yet taken was written (for the lag in seconds)."""
    async with db.sessions() as session:
        stmt = select(col(Event.at)).where(col(Event.id) > last_id).order_by(col(Event.id)).limit(1)
        at: datetime | None = (await session.execute(stmt)).scalar()
        return at
