"""SQLite for the async engine with every statement run directly on the event-loop thread.

aiosqlite sends every call (each execute, fetch, commit) to a thread of its own and back: a queue put,
a thread wake-up, the GIL handed over twice and a ``call_soon_threadsafe`` that wakes the loop. A local
SQLite statement takes microseconds; those hops cost far more, and while a write transaction waits
for them it holds SQLite's single writer lock. Profiling the bot under load showed about half its CPU
in that machinery and the writer lock held almost all the time.

So the engine keeps SQLAlchemy's aiosqlite dialect (an async engine, the same SQL, the same pool) but
is given this module as its DB-API (``create_async_engine(..., module=InlineDBAPI())``): a connection
whose cursor calls ``sqlite3`` synchronously. SQLAlchemy runs its side of a statement in a greenlet;
the aiosqlite adapter then leaves the greenlet for every driver call (cursor, execute, fetch, close:
four round trips through the loop's coroutine machinery per statement), where this one stays in it.

One thing must not block the loop: waiting for another *process* that holds the database lock. The
connection therefore runs with ``busy_timeout=0`` and, when SQLite says the database is locked, sleeps
asynchronously (``await_`` from the greenlet hands the sleep to the loop) and tries the same call again
(up to ``busy_seconds``). That is safe for the calls that can be refused for a lock: ``BEGIN IMMEDIATE``
(nothing happened yet), a read (nothing changed) and ``COMMIT`` (the transaction stays open; retrying is
SQLite's advice).

Statements that never wait would also never give the loop a turn: a run of them (a transaction, a sweep)
would hold back everything else, Bolt's answer to Slack included (it looks for the listener's ``ack()``
every 10 ms). So a statement first lets the loop run when ``YIELD_AFTER`` has passed since it last did.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite
from greenlet import getcurrent  # type: ignore[import-untyped]
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi
from sqlalchemy.engine import AdaptedConnection
from sqlalchemy.util.concurrency import await_

_LOCKED = ("database is locked", "database is busy", "database table is locked")
YIELD_AFTER = 0.002  # seconds of statements, at most, before the event loop gets a turn
_last_turn = 0.0  # monotonic time the loop last got a turn from here


async def _nothing() -> None:
    return None


def is_locked(error: sqlite3.OperationalError) -> bool:
    return str(error).lower().startswith(_LOCKED)


def turn_due() -> bool:
    """Whether statements have run for ``YIELD_AFTER`` since the loop last had a turn from here."""
    return time.monotonic() - _last_turn > YIELD_AFTER


def took_turn() -> None:
    global _last_turn
    _last_turn = time.monotonic()


class Backoff:
    """Pauses while another process holds the database lock: 1 ms doubling to 4 ms, until ``busy_seconds``
    have passed since the first refusal; ``next()`` is the next pause, or None when the time is up."""

    def __init__(self, busy_seconds: float) -> None:
        self.busy_seconds = busy_seconds
        self.deadline: float | None = None
        self.pause = 0.001

    def next(self) -> float | None:
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.busy_seconds
        if now >= self.deadline:
            return None
        pause, self.pause = self.pause, min(self.pause * 2, 0.004)
        return pause


async def locked_retry(sql: str, connection: sqlite3.Connection, busy_seconds: float) -> None:
    """Run ``sql`` (BEGIN IMMEDIATE, COMMIT) outside SQLAlchemy (storage/core_tx.py); while another process
    holds the database lock, wait without blocking the loop and try again, as ``InlineConnection.call``."""
    backoff = Backoff(busy_seconds)
    while True:
        try:
            connection.execute(sql)
            return
        except sqlite3.OperationalError as error:
            if not is_locked(error) or (pause := backoff.next()) is None:
                raise
            await asyncio.sleep(pause)


class InlineConnection(AdaptedConnection):
    """A DB-API connection over ``sqlite3`` for the async engine; ``driver_connection`` is the sqlite3 one."""

    __slots__ = ("_busy_seconds", "_sqlite")

    def __init__(self, connection: sqlite3.Connection, busy_seconds: float) -> None:
        self._connection = connection  # type: ignore[assignment]  # what ``driver_connection`` returns
        self._sqlite = connection
        self._busy_seconds = busy_seconds

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on this thread; a lock held by another process is waited for asynchronously."""
        current = getcurrent()
        greenlet = getattr(current, "__sqlalchemy_greenlet_provider__", False)
        if greenlet and turn_due():
            await_(asyncio.sleep(0))  # let the loop run what is ready (an ack to send, a timer that is due)
            took_turn()
            current.__dict__["awaited"] = True
        elif greenlet and "awaited" not in current.__dict__:
            # SQLAlchemy's AsyncConnection.execute insists that its greenlet awaited something (it checks
            # that the driver is an async one): one empty round trip per greenlet, not one per call
            await_(_nothing())
            current.__dict__["awaited"] = True
        backoff = Backoff(self._busy_seconds)
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                if not is_locked(exc) or not greenlet or (pause := backoff.next()) is None:
                    raise
                await_(asyncio.sleep(pause))  # another process holds the lock: wait without blocking the loop

    def cursor(self, server_side: bool = False) -> InlineCursor:
        return InlineCursor(self)

    def commit(self) -> None:
        self.call(self._sqlite.commit)

    def rollback(self) -> None:
        self._sqlite.rollback()

    def close(self) -> None:
        self._sqlite.close()

    def terminate(self) -> None:
        self._sqlite.close()

    @property
    def isolation_level(self) -> str | None:
        return self._sqlite.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._sqlite.isolation_level = value  # type: ignore[assignment]  # as the DB-API passes it

    def create_function(self, *args: Any, **kw: Any) -> None:
        self._sqlite.create_function(*args, **kw)


class InlineCursor:
    """A DB-API cursor whose calls go through ``InlineConnection.call``."""

    __slots__ = ("_conn", "_cursor")
    server_side = False

    def __init__(self, conn: InlineConnection) -> None:
        self._conn = conn
        self._cursor = conn._sqlite.cursor()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    def execute(self, operation: str, parameters: Any = None) -> Any:
        return self._conn.call(self._cursor.execute, operation, () if parameters is None else parameters)

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> Any:
        return self._conn.call(self._cursor.executemany, operation, seq_of_parameters)

    def fetchone(self) -> Any:
        return self._conn.call(self._cursor.fetchone)

    def fetchmany(self, size: int | None = None) -> Any:
        return self._conn.call(self._cursor.fetchmany, self._cursor.arraysize if size is None else size)

    def fetchall(self) -> Any:
        return self._conn.call(self._cursor.fetchall)

    def close(self) -> None:
        self._cursor.close()

    def nextset(self) -> None:
        return None

    async def _async_soft_close(self) -> None:
        """SQLAlchemy's async result calls this before handing rows to non-greenlet code; the rows stay
        readable here (fetching them never leaves this thread), so there is nothing to do."""


class InlineDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DB-API module the aiosqlite dialect is given: same names and errors, inline connections."""

    def __init__(self, *, busy_seconds: float = 30.0) -> None:
        super().__init__(aiosqlite, sqlite3)
        self.busy_seconds = busy_seconds

    def connect(self, *arg: Any, **kw: Any) -> InlineConnection:  # type: ignore[override]
        database = arg[0] if arg else kw["database"]
        # autocommit at the driver: storage/db.py issues BEGIN IMMEDIATE for writes itself
        conn = sqlite3.connect(database, timeout=0, isolation_level=None, check_same_thread=False,
                               uri=bool(kw.get("uri")))
        return InlineConnection(conn, self.busy_seconds)
