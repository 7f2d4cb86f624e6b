"""An aiosqlite connection that runs its statements on the event-loop thread.

aiosqlite sends every call (each execute, fetch, commit) to a thread of its own and back: a queue put,
a thread wake-up, the GIL handed over twice and a ``call_soon_threadsafe`` that wakes the loop. A local
SQLite statement takes microseconds; those hops cost far more, and while a write transaction waits
for them it holds SQLite's single writer lock. Profiling the bot under load showed about half its CPU
in that machinery and the writer lock held almost all the time.

``InlineConnection`` keeps aiosqlite's interface (SQLAlchemy's aiosqlite dialect drives it unchanged)
but calls sqlite3 directly. One thing must not block the loop: waiting for another *process* that
holds the database lock. The connection therefore runs with ``busy_timeout=0`` and, when SQLite says
the database is locked, sleeps asynchronously and tries the same call again (up to ``busy_seconds``).
That is safe for the calls that can be refused for a lock: ``BEGIN IMMEDIATE`` (nothing happened yet),
a read (nothing changed) and ``COMMIT`` (the transaction stays open; retrying is SQLite's advice).

Statements that never wait would also never give the loop a turn: a run of them (a transaction, a sweep)
would hold back everything else, Bolt's answer to Slack included (it looks for the listener's ``ack()``
every 10 ms). So a statement first lets the loop run when ``YIELD_AFTER`` has passed since it last did.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import aiosqlite

_LOCKED = ("database is locked", "database is busy", "database table is locked")
YIELD_AFTER = 0.002  # seconds of statements, at most, before the event loop gets a turn
_last_turn = 0.0  # monotonic time the loop last got a turn from here


def _is_locked(error: sqlite3.OperationalError) -> bool:
    return str(error).lower().startswith(_LOCKED)


class _InlineQueue:
    """Stands in for aiosqlite's thread queue (SQLAlchemy's isolation-level setter writes to it)."""

    @staticmethod
    def put_nowait(item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting future, as aiosqlite does
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """aiosqlite's Connection without its thread: sqlite3 is called on the event-loop thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], *, busy_seconds: float = 30.0) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _InlineQueue()  # type: ignore[assignment]
        self._busy_seconds = busy_seconds

    def __await__(self) -> Any:  # no thread to start
        return self._connect().__await__()

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = await self._execute(self._connector)
        return self

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        global _last_turn
        if not self._running:
            raise ValueError("Connection closed")
        if time.monotonic() - _last_turn > YIELD_AFTER:
            await asyncio.sleep(0)  # let the loop run what is ready (an ack to send, a timer that is due)
            _last_turn = time.monotonic()
        deadline: float | None = None
        pause = 0.001
        while True:
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._busy_seconds
                if now >= deadline:
                    raise
                await asyncio.sleep(pause)  # another process holds the lock: wait without blocking the loop
                pause = min(pause * 2, 0.004)

    def stop(self) -> asyncio.Future[Any] | None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        return None

    async def close(self) -> None:
        self.stop()


def inline_creator(path: str, *, busy_seconds: float = 30.0) -> Callable[[], Any]:
    """``async_creator`` for ``create_async_engine``: connections to ``path`` that run inline."""

    def connector() -> sqlite3.Connection:
        # autocommit at the driver: the engine's "begin" listener issues BEGIN / BEGIN IMMEDIATE itself
        return sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)

    async def create() -> InlineConnection:
        return await InlineConnection(connector, busy_seconds=busy_seconds)._connect()

    return create
