"""Core transactions and reads (storage/core_tx.py): the same results through a session and without one."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from bot.services.access.memberships import DatabaseMembershipStore
from bot.services.outbox import sql
from storage import core_tx
from storage.core_tx import SessionCore, SqliteCore
from storage.db import Database
from storage.tables import Membership, OutboxMessage
from tests.conftest import DbFactory

OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
MEMBERSHIP = Membership.__table__  # type: ignore[attr-defined]
AT = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
PAYLOAD = {"text": "héllo ✓", "n": [1, 2], "none": None}
UPDATE_ATTEMPTS = update(OUTBOX).where(OUTBOX.c.id == bindparam("b_id")).values(attempts=bindparam("b_n"))
IDS_IN = select(OUTBOX.c.id).where(OUTBOX.c.id.in_(bindparam("b_ids", expanding=True))).order_by(OUTBOX.c.id)


def _row(key: str, at: datetime = AT) -> dict[str, object]:
    return {"created_at": at, "order_key": key, "kind": "dm", "payload": PAYLOAD, "status": "pending",
            "attempts": 0, "next_attempt_at": at}


async def _stored(db: Database) -> list[tuple[object, ...]]:
    """The rows as the database holds them (text and types untouched by any processor)."""
    async with db.sessions() as session:
        result = await session.execute(text("SELECT id, created_at, order_key, payload, next_attempt_at, attempts "
                                            "FROM outbox ORDER BY id"))
        return [tuple(r) for r in result.all()]


async def test_sqlite_runs_without_a_session_and_postgres_in_one(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    async with db.core_transaction() as tx:
        assert isinstance(tx, SqliteCore if db.is_sqlite else SessionCore)
    async with db.core_reads() as reads:
        assert isinstance(reads, SqliteCore if db.is_sqlite else SessionCore)


async def test_rows_are_stored_exactly_as_a_session_stores_them(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    async with db.transaction() as session:  # SQLAlchemy's own execution
        await session.execute(insert(OUTBOX), [_row("by-session")])
    async with db.core_transaction() as tx:
        await tx.many(insert(OUTBOX), [_row("by-core")])
    by_session, by_core = await _stored(db)
    assert by_core[1:] == (by_session[1], "by-core", *by_session[3:])  # same datetime text, same JSON text
    # and read back through either path, the same values (aware UTC datetimes, the payload as a dict)
    async with db.core_reads() as reads:
        rows = await reads.rows(select(OUTBOX).order_by(OUTBOX.c.id))
    assert [(r.created_at, r.payload, r.next_attempt_at) for r in rows] == [(AT, PAYLOAD, AT)] * 2
    assert rows[0].created_at.tzinfo is not None


async def test_returning_rows_expanding_lists_and_fixed_values(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    async with db.core_transaction() as tx:
        await tx.many(insert(OUTBOX), [_row(f"k{i}") for i in range(5)])
    async with db.core_reads() as reads:
        assert await reads.scalars(IDS_IN, {"b_ids": [4, 2, 9]}) == [2, 4]
        assert await reads.scalars(IDS_IN, {"b_ids": [1]}) == [1]  # another length: another text
    now = AT + timedelta(minutes=1)
    async with db.core_transaction() as tx:
        # CLAIM_NEW's NOT EXISTS compares with the value fixed in the statement (status = 'pending')
        claimed = await tx.scalars(sql.CLAIM_NEW, {"b_ids": [1, 3], "b_now": now,
                                                   "b_until": now + timedelta(minutes=5), "b_owner": "w1"})
        assert sorted(claimed) == [1, 3]
    async with db.core_reads() as reads:
        rows = await reads.rows(select(OUTBOX.c.id, OUTBOX.c.claimed_by, OUTBOX.c.claimed_until)
                                .where(OUTBOX.c.claimed_by.is_not(None)))
    assert sorted((r.id, r.claimed_by, r.claimed_until) for r in rows) == [
        (1, "w1", now + timedelta(minutes=5)), (3, "w1", now + timedelta(minutes=5))]


async def test_an_exception_rolls_everything_back(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    with pytest.raises(RuntimeError):
        async with db.core_transaction() as tx:
            await tx.many(insert(OUTBOX), [_row("gone")])
            raise RuntimeError("after the insert")
    assert await _stored(db) == []
    async with db.core_transaction() as tx:  # the connection went back clean
        await tx.many(insert(OUTBOX), [_row("kept")])
        kept = await tx.scalars(select(OUTBOX.c.id))  # (PostgreSQL's sequence moved on: not id 1)
        await tx.many(UPDATE_ATTEMPTS, [{"b_id": kept[0], "b_n": 3}])
    assert [(r[2], r[5]) for r in await _stored(db)] == [("kept", 3)]


async def test_a_constraint_violation_is_sqlalchemys_integrity_error(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    store = DatabaseMembershipStore(db)
    assert await store.add("demo", "group:ops", "u1") is True
    assert await store.add("demo", "group:ops", "u1") is False  # already there
    with pytest.raises(IntegrityError):  # as a second replica's insert at the same moment would fail
        async with db.core_transaction() as tx:
            await tx.many(insert(MEMBERSHIP), [{"connector": "demo", "target": "group:ops", "user_id": "u1"}])
    assert await store.members("demo", "group:ops") == {"u1"}
    assert await store.has("demo", "group:ops", "u1") and not await store.has("demo", "group:ops", "u2")
    assert not await store.has("demo", "group:dev", "u1")
    assert await store.remove("demo", "group:ops", "u1") is True
    assert not await store.has("demo", "group:ops", "u1")
    assert await store.remove("demo", "group:ops", "u1") is False
    assert await store.members("demo", "group:ops") == set()


async def test_reads_see_committed_rows_only(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jit.db'}")
    await db.migrate()
    try:
        seen: list[list[int]] = []

        async def read_while_writing() -> None:
            async with db.core_reads() as reads:
                seen.append(await reads.scalars(select(OUTBOX.c.id)))

        async with db.core_transaction() as tx:
            await tx.many(insert(OUTBOX), [_row("k")])
            await read_while_writing()  # the write is not committed yet
        await read_while_writing()
        assert seen == [[], [1]]
    finally:
        await db.dispose()


async def test_core_writers_take_their_turn_with_session_writers(tmp_path: Path) -> None:
    """One writer at a time in a process, whichever kind: a core transaction waits for a session's."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jit.db'}")
    await db.migrate()
    try:
        order: list[str] = []
        session_open = asyncio.Event()
        release = asyncio.Event()

        async def session_writer() -> None:
            async with db.transaction() as session:
                await session.execute(insert(OUTBOX), [_row("session")])
                session_open.set()
                await release.wait()
                order.append("session")

        async def core_writer() -> None:
            async with db.core_transaction() as tx:
                await tx.many(insert(OUTBOX), [_row("core")])
                order.append("core")

        first = asyncio.create_task(session_writer())
        await session_open.wait()
        second = asyncio.create_task(core_writer())
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == []  # waiting for its turn, not for SQLite's lock
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), timeout=10)
        assert order == ["session", "core"]
        assert [r[2] for r in await _stored(db)] == ["session", "core"]
    finally:
        await db.dispose()


