"""A running dispatcher's own process claims new messages in the transaction that writes them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update

from bot.services.clock import ManualClock
from bot.services.outbox.dispatcher import OutboxDispatcher, RecordingNotifier, enqueue
from storage.tables import OutboxMessage
from tests.conftest import DbFactory


async def _write(db: Any, clock: ManualClock, *messages: tuple[str, int], core: bool = False) -> None:
    async with (db.core_transaction() if core else db.transaction()) as session:
        for key, n in messages:
            enqueue(session, at=clock.now(), order_key=key, kind="note", payload={"key": key, "n": n})


class Held(RecordingNotifier):
    """Delivers only once ``gate`` is set: its chains stay under way until then."""

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__()
        self.gate = gate

    async def deliver(self, kind: str, payload: dict[str, Any]) -> Any:
        await self.gate.wait()
        return await super().deliver(kind, payload)


class Timers:
    """Stands in for the loop's ``call_later``: the test says when the waits are over."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[..., None], tuple[Any, ...], list[bool]]] = []

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Any:
        cancelled = [False]
        self.pending.append((delay, callback, args, cancelled))

        class Handle:
            def cancel(self) -> None:
                cancelled[0] = True
        return Handle()

    def delays(self) -> list[float]:
        return [delay for delay, _, _, cancelled in self.pending if not cancelled[0]]

    def fire_all(self) -> None:
        pending, self.pending = self.pending, []
        for _, callback, args, cancelled in pending:
            if not cancelled[0]:
                callback(*args)


async def _rows(db: Any) -> list[tuple[str, int, str, str | None]]:
    async with db.sessions() as session:
        rows = await session.execute(select(OutboxMessage).order_by(OutboxMessage.id))  # type: ignore[arg-type]
        return [(m.order_key, m.payload["n"], m.status, m.claimed_by) for m in rows.scalars()]


@pytest.mark.parametrize("core", [False, True], ids=["session", "core"])
async def test_a_commit_claims_its_new_heads_and_hands_them_over(db_factory: DbFactory, clock: ManualClock,
                                                                  core: bool) -> None:
    db = db_factory()
    await db.migrate()
    notifier = RecordingNotifier()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1")
    db.outbox_taker = dispatcher  # as OutboxDispatcher.run() does while it runs
    await _write(db, clock, ("R-A", 1), ("R-A", 2), ("R-B", 1), core=core)
    assert not db.outbox_ready.is_set()  # R-A 2 waits behind R-A 1: its chain claims it, not a claim pass
    await dispatcher.quiesce()
    delivered = [(p["key"], p["n"]) for p in notifier.of_kind("note")]
    assert sorted(delivered) == [("R-A", 1), ("R-A", 2), ("R-B", 1)]
    assert delivered.index(("R-A", 1)) < delivered.index(("R-A", 2))  # in order within a key
    assert [r[2] for r in await _rows(db)] == ["sent"] * 3


