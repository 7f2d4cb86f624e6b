"""The clock rule for a fleet: a replica acts on time only while its clock agrees with the database's.

Due times, leases and heartbeats are written and compared with each replica's own clock (injected:
bot/services/clock.py), which keeps every test deterministic. What makes that safe across replicas is a
skew bound, enforced: before each full pass the worker reads the database's clock (PostgreSQL's
``clock_timestamp()``; SQLite's ``'now'``, the same machine's) and compares it with its own, taken around
the read. Beyond ``MAX_SKEW`` either way the replica does nothing judged by time — no revocation, grant,
lapse, reminder, warning or escalation, no outbox delivery, no freeing of other replicas' claims, no grant
taken from its own approvals, no heartbeat (so the others, whose clocks agree, take over its claims once
it is silent) — and the audit channel is alerted once (again when it recovers). ``/healthz`` and
``/metrics`` show the measured skew. So every replica that acts is within ``MAX_SKEW`` of the database,
and so of each other (2 × ``MAX_SKEW``): a grant is revoked at most ``MAX_SKEW`` early, and a replica is
declared dead only after ``DEAD_AFTER`` − 2 × ``MAX_SKEW`` of real silence.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from bot.services import notices
from bot.services.clock import Clock
from storage.db import Database

log = logging.getLogger(__name__)

MAX_SKEW = timedelta(seconds=10)
_PG_NOW = text("SELECT clock_timestamp()")
_SQLITE_NOW = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")


async def database_now(db: Database) -> datetime:
    """The database server's clock now (aware UTC)."""
    async with db.sessions() as session:
        value = (await session.execute(_SQLITE_NOW if db.is_sqlite else _PG_NOW)).scalar_one()
    at: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class ClockGuard:
    """Measures this replica's clock against the database's; ``ok`` while within ``bound``."""

    def __init__(self, db: Database, clock: Clock, *, instance: str, bound: timedelta = MAX_SKEW,
                 read_db_now: Callable[[], Awaitable[datetime]] | None = None) -> None:
        self.db, self.clock, self.instance, self.bound = db, clock, instance, bound
        self.read_db_now = read_db_now or (lambda: database_now(db))
        self.skew: timedelta | None = None  # the database's clock minus ours, last measured
        self.ok = True

    async def check(self) -> bool:
        """Measure the skew; alert when it crosses the bound (either way). Returns ``ok``."""
        before = self.clock.now()
        db_now = await self.read_db_now()
        after = self.clock.now()
        self.skew = db_now - (before + (after - before) / 2)
        ok = abs(self.skew) <= self.bound
        if ok != self.ok:
            self.ok = ok
            seconds = self.skew.total_seconds()
            if ok:
                text_ = (f"Replica {self.instance}: its clock is back within {self.bound.total_seconds():.0f} s "
                         f"of the database's ({seconds:+.1f} s); it resumes scheduled work.")
                log.warning(text_)
            else:
                text_ = (f"Replica {self.instance}: its clock is {abs(seconds):.0f} s "
                         f"{'behind' if seconds > 0 else 'ahead of'} the database's (bound "
                         f"{self.bound.total_seconds():.0f} s). It does no scheduled work — no revocation, grant "
                         "or lease — until its clock is fixed (NTP); the other replicas take over its work.")
                log.error(text_)
            async with self.db.transaction() as session:
                notices.alert(session, at=db_now, snap=None, text=text_)
        return ok
