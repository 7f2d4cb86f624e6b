"""The scheduled review is posted to the audit channel once per cron fire time, however many replicas tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from storage.tables import OutboxMessage
from tests.conftest import POLICY, DbFactory
from tests.services.stack import make_stack

WEEKLY = POLICY + 'reports: {cron: "0 9 * * MON", timezone: Europe/London}\n'


async def test_two_replicas_post_the_weekly_review_exactly_once(db_factory: DbFactory) -> None:
    loaded = parse_policy(WEEKLY, env={})
    clock = ManualClock(datetime(2026, 6, 7, 12, tzinfo=UTC))  # a Sunday, British Summer Time
    a = await make_stack(db_factory(), loaded, clock)
    b = await make_stack(db_factory(), loaded, clock)
    a.rt.outbox_retention = b.rt.outbox_retention = None  # the outbox rows are this test's record of the posts
    await a.worker.run_until_idle()  # the first tick only starts the schedule
    await b.worker.run_until_idle()
    clock.set(datetime(2026, 6, 8, 7, 59, tzinfo=UTC))  # Monday 08:59 in London
    await a.worker.run_until_idle()
    assert a.notifier.of_kind("report") == []
    clock.set(datetime(2026, 6, 8, 8, 0, tzinfo=UTC))  # Monday 09:00 in London
    await a.worker.tick()
    await b.worker.tick()
    await a.worker.run_until_idle()
    await b.worker.run_until_idle()
    posts = a.notifier.of_kind("report") + b.notifier.of_kind("report")
    assert len(posts) == 1
    assert posts[0]["text"].startswith("# Access review, 2026-06-01 08:00")
    clock.advance(timedelta(days=21))  # three missed weeks: one post, for the latest
    await b.worker.run_until_idle()
    await a.worker.run_until_idle()
    async with a.rt.db.sessions() as session:
        rows = (await session.execute(select(OutboxMessage).where(OutboxMessage.kind == "report"))).scalars().all()
    assert len(rows) == 2
