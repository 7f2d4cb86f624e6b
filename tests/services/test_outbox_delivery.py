"""The outbox dispatcher: chains per order key, the continuous loop woken by commits, group commit."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from bot.domain.requests import Decision
from bot.policy_file import LoadedPolicy
from bot.services.clock import ManualClock
from bot.services.outbox.dispatcher import (
    Delivery,
    OutboxDispatcher,
    RecordingNotifier,
    Ref,
    RetryLater,
    enqueue,
    message_refs,
)
from storage.tables import OutboxMessage
from tests.conftest import DbFactory
from tests.services.stack import make_stack


class ScriptedNotifier:
    """Records deliveries; fails the messages whose payload says so; can hold deliveries at a gate."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, int]] = []
        self.gate: asyncio.Event | None = None
        self.arrived = asyncio.Condition()

    async def deliver(self, kind: str, payload: dict[str, Any]) -> Delivery:
        if self.gate is not None:
            await self.gate.wait()
        if payload.get("fail"):
            raise RetryLater("slack is down")
        async with self.arrived:
            self.delivered.append((payload["key"], payload["n"]))
            self.arrived.notify_all()
        return Delivery([Ref(payload["key"], f"msg:{payload['n']}", "C1", f"{payload['n']}.0001")])

    async def wait_for(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.delivered) >= count), timeout=30)


async def _enqueue(db: Any, clock: ManualClock, key: str, numbers: range, **extra: Any) -> None:
    async with db.transaction() as session:
        for n in numbers:
            enqueue(session, at=clock.now(), order_key=key, kind="note", payload={"key": key, "n": n, **extra})


async def _statuses(db: Any) -> dict[str, int]:
    async with db.sessions() as session:
        rows = await session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))
        return {status: count for status, count in rows.all()}