async def test_a_message_behind_an_unclaimed_one_has_its_keys_head_claimed(db_factory: DbFactory,
                                                                            clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    notifier = RecordingNotifier()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1")
    await _write(db, clock, ("R-A", 1), core=True)  # no dispatcher running: written unclaimed
    db.outbox_ready.clear()
    db.outbox_taker = dispatcher
    await _write(db, clock, ("R-A", 2), ("R-B", 1), core=True)
    rows = await _rows(db)
    assert rows[1] == ("R-A", 2, "pending", None)  # never claimed ahead of R-A 1
    await dispatcher.quiesce()
    # R-A's head was claimed by its key, not by a claim pass over the whole outbox
    assert not db.outbox_ready.is_set()
    delivered = [(p["key"], p["n"]) for p in notifier.of_kind("note")]
    assert sorted(delivered) == [("R-A", 1), ("R-A", 2), ("R-B", 1)]
    assert delivered.index(("R-A", 1)) < delivered.index(("R-A", 2))
    assert [r[2] for r in await _rows(db)] == ["sent"] * 3


async def test_a_message_behind_a_key_being_sent_needs_no_claim(db_factory: DbFactory, clock: ManualClock) -> None:
    """A commit adds a message behind one whose chain is under way in this process: the chain takes it,
    no claim runs for it, not even by key."""
    db = db_factory()
    await db.migrate()
    gate = asyncio.Event()
    notifier = Held(gate)
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1")
    db.outbox_taker = dispatcher
    await _write(db, clock, ("R-A", 1))
    await asyncio.sleep(0)  # its chain is delivering (held)
    claims: list[list[str]] = []
    original = dispatcher._claim_keys
    dispatcher._claim_keys = lambda keys: (claims.append(keys), original(keys))[1]  # type: ignore[method-assign]
    await _write(db, clock, ("R-A", 2))
    gate.set()
    await dispatcher.quiesce()
    assert [(p["key"], p["n"]) for p in notifier.of_kind("note")] == [("R-A", 1), ("R-A", 2)]
    assert claims == [] and not db.outbox_ready.is_set()


async def test_a_chain_that_ends_after_a_commit_it_did_not_see_claims_its_message(
        db_factory: DbFactory, clock: ManualClock) -> None:
    """The race (PostgreSQL): a commit's claim saw the key's head still pending, the chain's last record
    ran before that commit, and the commit tells the dispatcher while the chain is ending. The chain's
    end claims the message by key."""
    db = db_factory()
    await db.migrate()
    notifier = RecordingNotifier()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1")
    db.outbox_taker = dispatcher
    recorded, release = asyncio.Event(), asyncio.Event()
    original = dispatcher._record_sent

    async def record_then_hold(batch: Any, refs: Any) -> Any:
        after = await original(batch, refs)
        recorded.set()
        await release.wait()  # recorded, found nothing after it, not ended yet
        return after

    dispatcher._record_sent = record_then_hold  # type: ignore[method-assign]
    await _write(db, clock, ("R-A", 1))
    await recorded.wait()
    db.outbox_taker = None
    await _write(db, clock, ("R-A", 2))  # as the racing commit left it: pending, unclaimed
    db.outbox_ready.clear()
    db.outbox_taker = dispatcher
    dispatcher.notice(["R-A"])  # that commit's notice, after the chain's last record
    release.set()
    await dispatcher.quiesce()
    assert [(p["key"], p["n"]) for p in notifier.of_kind("note")] == [("R-A", 1), ("R-A", 2)]
    assert not db.outbox_ready.is_set()  # claimed by key, no claim pass


@pytest.mark.parametrize("kind", ["transaction", "core_transaction"])
async def test_a_rolled_back_transaction_hands_over_nothing(db_factory: DbFactory, clock: ManualClock,
                                                            kind: str) -> None:
    db = db_factory()
    await db.migrate()
    notifier = RecordingNotifier()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1")
    db.outbox_taker = dispatcher
    with pytest.raises(RuntimeError):
        async with getattr(db, kind)() as session:
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
    dispatcher = OutboxDispatcher(db, Held(gate), clock, owner="w1", concurrency=2)
    db.outbox_taker = dispatcher
    await _write(db, clock, *[(f"R-{k}", 1) for k in range(5)])
    assert [r[3] for r in await _rows(db)] == ["w1", "w1", None, None, None]
    assert dispatcher.room() == 0 and db.outbox_ready.is_set()
    await _write(db, clock, ("R-9", 1))
    assert (await _rows(db))[-1][3] is None  # no room: left for the claim pass
    gate.set()
    await dispatcher.quiesce()


async def test_a_paced_lanes_messages_from_other_commits_are_claimed_together(db_factory: DbFactory,
                                                                              clock: ManualClock) -> None:
    """A paced lane's chain usually runs in another replica: the commits here that add lines behind its
    head do not each claim by key; one claim after a quarter of the interval serves them all."""
    db = db_factory()
    await db.migrate()
    notifier = RecordingNotifier()
    timers = Timers()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1", lane_interval=0.04, call_later=timers.call_later)
    await _write(db, clock, ("lane:audit", 1))  # written by a replica whose chain then died: unclaimed
    db.outbox_ready.clear()
    db.outbox_taker = dispatcher
    for n in (2, 3, 4):
        await _write(db, clock, ("lane:audit", n))
    assert timers.delays() == [0.01]  # one wait of a quarter of the interval, for all three commits
    assert dispatcher.counts["claims by key"] == 0  # none yet: waiting a quarter of the interval
    timers.fire_all()
    await dispatcher.quiesce()
    assert dispatcher.counts["claims by key"] == 1
    assert sorted(p["n"] for p in notifier.of_kind("note")) == [1, 2, 3, 4]
    assert not db.outbox_ready.is_set()


async def test_a_lane_held_by_a_chain_is_not_claimed_again(db_factory: DbFactory, clock: ManualClock) -> None:
    """Lines of a lane come from every transaction, so they commit out of id order: a chain may hold a
    later line while an earlier one commits after it. That earlier line is the lane's oldest pending
    message, but claiming it would start a second chain on the lane (two posts at once, a deadlock
    between their claims on PostgreSQL). A lane's head is claimed only while no chain holds the lane."""
    db = db_factory()
    await db.migrate()
    await _write(db, clock, ("lane:audit", 1), ("lane:audit", 2))
    async with db.transaction() as session:  # a chain (another replica's) took line 2 before 1 committed
        await session.execute(update(OutboxMessage).where(OutboxMessage.payload["n"].as_integer() == 2)  # type: ignore[index]
                              .values(claimed_until=clock.now() + timedelta(minutes=2), claimed_by="other"))
    replica = OutboxDispatcher(db, RecordingNotifier(), clock, owner="w1", lane_interval=1.0)
    assert await replica.claim(10) == []  # the lane is held
    async with db.transaction() as session:  # the other chain records line 2 and ends
        await session.execute(update(OutboxMessage).where(OutboxMessage.payload["n"].as_integer() == 2)  # type: ignore[index]
                              .values(status="sent", claimed_until=None))
    assert [(m.order_key, m.payload["n"]) for m in await replica.claim(10)] == [("lane:audit", 1)]


async def test_a_message_due_without_a_commit_is_claimed_while_the_dispatcher_is_busy(
        db_factory: DbFactory, clock: ManualClock) -> None:
    """Nothing wakes the dispatcher for a message that became due by itself (a backoff ended, a dead
    replica's lease ran out); its claim pass every interval must still come while chains keep ending."""
    db = db_factory()
    await db.migrate()

    class Slow(RecordingNotifier):  # deliveries overlap: some chain is always running, one ends often
        async def deliver(self, kind: str, payload: dict[str, Any]) -> Any:
            await asyncio.sleep(0.03)
            return await super().deliver(kind, payload)

    notifier = Slow()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1")
    async with db.transaction() as session:  # backing off for a minute: nobody will tell when it is due
        enqueue(session, at=clock.now() + timedelta(minutes=1), order_key="R-OLD", kind="note",
                payload={"key": "R-OLD", "n": 1})
    db.outbox_ready.clear()
    loop = asyncio.create_task(dispatcher.run(db.outbox_ready, interval=0.5))
    stop = asyncio.Event()

    async def stream() -> None:  # a chain of its own ends far more often than every interval
        n = 0
        while not stop.is_set():
            n += 1
            await _write(db, clock, (f"R-{n}", n))
            await asyncio.sleep(0.005)

    busy = asyncio.create_task(stream())
    try:
        async with asyncio.timeout(10):
            while len(notifier.of_kind("note")) < 5:  # busy: chains end all the time
                await asyncio.sleep(0.01)
        clock.advance(timedelta(minutes=2))  # R-OLD is due now, and no commit says so
        async with asyncio.timeout(10):
            while ("R-OLD", 1) not in [(p["key"], p["n"]) for p in notifier.of_kind("note")]:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await busy
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


async def test_no_claim_by_key_after_the_run_loop_ends_until_it_runs_again(db_factory: DbFactory,
                                                                          clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    notifier = RecordingNotifier()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1", lane_interval=1.0)
    loop = asyncio.create_task(dispatcher.run(db.outbox_ready, interval=60))
    await asyncio.sleep(0)
    dispatcher.notice(["lane:audit"])  # a quarter-interval wait starts
    loop.cancel()  # shutdown
    with pytest.raises(asyncio.CancelledError):
        await loop
    await _write(db, clock, ("R-A", 1))  # written without a taker
    dispatcher.notice(["R-A"])
    await dispatcher.quiesce()  # the lane's wait was cancelled with the loop; nothing claimed by key
    assert dispatcher.counts["claims by key"] == 0 and notifier.delivered == []
    loop = asyncio.create_task(dispatcher.run(db.outbox_ready, interval=60))  # the worker restarts it
    try:
        async with asyncio.timeout(10):
            while not notifier.delivered:  # its first claim pass
                await asyncio.sleep(0.01)
        dispatcher.notice(["R-B"])
        assert dispatcher.counts["claims by key"] == 0  # claims by key run as a task: not yet
        await dispatcher.quiesce()
        assert dispatcher.counts["claims by key"] == 1  # allowed again
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


@pytest.mark.parametrize("db_factory", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_a_message_behind_another_replicas_chain_is_left_to_that_chain(db_factory: DbFactory,
                                                                             clock: ManualClock) -> None:
    """PostgreSQL (replicas): a commit does not claim by key behind a head another process holds; that
    process's chain takes the message, or, had its last record just missed it, a look a moment later
    (next test) or else the claim pass does."""
    db = db_factory()
    assert not db.is_sqlite  # replicas share PostgreSQL
    await db.migrate()
    await _write(db, clock, ("R-A", 1))
    async with db.transaction() as session:  # another replica's chain holds R-A's head
        await session.execute(update(OutboxMessage).values(claimed_until=clock.now() + timedelta(minutes=2),
                                                           claimed_by="other"))
    timers = Timers()
    dispatcher = OutboxDispatcher(db, RecordingNotifier(), clock, owner="w1", call_later=timers.call_later)
    db.outbox_taker = dispatcher
    await _write(db, clock, ("R-A", 2))
    await asyncio.sleep(0)
    assert dispatcher.counts["claims by key"] == 0  # not at once: only a look a moment later (next test)
    assert timers.delays() == [0.1]
    async with db.transaction() as session:  # that chain records R-A 1 and ends without seeing R-A 2
        await session.execute(update(OutboxMessage).where(OutboxMessage.payload["n"].as_integer() == 1)  # type: ignore[index]
                              .values(status="sent", claimed_until=None))
    assert [(m.order_key, m.payload["n"]) for m in await dispatcher.claim(10)] == [("R-A", 2)]


@pytest.mark.parametrize("db_factory", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_a_lane_seen_held_by_another_replica_is_not_asked_about_again_for_a_quarter_interval(
        db_factory: DbFactory, clock: ManualClock) -> None:
    """PostgreSQL: every transaction writes an audit line; while another replica's chain holds the paced
    lane, commits here ask the database who holds it once per quarter interval, not each time."""
    db = db_factory()
    assert not db.is_sqlite
    await db.migrate()
    await _write(db, clock, ("lane:audit", 1))
    async with db.transaction() as session:  # another replica's chain holds the lane
        await session.execute(update(OutboxMessage).values(claimed_until=clock.now() + timedelta(minutes=2),
                                                           claimed_by="other"))
    now = [100.0]
    dispatcher = OutboxDispatcher(db, RecordingNotifier(), clock, owner="w1", lane_interval=1.0,
                                  monotonic=lambda: now[0])
    db.outbox_taker = dispatcher
    asked: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "CROSS JOIN LATERAL" in statement:
            asked.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    for n in (2, 3, 4):
        await _write(db, clock, ("lane:audit", n))
    assert len(asked) == 1
    now[0] += 0.26  # a quarter interval later: asked again
    await _write(db, clock, ("lane:audit", 5))
    assert len(asked) == 2
    await dispatcher.quiesce()
    assert dispatcher.counts["claims by key"] == 0  # the lane is that chain's
    assert [r[3] for r in await _rows(db)] == ["other"] + [None] * 4


@pytest.mark.parametrize("db_factory", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_a_message_left_to_a_chain_that_missed_it_is_looked_at_again_shortly(db_factory: DbFactory,
                                                                                   clock: ManualClock) -> None:
    """The other replica's chain recorded its message (its claim of the next ran before this commit and
    did not see it): the look a moment later claims it by key, without waiting for the claim pass."""
    db = db_factory()
    await db.migrate()
    await _write(db, clock, ("R-A", 1), ("R-B", 1))
    async with db.transaction() as session:  # another replica's chains hold both heads
        await session.execute(update(OutboxMessage).values(claimed_until=clock.now() + timedelta(minutes=2),
                                                           claimed_by="other"))
    timers = Timers()
    notifier = RecordingNotifier()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1", call_later=timers.call_later)
    db.outbox_taker = dispatcher
    await _write(db, clock, ("R-A", 2), ("R-B", 2))
    await _write(db, clock, ("R-A", 3))
    assert timers.delays() == [0.1]  # one look, a moment later, at every key left to other chains meanwhile
    async with db.transaction() as session:  # R-A's chain records R-A 1 and ends without seeing R-A 2
        await session.execute(update(OutboxMessage).where(OutboxMessage.order_key == "R-A",  # type: ignore[arg-type]
                                                          OutboxMessage.payload["n"].as_integer() == 1)  # type: ignore[index]
                              .values(status="sent", claimed_until=None))
    timers.fire_all()  # R-B's chain is still sending R-B 1: its record will claim R-B 2, not this look
    await dispatcher.quiesce()
    assert [p["n"] for _, p in notifier.delivered] == [2, 3]
    assert dispatcher.counts["claims by key"] == 1
    # (delivered here, above; a message sent carries no claim any more)
    assert await _rows(db) == [("R-A", 1, "sent", "other"), ("R-B", 1, "pending", "other"),
                               ("R-A", 2, "sent", None), ("R-B", 2, "pending", None), ("R-A", 3, "sent", None)]
