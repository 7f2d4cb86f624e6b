"""A short version of ``bench.scale`` without a clock: the work of the worker's tick, counted in SQLite
virtual-machine instructions (a progress handler called at every one), must not depend on how many
requests are history or how many grants are active — only on what is due. A statement that walked a
table instead of an index shows up here as instructions per row; the benchmark's timings (1,000 vs
1,000,000 rows) stay in ``bench/``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, select, update

from bench.common import RecordingIdp
from bench.scale import fill, worker_for
from bot.services.clock import ManualClock
from storage.db import Database
from storage.tables import Event, Grant

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DUE = 5  # grants made due for revocation, the same ones whatever the history


async def _tick_instructions(path: Path, *, historical: int, active: int, due: int = 0) -> tuple[list[int], Any]:
    """Instructions per tick for three ticks a second apart, after a first tick that warms the caches."""
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.migrate()
    await fill(db, historical=historical, active=active, now=NOW)
    if due:
        live = [f"G-S{i:08d}" for i in range(historical, historical + due)]
        async with db.transaction() as s:
            await s.execute(update(Grant).where(Grant.id.in_(live))  # type: ignore[attr-defined]
                            .values(expires_at=NOW + timedelta(milliseconds=500)))
    await db.dispose()

    db = Database(f"sqlite+aiosqlite:///{path}")
    counted = [0]

    def _count() -> int:
        counted[0] += 1
        return 0  # go on

    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.driver_connection.set_progress_handler(_count, 1)

    for engine in {db.engine.sync_engine, db.read_engine.sync_engine}:
        event.listen(engine, "connect", _on_connect)
    clock = ManualClock(NOW)
    worker = await worker_for(db, clock)
    try:
        await worker.tick()
        per_tick = []
        for _ in range(3):
            clock.advance(timedelta(seconds=1))
            counted[0] = 0
            await worker.tick()
            per_tick.append(counted[0])
        async with db.sessions() as s:
            # the history's own "expired" events are all stamped NOW (bench.scale.fill)
            expired = (await s.execute(select(Event.id).where(Event.kind == "expired", Event.at > NOW))).all()
        return per_tick, (worker.rt.connectors["idp"], len(expired))
    finally:
        await db.dispose()


async def test_a_tick_with_nothing_due_does_the_same_work_whatever_the_history_and_the_active_grants(
        tmp_path: Path) -> None:
    small, _ = await _tick_instructions(tmp_path / "small.db", historical=100, active=20)
    history, _ = await _tick_instructions(tmp_path / "history.db", historical=4000, active=20)
    active, _ = await _tick_instructions(tmp_path / "active.db", historical=100, active=2000)
    assert small[0] > 0  # the progress handler saw the tick's statements
    # 3,900 more history rows or 1,980 more active grants: not one instruction more (a statement that
    # walked the request or grant table would cost at least a few instructions per row)
    assert history == small and active == small, (small, history, active)


async def test_a_tick_that_revokes_costs_the_same_whatever_the_history(tmp_path: Path) -> None:
    small, (idp_small, audited_small) = await _tick_instructions(tmp_path / "small.db", historical=100,
                                                                 active=20, due=DUE)
    history, (idp_history, audited_history) = await _tick_instructions(tmp_path / "history.db",
                                                                       historical=4000, active=20, due=DUE)
    assert isinstance(idp_small, RecordingIdp) and isinstance(idp_history, RecordingIdp)
    # the due grants were revoked at the IdP and audited in both files, in the first measured tick
    assert len(idp_small.revoked_at) == len(idp_history.revoked_at) == DUE
    assert audited_small == audited_history == DUE
    assert small[0] > small[1]  # revoking cost instructions of its own, in the tick it happened
    # The revoking tick may differ by a few instructions (which grant ids, in what order: 6,031 vs 6,041
    # seen); a walk over the 3,900 extra history rows would cost thousands. The ticks after it: equal.
    assert abs(history[0] - small[0]) <= small[0] // 100 and history[1:] == small[1:], (small, history)
