"""The clock rule: a replica whose clock is off the database's by more than the bound acts on nothing
judged by time, and says so; within the bound it works as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.services.background.clock_guard import MAX_SKEW, ClockGuard, database_now
from bot.services.clock import ManualClock
from bot.services.outbox.dispatcher import RecordingNotifier
from storage.tables import Grant, WorkerHeartbeat
from tests.conftest import DbFactory
from tests.services.stack import Stack, make_stack


def _guard(s: Stack, database_clock: ManualClock) -> ClockGuard:
    """The database's clock is ``database_clock`` (the real one reads ``now()`` from the server)."""
    async def read() -> datetime:
        return database_clock.now()

    guard = ClockGuard(s.rt.db, s.rt.clock, instance=s.worker.worker_id, read_db_now=read)
    s.rt.clock_guard = guard
    return guard


async def test_a_replica_three_minutes_fast_revokes_nothing_early_and_frees_no_claims(
        db_factory: DbFactory, loaded_policy: object) -> None:
    true = ManualClock()  # the database's clock, and the healthy replica's
    fast = ManualClock(true.now() + timedelta(minutes=3))
    notifier = RecordingNotifier()
    healthy = await make_stack(db_factory(), loaded_policy, true, notifier)  # type: ignore[arg-type]
    skewed = await make_stack(db_factory(), loaded_policy, fast, notifier, migrate=False)  # type: ignore[arg-type]
    skewed.worker.worker_id = skewed.rt.instance_id = "fast-replica"
    _guard(healthy, true)
    guard = _guard(skewed, true)
    await healthy.requests.submit(requester="alice@example.com", eligibility="readonly",
                                  duration=timedelta(hours=1), justification="logs")
    await healthy.worker.run_until_idle()
    assert await healthy.is_member("alice@example.com", "readonly")
    for clock in (true, fast):
        clock.advance(timedelta(minutes=58))  # the fast replica believes the grant expired a minute ago
    await skewed.worker.run_until_idle()
    assert not guard.ok and guard.skew == -timedelta(minutes=3)
    async with skewed.rt.db.sessions() as session:
        (g,) = (await session.execute(select(Grant))).scalars().all()
        beats = {b.worker_id for b in (await session.execute(select(WorkerHeartbeat))).scalars()}
    assert g.status == "active" and await healthy.is_member("alice@example.com", "readonly")
    assert "fast-replica" not in beats  # it does not pass for a working replica either
    await healthy.worker.run_until_idle()  # the healthy replica delivers the alert
    (alert,) = [a for a in notifier.of_kind("alert") if "fast-replica" in a["text"]]
    assert "180 s ahead of the database's" in alert["text"]
    # within the bound again (NTP fixed it): it works as before, and says so
    fast.set(true.now() + MAX_SKEW / 2)
    true.advance(timedelta(minutes=3))
    fast.advance(timedelta(minutes=3))
    await skewed.worker.run_until_idle()
    assert guard.ok
    async with skewed.rt.db.sessions() as session:
        (g,) = (await session.execute(select(Grant))).scalars().all()
    assert g.status == "ended"


async def test_the_database_clock_is_read_from_the_server(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    read = await database_now(db)
    assert read.tzinfo is not None and abs(read - datetime.now(UTC)) < timedelta(seconds=5)
