"""Periodic jobs' turns across replicas (``kvstate.take_turn``): one replica per period, and asking when it
is not due (every full pass, each second) costs a read, not a write transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.services import kvstate
from tests.conftest import DbFactory

T0 = datetime(2026, 11, 26, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)


async def test_one_replica_per_period(db_factory: DbFactory) -> None:
    a, b = db_factory(), db_factory()
    await a.migrate()
    assert await kvstate.take_turn(a, "job", now=T0, every=HOUR, by="a")
    assert not await kvstate.take_turn(b, "job", now=T0 + timedelta(minutes=59), every=HOUR, by="b")
    assert await kvstate.take_turn(b, "job", now=T0 + HOUR, every=HOUR, by="b")
    assert not await kvstate.take_turn(a, "job", now=T0 + HOUR, every=HOUR, by="a")  # b took this one


async def test_not_due_opens_no_write_transaction(db_factory: DbFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    db = db_factory()
    await db.migrate()
    writes: list[int] = []
    real = db.transaction

    @asynccontextmanager
    async def counted() -> AsyncIterator[Any]:
        writes.append(1)
        async with real() as session:
            yield session

    monkeypatch.setattr(db, "transaction", counted)
    assert await kvstate.take_turn(db, "job", now=T0, every=HOUR, by="a")
    assert len(writes) == 1
    for minute in range(1, 60):
        assert not await kvstate.take_turn(db, "job", now=T0 + timedelta(minutes=minute), every=HOUR, by="a")
    assert len(writes) == 1


async def test_not_due_is_not_read_again_until_the_turn_it_saw(db_factory: DbFactory,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = db_factory(), db_factory()
    await a.migrate()
    assert await kvstate.take_turn(b, "job", now=T0, every=HOUR, by="b")  # another replica's turn
    reads: list[str] = []
    real = kvstate.read

    async def counted(session: Any, key: str, **kw: Any) -> Any:
        reads.append(key)
        return await real(session, key, **kw)

    monkeypatch.setattr(kvstate, "read", counted)
    for minute in range(1, 60):
        assert not await kvstate.take_turn(a, "job", now=T0 + timedelta(minutes=minute), every=HOUR, by="a")
    assert reads == ["job"]  # the first pass read the turn's time; the rest knew it
    assert await kvstate.take_turn(a, "job", now=T0 + HOUR, every=HOUR, by="a")  # due: read, then taken
    reads.clear()
    assert not await kvstate.take_turn(a, "job", now=T0 + HOUR + timedelta(minutes=30), every=HOUR, by="a")
    assert reads == []  # its own turn told it the next one
    # b comes to the turn a took: it reads and declines, as before
    assert not await kvstate.take_turn(b, "job", now=T0 + HOUR + timedelta(minutes=1), every=HOUR, by="b")
    assert reads == ["job"]
