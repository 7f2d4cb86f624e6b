"""A worker's heartbeat is one upsert: workers beating under one name for the first time at the same
moment do not fail each other's pass with a duplicate key (they did as read-then-insert, on PostgreSQL)."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from bot.policy_file import parse_policy
from bot.services.background.worker import Worker
from bot.services.clock import ManualClock
from bot.services.outbox.dispatcher import OutboxDispatcher, RecordingNotifier
from storage.tables import WorkerHeartbeat
from tests.conftest import POLICY, DbFactory
from tests.services.stack import make_stack


async def test_first_beats_under_one_name_at_once(db_factory: DbFactory, clock: ManualClock) -> None:
    stacks = [await make_stack(db_factory(), parse_policy(POLICY, env={}), clock) for _ in range(6)]
    workers = [Worker(s.rt, OutboxDispatcher(s.rt.db, RecordingNotifier(), clock), worker_id="same-name")
               for s in stacks]
    for w in workers:
        w.ticks = 7
    await asyncio.gather(*(w._heartbeat() for w in workers))
    async with stacks[0].rt.db.sessions() as session:
        rows = (await session.execute(select(WorkerHeartbeat))).scalars().all()
    assert [(r.worker_id, r.ticks, r.beat_at) for r in rows] == [("same-name", 7, clock.now())]
