"""Fencing the outbox: a dispatcher paused past its lease neither posts nor records a message another
dispatcher took over (bot/services/outbox/fence.py). Without it a stale "granting access now" arrived
after the "revoked" that followed it."""

from __future__ import annotations

from datetime import timedelta

from bot.services.clock import ManualClock
from bot.services.outbox.dispatcher import OutboxDispatcher
from bot.services.outbox.write import Claimed
from storage.tables import OutboxMessage
from tests.conftest import DbFactory
from tests.services.test_outbox_delivery import ScriptedNotifier, _enqueue, _statuses


async def test_a_paused_dispatcher_does_not_post_or_record_a_message_taken_over(
        db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    notifier = ScriptedNotifier()
    a = OutboxDispatcher(db, notifier, clock, owner="replica-a")
    b = OutboxDispatcher(db, notifier, clock, owner="replica-b")
    await _enqueue(db, clock, "R-1", range(1))  # "granting access now"
    [claimed] = await a.claim(10)  # A claims it, and is paused before posting
    clock.advance(a.lease + timedelta(seconds=1))
    await _enqueue(db, clock, "R-1", range(1, 2))  # "revoked", written meanwhile
    assert await b.drain() == 2  # B takes the key over and posts both, in order
    assert notifier.delivered == [("R-1", 0), ("R-1", 1)]

    assert await a.chain(claimed) == 0  # A resumes: its claim is stale, it posts nothing
    assert notifier.delivered == [("R-1", 0), ("R-1", 1)]
    assert await _statuses(db) == {"sent": 2}


async def test_a_stale_record_is_refused(db_factory: DbFactory, clock: ManualClock) -> None:
    """A pause between the look and the post can still post once late (Slack has no fence); the record of
    it is refused: the row stays the claim of the dispatcher that holds it, which records its own outcome."""
    db = db_factory()
    await db.migrate()
    notifier = ScriptedNotifier()
    a = OutboxDispatcher(db, notifier, clock, owner="replica-a")
    b = OutboxDispatcher(db, notifier, clock, owner="replica-b")
    await _enqueue(db, clock, "R-1", range(1))
    [claimed] = await a.claim(10)
    clock.advance(a.lease + timedelta(seconds=1))
    [taken] = await b.claim(10)
    assert taken.token == claimed.token + 1
    fresh = Claimed(claimed.id, claimed.order_key, claimed.kind, claimed.payload, claimed.attempts, claimed.token,
                    clock.now() + a.lease)  # as if A had looked just before its pause
    await a.chain(fresh)  # posted late, its record refused
    async with db.sessions() as session:
        row = await session.get(OutboxMessage, claimed.id)
        assert row is not None and row.status == "pending" and row.claimed_by == "replica-b"
    assert await b.chain(taken) == 1
    assert await _statuses(db) == {"sent": 1}
