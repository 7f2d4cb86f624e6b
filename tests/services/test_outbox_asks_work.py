"""A decided layer's asks are counted (``ASKS_LEFT``) and withdrawn (``WITHDRAW_ASKS``) by reading that
layer's ask keys only: the work does not grow with the rest of the outbox's pending messages (other
requests' asks, claimed heads, a busy audit lane). Work is counted, not timed: index entries read on
PostgreSQL (``pg_stat_user_indexes``, and rows of a sequential scan), virtual-machine instructions on
SQLite (a progress handler)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.services.notices import ask_key, asks_params, layer_key
from bot.services.outbox import sql as outbox_sql
from bot.services.outbox.lanes import AUDIT_LANE
from tests.conftest import DbFactory

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REQUEST = "R-TARGET22"
# Three asks of the layer, one held by a chain in flight; "aa…" is the key a Danish collation sorts
# as "å…", after every other key of the layer (the key order must not depend on the server's locale).
ASKS = [f"{layer_key(REQUEST, 1)}:aa0b1c2d", ask_key(REQUEST, 1, "ann@example.com"),
        ask_key(REQUEST, 1, "bob@example.com")]
NEIGHBOURS = [layer_key(REQUEST, 1), f"{layer_key(REQUEST, 1)}0:a00000000", layer_key(REQUEST, 2) + ":a00000000",
              f"{REQUEST}:requester"]


def _row(key: str, *, kind: str = "approval_request", claimed: bool = False) -> dict[str, Any]:
    return {"created_at": NOW, "order_key": key, "kind": kind, "payload": {}, "status": "pending", "attempts": 0,
            "next_attempt_at": NOW - timedelta(seconds=1), "claim_token": 0,
            "claimed_until": NOW + timedelta(minutes=1) if claimed else None, "claimed_by": "x" if claimed else None}


def _unrelated(n: int) -> list[dict[str, Any]]:
    """``n`` pending messages of other requests and of the audit lane, a quarter of them claimed."""
    rows = []
    for i in range(n):
        other = f"R-{i:08d}"
        kind, key = [("approval_request", ask_key(other, 1, f"p{i}@example.com")),
                     ("approval_update", layer_key(other, 1)), ("requester", f"{other}:requester"),
                     ("audit", AUDIT_LANE)][i % 4]
        rows.append(_row(key, kind=kind, claimed=i % 3 == 0))
    return rows


async def _fill(conn: AsyncConnection, unrelated: int) -> None:
    rows = [_row(ASKS[0], claimed=True), _row(ASKS[1]), _row(ASKS[2]), _row(NEIGHBOURS[0], kind="approval_update")]
    rows += [_row(k) for k in NEIGHBOURS[1:]] + _unrelated(unrelated)
    await conn.execute(insert(outbox_sql.OUTBOX), rows)


Counter = Callable[[AsyncConnection, Callable[[], Awaitable[Any]]], Awaitable[int]]


async def _pg_index_entries(conn: AsyncConnection, run: Callable[[], Awaitable[Any]]) -> int:
    """Outbox index entries and rows scanned by ``run`` (its statistics flushed when it commits)."""
    read = text("SELECT (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes "
                "WHERE relname = 'outbox' AND schemaname = current_schema()) + "
                "(SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables "
                "WHERE relname = 'outbox' AND schemaname = current_schema())")
    # as a statement prepared long ago runs: planned once for any values (a LIKE's pattern unknown)
    await conn.execute(text("SET plan_cache_mode = force_generic_plan"))
    before = (await conn.execute(read)).scalar_one()
    await conn.commit()
    await run()
    await conn.execute(text("SELECT pg_stat_force_next_flush()"))
    await conn.commit()
    after = (await conn.execute(read)).scalar_one()
    await conn.commit()
    return int(after - before)


async def _sqlite_instructions(conn: AsyncConnection, run: Callable[[], Awaitable[Any]]) -> int:
    raw = (await conn.get_raw_connection()).driver_connection
    counted = [0]

    def count() -> int:
        counted[0] += 1
        return 0  # go on

    raw.set_progress_handler(count, 1)
    try:
        await run()
    finally:
        raw.set_progress_handler(None, 1)
    await conn.commit()
    return counted[0]


async def _work(db_factory: DbFactory, unrelated: int) -> tuple[int, int, int, int]:
    """(asks left, work of counting them, asks withdrawn, work of withdrawing them)."""
    db = db_factory()
    await db.migrate()
    async with db.engine.begin() as conn:
        # a clean table for each size (PostgreSQL: no dead index entries left by the other)
        await conn.execute(outbox_sql.OUTBOX.delete() if db.is_sqlite else text("TRUNCATE outbox"))
        await _fill(conn, unrelated)
        if not db.is_sqlite:
            await conn.execute(text("ANALYZE outbox"))
    params = {**asks_params(REQUEST, 1), "b_now": NOW}
    counter: Counter = _sqlite_instructions if db.is_sqlite else _pg_index_entries
    async with db.engine.connect() as conn:
        result: dict[str, Any] = {}

        async def count_left() -> None:
            result["left"] = (await conn.execute(outbox_sql.ASKS_LEFT, params)).scalar_one()

        async def withdraw() -> None:
            result["withdrawn"] = (await conn.execute(outbox_sql.WITHDRAW_ASKS, params)).rowcount

        left_work = await counter(conn, count_left)
        withdraw_work = await counter(conn, withdraw)
    await db.dispose()
    return result["left"], left_work, result["withdrawn"], withdraw_work


@pytest.mark.parametrize("statement", ["count", "withdraw"])
async def test_a_layers_asks_are_counted_and_withdrawn_without_reading_other_pending_messages(
        db_factory: DbFactory, statement: str) -> None:
    few = await _work(db_factory, 200)
    many = await _work(db_factory, 3000)
    # the layer's three asks, whatever their key sorts like; the claimed one is left to its chain
    assert few[0] == many[0] == 3 and few[2] == many[2] == 2
    work_few, work_many = (few[1], many[1]) if statement == "count" else (few[3], many[3])
    assert work_few > 0
    assert work_many <= work_few * 1.2 + 10, (work_few, work_many)


@pytest.mark.postgres
async def test_order_keys_sort_byte_by_byte_whatever_the_databases_locale(db_factory: DbFactory) -> None:
    """A Danish collation sorts ``…:aa…`` as ``…:å…``, after ``…:b``: a layer's key range would miss that ask.
    The column's own collation ("C") keeps it inside."""
    db = db_factory()
    if db.is_sqlite:
        pytest.skip("SQLite compares text byte by byte unless told otherwise")
    await db.migrate()
    async with db.engine.begin() as conn:
        await _fill(conn, 0)
        hi = asks_params(REQUEST, 1)["b_hi"]
        collation = (await conn.execute(text(
            "SELECT collname FROM pg_attribute JOIN pg_collation ON pg_collation.oid = attcollation "
            "WHERE attrelid = 'outbox'::regclass AND attname = 'order_key'"))).scalar_one()
        in_range = (await conn.execute(text("SELECT order_key < :hi FROM outbox WHERE order_key = :k"),
                                       {"hi": hi, "k": ASKS[0]})).scalar_one()
    await db.dispose()
    assert collation == "C" and in_range
