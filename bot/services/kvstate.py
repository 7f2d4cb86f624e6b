"""Small persisted state in the ``kv`` table, read and written under a row lock (compare-and-set).

On PostgreSQL the row is locked ``FOR UPDATE``; SQLite has one writer (``BEGIN IMMEDIATE``). When the
row does not exist yet two replicas may both insert it: the loser's commit fails with
``IntegrityError``, which ``compare_and_set`` reports as "someone else did it".
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.tables import KeyValue

Value = dict[str, Any]
# Per database handle: a periodic job's next turn as last read or taken (``take_turn``). The turn's time
# in the kv row only moves forward (only a turn taken writes it, to a time after the one it replaced).
_NEXT_TURN: WeakKeyDictionary[Database, dict[str, datetime]] = WeakKeyDictionary()


async def read(session: AsyncSession, key: str, *, lock: bool = False) -> Value | None:
    stmt = select(KeyValue).where(KeyValue.key == key)  # type: ignore[arg-type]
    if lock:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).scalar_one_or_none()
    return dict(row.value) if row is not None else None


async def write(session: AsyncSession, key: str, value: Value) -> None:
    row = (await session.execute(select(KeyValue).where(KeyValue.key == key))).scalar_one_or_none()  # type: ignore[arg-type]
    if row is None:
        session.add(KeyValue(key=key, value=value))
    else:
        row.value = value


async def compare_and_set(db: Database, key: str, decide: Callable[[Value | None], Value | None],
                          then: Callable[[AsyncSession, Value], Any] | None = None) -> Value | None:
    """Lock ``key``; ``decide(current)`` returns the new value (or None to leave it). ``then`` runs in the
    same transaction (e.g. to enqueue the message the change stands for). Returns the value written, or
    None when nothing was (``decide`` declined, or another replica won the race)."""
    try:
        async with db.transaction() as session:
            new = decide(await read(session, key, lock=True))
            if new is None:
                return None
            await write(session, key, new)
            if then is not None:
                result = then(session, new)
                if hasattr(result, "__await__"):
                    await result
    except IntegrityError:
        return None
    return new


async def take_turn(db: Database, key: str, *, now: datetime, every: timedelta, by: str) -> bool:
    """Whether this replica takes a periodic job's turn: True once ``every`` has passed since any
    replica last took it (and records this turn), False otherwise."""

    def due(value: Value | None) -> bool:
        return value is None or datetime.fromisoformat(value["next_at"]) <= now

    # Asked on every full pass (each second) and nearly always not due. Until the next turn this process
    # last saw, nothing is read: that time only moves later, so it cannot have come sooner (three reads a
    # second per replica, one per job, before). Then a plain read says so without a write transaction;
    # a turn that looks due is taken under the lock, which decides between replicas.
    seen = _NEXT_TURN.setdefault(db, {})
    if key in seen and now < seen[key]:
        return False
    async with db.sessions() as session:
        value = await read(session, key)
    if value is not None and not due(value):
        seen[key] = datetime.fromisoformat(value["next_at"])
        return False
    taken = await compare_and_set(db, key, lambda v: {"next_at": (now + every).isoformat(), "by": by}
                                  if due(v) else None)
    if taken is not None:
        seen[key] = now + every
    return taken is not None
