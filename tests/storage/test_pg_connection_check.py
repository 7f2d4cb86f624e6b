"""PostgreSQL connections are checked before use only after sitting idle (storage/db.py, PING_IDLE_S)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from storage.db import Database
from tests import pg

pytestmark = pytest.mark.postgres


async def _backend(db: Database) -> int:
    async with db.transaction() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _kill(pid: int) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


def _count_pings(db: Database, pings: list[int]) -> None:
    dialect = db.engine.sync_engine.dialect
    real = dialect.do_ping

    def counted(dbapi_conn: object) -> bool:
        pings.append(1)
        return bool(real(dbapi_conn))

    dialect.do_ping = counted  # type: ignore[method-assign]


async def test_a_connection_used_a_moment_ago_is_not_checked() -> None:
    pings: list[int] = []
    db = Database(pg.url(), pool_size=1, ping_idle_s=3600)
    _count_pings(db, pings)
    try:
        first = await _backend(db)
        for _ in range(5):
            assert await _backend(db) == first  # the same pooled connection, reused
        assert pings == []  # no BEGIN / ";" / ROLLBACK before each transaction
    finally:
        await db.dispose()


async def test_an_idle_connection_that_died_is_replaced_before_use() -> None:
    pings: list[int] = []
    db = Database(pg.url(), pool_size=1, ping_idle_s=0)  # every reuse counts as idle: checked
    _count_pings(db, pings)
    try:
        first = await _backend(db)
        await _kill(first)  # the server ends it while it sits in the pool
        second = await _backend(db)  # checked, found dead, replaced: the transaction never sees it
        assert second != first
        assert pings  # it was checked
    finally:
        await db.dispose()


async def test_a_recently_used_connection_that_died_fails_once_then_the_pool_recovers() -> None:
    """The price of not checking busy connections: one transaction fails as a disconnect (callers retry),
    and SQLAlchemy invalidates the pool, so the next one gets a fresh connection."""
    db = Database(pg.url(), pool_size=1, ping_idle_s=3600)
    try:
        first = await _backend(db)
        await _kill(first)
        with pytest.raises(DBAPIError) as failed:
            await _backend(db)
        assert failed.value.connection_invalidated
        assert await _backend(db) != first
    finally:
        await db.dispose()


async def test_reads_run_without_a_transaction_round_trip_and_writes_in_one() -> None:
    """``sessions()`` (reads) sends no BEGIN / ROLLBACK: each statement is its own transaction, as
    READ COMMITTED reads are anyway. ``transaction()`` still wraps its statements in one transaction."""
    db = Database(pg.url())
    xid = text("SELECT txid_current()")  # the same for two statements of one transaction

    async def two(session: object) -> tuple[int, int]:
        return ((await session.execute(xid)).scalar_one(),  # type: ignore[attr-defined]
                (await session.execute(xid)).scalar_one())  # type: ignore[attr-defined]
    try:
        async with db.sessions() as session:
            a, b = await two(session)
            assert a != b
        async with db.transaction() as session:
            a, b = await two(session)
            assert a == b
        async with db.sessions() as session:  # the pooled connection went back to autocommit
            a, b = await two(session)
            assert a != b
    finally:
        await db.dispose()


async def test_the_pool_opens_up_to_the_configured_connections_and_keeps_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """JITBOT_DB_POOL_SIZE: a fixed pool. With overflow connections (closed when they come back while the
    pool is full), a loaded replica opened a connection every other flow."""
    import asyncio

    from bot.settings import Settings

    assert Settings().JITBOT_DB_POOL_SIZE == 30
    monkeypatch.setenv("JITBOT_DB_POOL_SIZE", "0")
    with pytest.raises(ValueError, match="JITBOT_DB_POOL_SIZE"):
        Settings()
    db = Database(pg.url(), pool_size=6)
    opened: list[int] = []
    event.listen(db.engine.sync_engine.pool, "connect", lambda *_: opened.append(1))
    try:
        for _ in range(2):  # a burst of 6, twice: 6 opened in all, then reused
            held = [await db.engine.connect() for _ in range(6)]
            for conn in held:
                await conn.close()
        assert len(opened) == 6
        held = [await db.engine.connect() for _ in range(6)]
        seventh = asyncio.ensure_future(db.engine.connect())  # none free: it waits for one to come back
        with pytest.raises(TimeoutError):  # with an overflow it would have opened a connection at once
            await asyncio.wait_for(asyncio.shield(seventh), 2)
        await held.pop().close()
        held.append(await asyncio.wait_for(seventh, 10))
        for conn in held:
            await conn.close()
        assert len(opened) == 6  # the seventh got a returned connection, not a new one
    finally:
        await db.dispose()