async def test_one_claim_delivers_a_whole_key_in_order(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    notifier = ScriptedNotifier()
    await _enqueue(db, clock, "R-A", range(4))
    await _enqueue(db, clock, "R-B", range(3))
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1")

    assert await dispatcher.dispatch_once() == 7  # the heads are claimed once; each chain follows its key
    assert [n for k, n in notifier.delivered if k == "R-A"] == [0, 1, 2, 3]
    assert [n for k, n in notifier.delivered if k == "R-B"] == [0, 1, 2]
    assert await _statuses(db) == {"sent": 7}
    assert [r.ts for r in await message_refs(db, "R-A")] == ["0.0001", "1.0001", "2.0001", "3.0001"]


async def test_a_failure_stops_its_chain_and_keeps_the_order(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    notifier = ScriptedNotifier()
    await _enqueue(db, clock, "R-A", range(1))
    await _enqueue(db, clock, "R-A", range(1, 2), fail=True)
    await _enqueue(db, clock, "R-A", range(2, 3))
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1")

    assert await dispatcher.dispatch_once() == 1
    assert notifier.delivered == [("R-A", 0)]
    assert await _statuses(db) == {"sent": 1, "pending": 2}
    clock.advance(timedelta(minutes=5))  # the retry is due, but it fails again: the third still waits
    assert await dispatcher.dispatch_once() == 0
    assert notifier.delivered == [("R-A", 0)]


async def test_the_loop_delivers_what_a_commit_adds_without_waiting_for_a_tick(
        db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    notifier = ScriptedNotifier()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1", concurrency=2)
    loop = asyncio.create_task(dispatcher.run(db.outbox_ready, interval=3600))  # no tick within the test
    try:
        await _enqueue(db, clock, "R-A", range(3))
        await notifier.wait_for(3)
        # More keys than slots: the loop claims again as chains end, so every key gets through.
        for key in ("R-B", "R-C", "R-D", "R-E"):
            await _enqueue(db, clock, key, range(2))
        await notifier.wait_for(11)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    for key, count in (("R-A", 3), ("R-B", 2), ("R-C", 2), ("R-D", 2), ("R-E", 2)):
        assert [n for k, n in notifier.delivered if k == key] == list(range(count))
    assert await _statuses(db) == {"sent": 11}


async def test_messages_sent_together_are_recorded_together(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    notifier = ScriptedNotifier()
    notifier.gate = asyncio.Event()
    for i in range(6):
        await _enqueue(db, clock, f"R-{i}", range(1))
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1", concurrency=6)
    transactions = 0
    real = db.core_transaction  # the outbox's claims and records are Core transactions (storage/core_tx.py)

    def counting() -> Any:
        nonlocal transactions
        transactions += 1
        return real()

    db.core_transaction = counting  # type: ignore[method-assign]
    run = asyncio.create_task(dispatcher.dispatch_once())
    while transactions < 1:  # the claim
        await asyncio.sleep(0)
    notifier.gate.set()  # all six deliveries finish at once
    assert await run == 6
    # One claim, then the six records share transactions: fewer than one each (group commit).
    assert transactions < 1 + 6
    assert await _statuses(db) == {"sent": 6}
    assert len(await message_refs(db, "R-3")) == 1


class Refusing(RecordingNotifier):
    """Slack refuses these kinds of message (rate limited for ten minutes); the rest goes through."""

    def __init__(self, *kinds: str) -> None:
        super().__init__()
        self.refused = kinds

    async def deliver(self, kind: str, payload: dict[str, Any]) -> Delivery:
        if kind in self.refused:
            raise RetryLater(f"{kind} rate limited", after=600)
        return await super().deliver(kind, payload)


async def _pending_kinds(db: Any) -> set[str]:
    async with db.sessions() as session:
        return {k for (k,) in (await session.execute(select(OutboxMessage.kind)
                                                      .where(OutboxMessage.status == "pending"))).all()}


async def test_a_stuck_audit_channel_does_not_hold_up_the_requesters_messages(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    notifier = Refusing("audit", "alert")
    s = await make_stack(db_factory(), loaded_policy, clock, notifier)
    await s.requests.submit(requester="alice@example.com", eligibility="readonly", duration=timedelta(hours=1),
                            justification="read the logs")
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "readonly")
    assert any("now have" in p["text"] for p in notifier.of_kind("requester"))  # delivered meanwhile
    assert await _pending_kinds(s.rt.db) == {"audit"}  # the audit lines wait for the channel, in order


async def test_a_stuck_approver_update_holds_up_neither_the_requester_nor_the_next_layer(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    notifier = Refusing("approval_update")
    s = await make_stack(db_factory(), loaded_policy, clock, notifier)
    await s.requests.submit(requester="alice@example.com", eligibility="prod-admin", duration=timedelta(hours=1),
                            justification="deploy", ticket="OPS-1")
    await s.worker.run_until_idle()
    req_id = notifier.of_kind("approval_request")[0]["request"]["id"]
    for layer, approver in ((1, "bob@example.com"), (2, "dave@example.com")):
        await s.approvals.decide(request_id=req_id, layer=layer, approver=approver, decision=Decision.APPROVE)
        await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "prod-admins")
    assert any("now have" in p["text"] for p in notifier.of_kind("requester"))  # delivered meanwhile
    assert await _pending_kinds(s.rt.db) == {"approval_update"}  # they wait, in order, for chat.update
    # layer 2 was asked although layer 1's messages could not be updated
    assert {p["approver"] for p in notifier.of_kind("approval_request") if p["layer"] == 2} == {"dave@example.com",
                                                                                              "carol@example.com"}


async def test_messages_of_a_rolled_back_transaction_are_never_written(db_factory: DbFactory,
                                                                       clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()

    class Boom(Exception):
        pass

    try:
        async with db.transaction() as session:
            enqueue(session, at=clock.now(), order_key="R-X", kind="note", payload={"key": "R-X", "n": 0})
            raise Boom
    except Boom:
        pass
    # a session that rolls back and is then used again commits only what came after the rollback
    async with db._writers() as session:
        enqueue(session, at=clock.now(), order_key="R-Y", kind="note", payload={"key": "R-Y", "n": 0})
        await session.rollback()
        enqueue(session, at=clock.now(), order_key="R-Y", kind="note", payload={"key": "R-Y", "n": 1})
        await session.commit()
    async with db.sessions() as session:
        rows = (await session.execute(select(OutboxMessage.order_key, OutboxMessage.payload)
                                      .order_by(OutboxMessage.id))).all()  # type: ignore[arg-type]
    assert [(k, p["n"]) for k, p in rows] == [("R-Y", 1)]


async def test_messages_are_written_in_the_order_they_were_enqueued(db_factory: DbFactory,
                                                                    clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    async with db.transaction() as session:
        for n, key in enumerate(["R-B", "R-A", "R-B", "R-C", "R-A"]):
            enqueue(session, at=clock.now(), order_key=key, kind="note", payload={"key": key, "n": n})
    async with db.sessions() as session:
        rows = (await session.execute(select(OutboxMessage.payload).order_by(OutboxMessage.id))).scalars().all()  # type: ignore[arg-type]
    assert [p["n"] for p in rows] == [0, 1, 2, 3, 4]


async def test_keys_a_claim_by_key_had_no_room_for_are_claimed_when_a_slot_frees(db_factory: DbFactory,
                                                                                 clock: ManualClock) -> None:
    """A claim by key takes no more heads than there are free slots; the keys it had no room for are
    left to the run loop's next claim (woken at once), not to the claim pass an interval later."""
    db = db_factory()
    await db.migrate()
    for key in ("R-C", "R-D"):
        await _enqueue(db, clock, key, range(1))  # no dispatcher running: plain rows
    notifier = ScriptedNotifier()
    notifier.gate = asyncio.Event()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1", concurrency=1)
    db.outbox_ready.clear()
    dispatcher._recheck = {"R-C", "R-D"}  # as notice() leaves them
    try:
        await dispatcher._claim_by_key()  # one free slot: one head claimed
        assert len(dispatcher._handed) == 1
        assert db.outbox_ready.is_set()  # the run loop is told to claim the other when a slot frees
    finally:
        notifier.gate.set()
        await asyncio.gather(*dispatcher._handed)
    assert [k for k, _ in notifier.delivered] in (["R-C"], ["R-D"])
