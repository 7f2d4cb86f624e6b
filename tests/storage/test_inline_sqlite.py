"""SQLite statements run on the event-loop thread, and waiting for another process's lock never blocks it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from storage.db import Database
from storage.inline_sqlite import InlineConnection, InlineDBAPI


async def _db(tmp_path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jit.db'}")
    await db.migrate()
    return db


async def test_statements_run_on_the_loop_thread_without_a_helper_thread(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    try:
        seen: list[int] = []
        async with db.transaction() as session:
            raw = await (await session.connection()).get_raw_connection()
            assert isinstance(raw.dbapi_connection, InlineConnection)
            driver = raw.driver_connection
            assert isinstance(driver, sqlite3.Connection)  # no aiosqlite thread in between
            driver.create_function("where_am_i", 0, lambda: seen.append(threading.get_ident()) or 1)
            await session.execute(text("SELECT where_am_i()"))
            # SQLite's own busy handler would sleep on the loop thread: it is off, waits are asynchronous
            assert (await session.execute(text("PRAGMA busy_timeout"))).scalar() == 0
        assert seen == [threading.get_ident()]
        async with db.sessions() as session:  # the read pool too
            raw = await (await session.connection()).get_raw_connection()
            assert isinstance(raw.dbapi_connection, InlineConnection)
    finally:
        await db.dispose()


async def test_a_writer_waits_for_another_process_without_blocking_the_loop(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    other = sqlite3.connect(tmp_path / "jit.db", isolation_level=None)  # as another process would hold it
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO kv (key, value) VALUES ('other', '1')")
        loop_turns = 0
        written = asyncio.Event()

        async def write() -> None:
            async with db.transaction() as session:
                await session.execute(text("INSERT INTO kv (key, value) VALUES ('mine', '2')"))
            written.set()

        writer = asyncio.create_task(write())
        # The loop keeps running other work while the writer waits for the lock ...
        while loop_turns < 20:
            await asyncio.sleep(0.001)
            loop_turns += 1
            assert not written.is_set()
        other.execute("COMMIT")  # ... and the writer goes through once the lock is free
        await asyncio.wait_for(writer, timeout=10)
        async with db.sessions() as session:
            keys = (await session.execute(text("SELECT key FROM kv ORDER BY key"))).scalars().all()
        assert keys == ["mine", "other"]
    finally:
        other.close()
        await db.dispose()


async def test_a_writer_gives_up_after_its_busy_deadline_and_changes_nothing(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    await db.dispose()
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'jit.db'}",
                                 module=InlineDBAPI(busy_seconds=0.05))
    other = sqlite3.connect(tmp_path / "jit.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        async with engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA busy_timeout=0")
            with pytest.raises(Exception, match="database is locked"):
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        assert other.execute("SELECT count(*) FROM kv").fetchone() == (0,)
    finally:
        other.close()
        await engine.dispose()


async def test_errors_other_than_a_lock_are_raised_at_once(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    try:
        with pytest.raises(Exception, match="no such table"):
            async with db.transaction() as session:
                await session.execute(text("SELECT * FROM no_such_table"))
        async with db.transaction() as session:  # the connection is still good
            await session.execute(text("INSERT INTO kv (key, value) VALUES ('k', '1')"))
    finally:
        await db.dispose()


@pytest.mark.parametrize("yield_after, loop_ran", [(0.0, True), (float("inf"), False)])
async def test_a_run_of_statements_gives_the_loop_a_turn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         yield_after: float, loop_ran: bool) -> None:
    """Statements never wait, so without the turn a long transaction would hold back everything else on
    the loop (Bolt's answer to Slack included). ``inf`` switches the turn off: the other task never runs."""
    import storage.inline_sqlite as inline

    db = await _db(tmp_path)
    ran = asyncio.Event()

    async def other_task() -> None:
        ran.set()

    try:
        async with db.transaction() as session:
            await session.execute(text("SELECT 1"))  # the connection is set up
            monkeypatch.setattr(inline, "YIELD_AFTER", yield_after)
            task = asyncio.get_running_loop().create_task(other_task())
            for i in range(20):
                await session.execute(text("INSERT INTO kv (key, value) VALUES (:k, '1')"), {"k": f"k{i}"})
            assert ran.is_set() is loop_ran
        await task
    finally:
        await db.dispose()


async def test_reads_hold_no_transaction_and_writes_hold_one(tmp_path: Path) -> None:
    """A read session sends no BEGIN / ROLLBACK (each statement reads on its own, as PostgreSQL's
    autocommit reads); a write transaction holds SQLite's write lock from its first statement."""
    db = await _db(tmp_path)
    try:
        async with db.sessions() as session:
            await session.execute(text("SELECT count(*) FROM event"))
            raw = await (await session.connection()).get_raw_connection()
            assert not raw.driver_connection.in_transaction
        async with db.transaction() as session:
            await session.execute(text("SELECT count(*) FROM event"))
            raw = await (await session.connection()).get_raw_connection()
            assert raw.driver_connection.in_transaction
            # another connection cannot write meanwhile: BEGIN IMMEDIATE took the lock
            other = sqlite3.connect(tmp_path / "jit.db", timeout=0, isolation_level=None)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()
    finally:
        await db.engine.dispose()
        await db.read_engine.dispose()


async def test_a_statement_leaves_sqlalchemys_greenlet_at_most_once(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLAlchemy runs a statement's sync side in a greenlet. aiosqlite's adapter left it for every driver
    call (cursor, execute, fetch, close: four round trips through the loop's coroutine machinery); the
    inline connection calls sqlite3 in place and leaves it once per greenlet at most (AsyncConnection
    insists on one), unless the loop is due a turn or another process holds the lock."""
    import greenlet

    import storage.inline_sqlite as inline

    db = await _db(tmp_path)
    monkeypatch.setattr(inline, "YIELD_AFTER", float("inf"))
    switches: list[object] = []

    def trace(event: str, _args: object) -> None:
        if event == "switch":
            switches.append(event)

    try:
        async with db.sessions() as session:
            await session.execute(text("SELECT 1"))  # the connection is checked out and set up
            previous = greenlet.settrace(trace)
            try:
                rows = (await session.execute(text("SELECT key FROM kv"))).all()
            finally:
                greenlet.settrace(previous)
        assert rows == []
        # into the greenlet, one round trip out and back, and back out when it ends
        assert 1 <= len(switches) <= 4, switches
    finally:
        await db.dispose()


async def test_the_pool_hands_out_the_connection_used_last(tmp_path: Path) -> None:
    """SQLite drops a connection's page cache when another connection has written since; handing out the
    connection used last keeps one warm instead of rotating through all of them (LIFO pool)."""
    db = await _db(tmp_path)

    async def driver(session: Any) -> object:
        return (await (await session.connection()).get_raw_connection()).driver_connection

    try:
        async with db.sessions() as first:
            first_conn = await driver(first)
            async with db.sessions() as second:
                second_conn = await driver(second)
        # ``first`` went back last
        async with db.sessions() as third:
            assert await driver(third) is first_conn is not second_conn
    finally:
        await db.dispose()


async def test_connections_are_kept_when_sessions_overlap(tmp_path: Path) -> None:
    """Under load a dozen read sessions overlap; each connection is kept for the next burst, not closed
    on return and opened again (PRAGMAs, the schema parsed again, a cold page cache)."""
    from contextlib import AsyncExitStack

    from sqlalchemy import event

    db = await _db(tmp_path)
    opened: list[object] = []
    event.listen(db.read_engine.sync_engine.pool, "connect", lambda conn, _record: opened.append(conn))

    async def burst() -> None:
        async with AsyncExitStack() as stack:
            for _ in range(12):
                session = await stack.enter_async_context(db.sessions())
                await session.execute(text("SELECT 1"))

    try:
        await burst()
        first = len(opened)
        await burst()
        assert first == 12
        assert len(opened) == first  # the second burst opened none
    finally:
        await db.dispose()