async def test_a_core_writer_waits_for_another_process_without_blocking_the_loop(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jit.db'}")
    await db.migrate()
    other = sqlite3.connect(tmp_path / "jit.db", isolation_level=None)  # as another process would hold it
    try:
        other.execute("BEGIN IMMEDIATE")
        written = asyncio.Event()

        async def write() -> None:
            async with db.core_transaction() as tx:
                await tx.many(insert(OUTBOX), [_row("mine")])
            written.set()

        writer = asyncio.create_task(write())
        for _ in range(20):  # the loop keeps running while the writer waits for the lock
            await asyncio.sleep(0.001)
            assert not written.is_set()
        other.execute("COMMIT")
        await asyncio.wait_for(writer, timeout=10)
        assert [r[2] for r in await _stored(db)] == ["mine"]
    finally:
        other.close()
        await db.dispose()


async def test_a_core_writer_gives_up_after_its_busy_deadline(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jit.db'}")
    await db.migrate()
    assert db._inline is not None
    monkeypatch.setattr(db._inline, "busy_seconds", 0.05)
    other = sqlite3.connect(tmp_path / "jit.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(Exception, match="database is locked"):
            async with db.core_transaction() as tx:
                await tx.many(insert(OUTBOX), [_row("never")])
        other.execute("ROLLBACK")
        async with db.core_transaction() as tx:  # the pooled connection is usable again
            await tx.many(insert(OUTBOX), [_row("later")])
        assert [r[2] for r in await _stored(db)] == ["later"]
    finally:
        other.close()
        await db.dispose()


def test_a_statement_is_prepared_once() -> None:
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    dialect = sqlite_dialect.dialect()
    assert core_tx.prepared(UPDATE_ATTEMPTS, dialect) is core_tx.prepared(UPDATE_ATTEMPTS, dialect)

async def test_an_insert_sends_the_scalar_defaults_of_the_columns_it_was_not_given(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    row = {k: v for k, v in _row("k").items() if k not in ("status", "attempts")}  # defaults "pending", 0
    async with db.core_transaction() as tx:
        await tx.many(insert(OUTBOX), [row])
    async with db.core_reads() as reads:
        assert [(r.status, r.attempts) for r in await reads.rows(select(OUTBOX))] == [("pending", 0)]


async def test_a_cancelled_core_transaction_rolls_back_and_returns_its_connection(db_factory: DbFactory) -> None:
    """The outbox's chains are cancelled at shutdown, possibly inside a record."""
    db = db_factory()
    await db.migrate()
    inside = asyncio.Event()

    async def record() -> None:
        async with db.core_transaction() as tx:
            await tx.many(insert(OUTBOX), [_row("cut off")])
            inside.set()
            await asyncio.Event().wait()  # cancelled here, between its statements and its commit

    task = asyncio.create_task(record())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    async with db.core_transaction() as tx:  # the writer turn and the connection are free again
        await tx.many(insert(OUTBOX), [_row("next")])
    assert [r[2] for r in await _stored(db)] == ["next"]


async def test_the_claim_pass_reads_pending_messages_only_not_the_sent_history(tmp_path: Path) -> None:
    """Sent messages are kept; a claim ordered by id alone walked the primary key from the oldest one
    through every message ever sent (SQLite's plan: ``SCAN outbox``; 20 ms a claim with 200,000 sent)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jit.db'}")
    await db.migrate()
    try:
        sent = [{**_row(f"R{i}"), "status": "sent"} for i in range(3000)]
        async with db.core_transaction() as tx:  # a history of sent messages, then the pending ones
            await tx.many(insert(OUTBOX), [*sent, *(_row(f"N{i}") for i in range(10))])
            assert isinstance(tx, SqliteCore)
            tx.connection.execute("ANALYZE")  # the planner knows the table as a running bot's would be known
        p = core_tx.prepared(sql.CLAIM_HEADS_SQLITE, db.engine.dialect)
        statement, values = p._params({"b_now": AT, "b_until": AT, "b_owner": "w1", "b_limit": 20})
        async with db.core_reads() as reads:
            assert isinstance(reads, SqliteCore)
            plan = " | ".join(row[3] for row in reads.connection.execute("EXPLAIN QUERY PLAN " + statement, values))
        assert "USING INDEX ix_outbox_due" in plan and "SCAN outbox" not in plan, plan
    finally:
        await db.dispose()
