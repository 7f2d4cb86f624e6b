"""Transactions and reads made of Core statements only, without an ORM session where SQLite allows.

A session costs SQLAlchemy's whole machinery around each transaction and each statement: measured on
this project's machine, a two-statement write transaction on SQLite took ~380 µs of CPU through an
``AsyncSession`` and ~20 µs through ``sqlite3`` itself. The outbox's records and claims, the reads of
message references and the like run several times per flow and need no ORM, no audit event and no
outbox message — so on SQLite with statements on the event-loop thread (storage/inline_sqlite.py) they
run here: a pooled connection of the same engine (same PRAGMAs, same page cache), ``BEGIN IMMEDIATE`` /
``COMMIT`` under the process's writer turn (``Database.transaction``'s), and each statement prepared
once (storage/prepared.py). On PostgreSQL, and on SQLite with aiosqlite's threads, the same calls run
in an ordinary session. Callers see one interface (``CoreTx``) and rows with attribute access.

Audit events and outbox messages written in a Core transaction (``append_event``, ``enqueue``) wait in
its ``info`` as in a session's; on SQLite the hooks registered in ``BEFORE_COMMIT`` write them just
before ``COMMIT``, as the session's ``before_commit`` listeners do (bot/services/auditing/audit.py, outbox_write.py).
Model rows are read and written as plain objects with storage/records.py. What needs the ORM's
identity map, relationships or autoflush stays on ``Database.transaction()``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.util.concurrency import greenlet_spawn

from storage import inline_sqlite
from storage.prepared import prepared

Params = Mapping[str, Any]

# Run on SQLite just before a Core transaction's COMMIT, in order, with (its info, the dialect, the sqlite3
# connection): they write what the transaction queued in ``info`` (audit events, outbox messages).
BeforeCommit = Callable[[dict[str, Any], Dialect, sqlite3.Connection], None]
BEFORE_COMMIT: list[BeforeCommit] = []


class CoreTx:
    """A transaction (or, from ``Database.core_reads``, a run of reads) of Core statements."""

    # what the transaction carries to its commit (as ``Session.info``): pending events and messages
    info: dict[str, Any]

    async def rows(self, statement: Any, params: Params | None = None) -> list[Any]:
        """Run ``statement``; its rows (SELECT, or RETURNING), ``[]`` when it returns none."""
        raise NotImplementedError

    async def many(self, statement: Any, params: Sequence[Params]) -> None:
        """Run ``statement`` once per parameter set (no RETURNING)."""
        raise NotImplementedError

    async def scalars(self, statement: Any, params: Params | None = None) -> list[Any]:
        return [row[0] for row in await self.rows(statement, params)]


class SessionCore(CoreTx):
    """Core statements in an ``AsyncSession`` (PostgreSQL; SQLite through aiosqlite's threads)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.info = session.info  # the session's own commit hooks write what waits here

    async def rows(self, statement: Any, params: Params | None = None) -> list[Any]:
        result = await self.session.execute(statement, dict(params or {}))
        # a cursor's result knows whether it has rows; an ORM-enabled SELECT's always has
        return list(result.all()) if getattr(result, "returns_rows", True) else []

    async def many(self, statement: Any, params: Sequence[Params]) -> None:
        if params:
            await self.session.execute(statement, list(params))


def _sa_error(error: sqlite3.Error, sql: str, params: Any) -> sa_exc.DBAPIError:
    """sqlite3's error as SQLAlchemy would raise it (callers catch ``IntegrityError`` and the like)."""
    cls = (sa_exc.IntegrityError if isinstance(error, sqlite3.IntegrityError)
           else sa_exc.OperationalError if isinstance(error, sqlite3.OperationalError) else sa_exc.DatabaseError)
    return cls(sql, params, error)


class SqliteCore(CoreTx):
    """Core statements straight on a sqlite3 connection, on the event-loop thread."""

    def __init__(self, connection: sqlite3.Connection, dialect: Dialect, info: dict[str, Any] | None = None) -> None:
        self.connection, self.dialect = connection, dialect
        self.info = info if info is not None else {}

    def before_commit(self) -> None:
        """Write what waits in ``info`` (``BEFORE_COMMIT``); in the transaction, before its COMMIT."""
        for hook in BEFORE_COMMIT:
            hook(self.info, self.dialect, self.connection)

    async def _turn(self) -> None:
        if inline_sqlite.turn_due():  # a run of statements still lets the loop run what is ready
            await asyncio.sleep(0)
            inline_sqlite.took_turn()

    async def rows(self, statement: Any, params: Params | None = None) -> list[Any]:
        await self._turn()
        p = prepared(statement, self.dialect)
        try:
            return p.run(self.connection, params or {})
        except sqlite3.Error as error:
            raise _sa_error(error, p.sql, params) from error

    async def many(self, statement: Any, params: Sequence[Params]) -> None:
        if not params:
            return
        await self._turn()
        keys = tuple(params[0]) if getattr(statement, "is_insert", False) else None
        p = prepared(statement, self.dialect, keys)
        try:
            p.run_many(self.connection, params)
        except sqlite3.Error as error:
            raise _sa_error(error, p.sql, params) from error


async def checkout(engine: AsyncEngine) -> Any:
    """A pooled connection of ``engine`` (its ``_ConnectionFairy``); ``close()`` returns it. Taken
    directly while the pool has one idle; otherwise in a greenlet, where the pool may wait for one."""
    pool = engine.sync_engine.pool
    if pool.checkedin() > 0:  # type: ignore[attr-defined]  # QueuePool's
        return pool.connect()
    return await greenlet_spawn(pool.connect)


async def locked_retry(sql: str, connection: sqlite3.Connection, busy_seconds: float) -> None:
    """``BEGIN IMMEDIATE`` / ``COMMIT``, waiting out another process's lock (``inline_sqlite.locked_retry``);
    its errors as SQLAlchemy's."""
    try:
        await inline_sqlite.locked_retry(sql, connection, busy_seconds)
    except sqlite3.Error as error:
        raise _sa_error(error, sql, ()) from error


# What services write through: an ORM session's transaction, or a Core one.
Writer = AsyncSession | CoreTx


def pending(writer: Writer) -> dict[str, Any]:
    """What ``writer``'s transaction carries to its commit (its ``info``). A session not yet in a
    transaction begins one, as ``session.add`` would: a rollback from then on drops what waits here."""
    if isinstance(writer, CoreTx):
        return writer.info
    if not writer.in_transaction():
        writer.sync_session.begin()
    return writer.sync_session.info
