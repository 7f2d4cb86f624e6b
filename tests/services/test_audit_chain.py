"""The audit chain is linked when a transaction commits: concurrent writers never fork it, and a
rolled-back transaction leaves no event behind."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from bot.services.auditing.audit import append_event, verify_chain
from bot.services.clock import ManualClock
from storage.tables import Event
from tests.conftest import DbFactory


async def _count(db: object) -> int:
    async with db.sessions() as session:  # type: ignore[attr-defined]
        return int((await session.execute(select(func.count()).select_from(Event))).scalar_one())


async def test_concurrent_transactions_extend_one_chain(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()

    async def writer(k: int) -> None:
        # session and Core transactions (storage/core_tx.py) in turn: both link into the one chain
        async with (db.transaction() if k % 2 else db.core_transaction()) as session:
            await append_event(session, at=clock.now(), kind="first", actor=f"w{k}", request_id=f"R-{k}")
            await asyncio.sleep(0)  # other writers run in between
            await append_event(session, at=clock.now(), kind="second", actor=f"w{k}", request_id=f"R-{k}")

    await asyncio.gather(*(writer(k) for k in range(12)))
    assert await _count(db) == 24
    result = await verify_chain(db)
    assert result.ok and result.checked == 24, result
    async with db.sessions() as session:  # a transaction's events stay together, in call order
        rows = (await session.execute(select(Event).order_by(Event.id))).scalars().all()  # type: ignore[arg-type]
    assert [r.kind for r in rows] == ["first", "second"] * 12
    assert all(a.request_id == b.request_id for a, b in zip(rows[::2], rows[1::2], strict=True))


@pytest.mark.parametrize("kind", ["transaction", "core_transaction"])
async def test_a_rolled_back_transaction_leaves_no_event(db_factory: DbFactory, clock: ManualClock, kind: str) -> None:
    db = db_factory()
    await db.migrate()
    with pytest.raises(RuntimeError):
        async with getattr(db, kind)() as session:
            await append_event(session, at=clock.now(), kind="doomed", actor="a")
            raise RuntimeError("the state change failed")
    async with db.transaction() as session:
        await append_event(session, at=clock.now(), kind="kept", actor="a")
    assert await _count(db) == 1
    assert (await verify_chain(db)).ok


async def test_the_database_links_tricky_events_as_verify_recomputes_them(db_factory: DbFactory,
                                                                         clock: ManualClock) -> None:
    """On PostgreSQL the hash is computed in the database (at commit, migration 0007); it must be the same
    SHA-256 of the same canonical text that verify_chain recomputes, whatever the event holds."""
    db = db_factory()
    await db.migrate()
    details = [{}, {"prev": "0" * 64, "quote": 'say "hi"\\n', "nested": {"b": [1, 2.5, None, True], "a": "é✓"}},
               {"emoji": "🔑", "tab": "a\tb", "empty": ""}]
    async with db.transaction() as session:
        for i, detail in enumerate(details):
            await append_event(session, at=clock.now(), kind=f"k{i}", actor="ü@example.com",
                               request_id=None if i == 1 else f"R-{i}", from_state=None, to_state="x",
                               detail=detail)
    async with db.transaction() as session:
        await append_event(session, at=clock.now(), kind="after", actor="a")
    result = await verify_chain(db)
    assert result.ok and result.checked == 4, result
    async with db.sessions() as session:
        rows = (await session.execute(select(Event).order_by(Event.id))).scalars().all()  # type: ignore[arg-type]
    assert [r.detail for r in rows[:3]] == details
    assert rows[0].prev_hash == "0" * 64 and all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False))


async def test_event_times_are_hashed_as_stored_in_utc_and_naive_ones_are_refused(db_factory: DbFactory,
                                                                                  clock: ManualClock) -> None:
    """A time in another zone is stored as UTC; hashed as given, verify_chain (which reads it back in UTC)
    would report the row as edited. A naive time is refused, and nothing is written."""
    from datetime import timedelta, timezone

    db = db_factory()
    await db.migrate()
    async with db.transaction() as session:
        await append_event(session, at=clock.now().astimezone(timezone(timedelta(hours=2))), kind="k",
                           actor="a")
    with pytest.raises(ValueError, match="naive"):
        async with db.transaction() as session:
            await append_event(session, at=clock.now().replace(tzinfo=None), kind="naive", actor="a")
    assert await _count(db) == 1
    result = await verify_chain(db)
    assert result.ok and result.checked == 1, result


@pytest.mark.parametrize("db_factory", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_postgresql_takes_the_chain_lock_only_inside_the_commit(db_factory: DbFactory,
                                                                       clock: ManualClock) -> None:
    """The events are handed over before COMMIT without taking the chain's lock: the database links them
    during the commit (a deferred trigger), so no replica holds the lock across a round trip to its
    process, its event loop or its CPU quota. The trigger takes the key the rest of the code uses."""
    from sqlalchemy import event, text
    from sqlalchemy.orm import Session

    from storage.db import AUDIT_CHAIN_LOCK

    db = db_factory()  # PostgreSQL only: SQLite has one writer and no chain lock
    await db.migrate()
    held: list[int] = []

    def look(session: Session) -> None:  # runs after the audit chain's own before_commit hook
        if session.info.get("check_lock"):
            held.append(int(session.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                "AND objid = :k"), {"k": AUDIT_CHAIN_LOCK}).scalar_one()))

    event.listen(Session, "before_commit", look)
    try:
        async with db.transaction() as session:
            session.info["check_lock"] = True
            await append_event(session, at=clock.now(), kind="one", actor="a")
            await append_event(session, at=clock.now(), kind="two", actor="a")
    finally:
        event.remove(Session, "before_commit", look)
    assert held == [0]
    assert await _count(db) == 2 and (await verify_chain(db)).ok
    async with db.sessions() as session:
        assert (await session.execute(text("SELECT count(*) FROM event_pending"))).scalar_one() == 0
        trigger = (await session.execute(text(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'event_pending_link' "
            "AND tgrelid = 'event_pending'::regclass"))).scalar_one()  # this test's schema, not another run's
    assert f"jitbot_link_event('{AUDIT_CHAIN_LOCK}')" in trigger and "DEFERRABLE INITIALLY DEFERRED" in trigger
