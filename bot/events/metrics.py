"""Each sink's lag for ``/metrics``: events not yet taken, and the age of the oldest of them."""

from __future__ import annotations

from datetime import datetime

from bot.domain.policy_sections import EventSink
from bot.events import cursor
from storage.db import Database


async def sink_lag(db: Database, sinks: tuple[EventSink, ...], now: datetime) -> dict[str, tuple[int, float]]:
    """Per sink: (events behind, seconds since the oldest event not yet taken was written). A sink not
    started yet counts as not behind."""
    if not sinks:
        return {}
    head = await cursor.head_id(db)
    cursors = await cursor.read_all(db, [s.name for s in sinks])
    out: dict[str, tuple[int, float]] = {}
    for sink in sinks:
        found = cursors[sink.name]
        last = found.last_id if found is not None else head
        oldest = await cursor.oldest_after(db, last) if last < head else None
        out[sink.name] = (head - last, max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
    return out
