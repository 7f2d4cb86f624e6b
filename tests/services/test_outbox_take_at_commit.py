"""A running dispatcher's own process claims new messages in the transaction that writes them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from bot.services.clock import ManualClock
from bot.services.outbox import OutboxDispatcher, RecordingNotifier, enqueue
from storage.tables import OutboxMessage
from tests.conftest import DbFactory


async def _write(db: Any, clock: ManualClock, *messages: tuple[str, int]) -> None:
    async with db.transaction() as session:
        for key, n in messages:
            enqueue(session, at=clock.now(), order_key=key, kind="note", payload={"key": key, "n": n})


async def _rows(db: Any) -> list[tuple[str, int, str, str | None]]:
    async with db.sessions() as session:
        rows = await session.execute(select(OutboxMessage).order_by(OutboxMessage.id))  # type: ignore[arg-type]
        return [(m.order_key, m.payload["n"], m.status, m.claimed_by) for m in rows.scalars()]


async def test_a_commit_claims_its_new_heads_and_hands_them_over(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    notifier = RecordingNotifier()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1")
    db.outbox_taker = dispatcher  # as OutboxDispatcher.run() does while it runs
    await _write(db, clock, ("R-A", 1), ("R-A", 2), ("R-B", 1))
    assert not db.outbox_ready.is_set()  # R-A 2 waits behind R-A 1: its chain claims it, not a claim pass
    await dispatcher.quiesce()
    delivered = [(p["key"], p["n"]) for p in notifier.of_kind("note")]
    assert sorted(delivered) == [("R-A", 1), ("R-A", 2), ("R-B", 1)]
    assert delivered.index(("R-A", 1)) < delivered.index(("R-A", 2))  # in order within a key
    assert [r[2] for r in await _rows(db)] == ["sent"] * 3


async def test_a_message_behind_an_earlier_one_is_left_for_the_claim_pass(db_factory: DbFactory,
                                                                          clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    dispatcher = OutboxDispatcher(db, RecordingNotifier(), clock, owner="w1")
    await _write(db, clock, ("R-A", 1))  # no dispatcher running: written unclaimed
    db.outbox_ready.clear()
    db.outbox_taker = dispatcher
    await _write(db, clock, ("R-A", 2), ("R-B", 1))
    await dispatcher.quiesce()
    rows = await _rows(db)
    assert rows[0] == ("R-A", 1, "pending", None)
    assert rows[1] == ("R-A", 2, "pending", None)  # never ahead of R-A 1
    assert rows[2][:3] == ("R-B", 1, "sent")
    assert db.outbox_ready.is_set()  # so the claim pass looks for R-A's head


async def test_a_rolled_back_transaction_hands_over_nothing(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    notifier = RecordingNotifier()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1")
    db.outbox_taker = dispatcher
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            enqueue(session, at=clock.now(), order_key="R-A", kind="note", payload={"key": "R-A", "n": 1})
            raise RuntimeError("the state change failed")
    await dispatcher.quiesce()
    assert notifier.delivered == [] and await _rows(db) == []


async def test_a_commit_claims_no_more_than_the_dispatcher_has_room_for(db_factory: DbFactory,
                                                                        clock: ManualClock) -> None:
    """A burst (a mass expiry's DMs) must not start more chains than ``concurrency``: the rest is left
    to the claim pass, which keeps to it."""
    db = db_factory()
    await db.migrate()
    gate = asyncio.Event()

    class Held(RecordingNotifier):
        async def deliver(self, kind: str, payload: dict[str, Any]) -> Any:
            await gate.wait()
            return await super().deliver(kind, payload)

    dispatcher = OutboxDispatcher(db, Held(), clock, owner="w1", concurrency=2)
    db.outbox_taker = dispatcher
    await _write(db, clock, *[(f"R-{k}", 1) for k in range(5)])
    assert [r[3] for r in await _rows(db)] == ["w1", "w1", None, None, None]
    assert dispatcher.room() == 0 and db.outbox_ready.is_set()
    await _write(db, clock, ("R-9", 1))
    assert (await _rows(db))[-1][3] is None  # no room: left for the claim pass
    gate.set()
    await dispatcher.quiesce()
