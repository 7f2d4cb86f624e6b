"""Scale: the worker's tick with 1,000 vs 1,000,000 request rows, and RSS with 1,000 vs 100,000 active grants.

    python -m bench.scale [--big 1000000] [--small 1000]

A tick must only touch due rows (indexes on every due-time column), so its cost must not grow with
history; the process must hold no per-grant objects, so its memory must not grow with active grants.
Each size runs in a fresh subprocess so that RSS is measured cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from bench.common import RecordingIdp, machine, pct, rss_mb
from bot.policy_file import parse_policy
from bot.services.access.reconcile import SCHEDULE_KEY
from bot.services.background.worker import Worker
from bot.services.clock import Clock, SystemClock
from bot.services.directory import Directory
from bot.services.outbox.dispatcher import OutboxDispatcher, RecordingNotifier
from bot.services.runtime import Runtime
from storage.db import Database
from storage.tables import AccessRequest, Event, Grant, KeyValue

POLICY = """
audit_channel: C0AUDIT
connectors: {idp: {type: memory}}
eligibilities:
  - {name: bulk, connector: idp, target: {group: g}, requestors: {users: [a@example.com]}, max_duration: 1h}
"""


async def fill(db: Database, *, historical: int, active: int, now: datetime | None = None) -> None:
    """``historical`` requests long expired (grant ended) and ``active`` ones whose grants run two more days."""
    now = now or datetime.now(UTC)
    batch = 5000
    for start in range(0, historical + active, batch):
        reqs, grants, events = [], [], []
        for i in range(start, min(start + batch, historical + active)):
            live = i >= historical
            rid, gid = f"R-S{i:08d}", f"G-S{i:08d}"
            reqs.append(dict(id=rid, eligibility="bulk", kind="access", requester=f"u{i % 5000}@example.com",
                             duration_s=3600, justification="history", status="active" if live else "expired",
                             layer=1, layers=0, created_at=now - timedelta(days=1), updated_at=now, version=0))
            grants.append(dict(id=gid, request_id=rid, connector="idp", target_kind="group", target_id="g",
                               user_email=f"u{i % 5000}@example.com", status="active" if live else "ended",
                               owns_membership=live, granted_at=now - timedelta(days=1),
                               expires_at=now + timedelta(days=2) if live else now - timedelta(hours=20),
                               warn_at=now + timedelta(days=1) if live else None, attempts=0, alerted=False))
            events.append(dict(at=now, request_id=rid, actor="x", kind="expired", detail={}, prev_hash="0" * 64,
                               hash=f"{i:064d}"))
        async with db.transaction() as s:
            await s.execute(insert(AccessRequest), reqs)
            await s.execute(insert(Grant), grants)
            await s.execute(insert(Event), events)


async def build(path: str, historical: int, active: int) -> None:
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.migrate()
    await fill(db, historical=historical, active=active)
    await db.dispose()


async def worker_for(db: Database, clock: Clock) -> Worker:
    """A worker over ``db`` with an in-process IdP. The reconciliation sweep is a separate 15-minute job
    that by nature reads a target's whole membership; the per-second tick is measured, so it is marked
    not due."""
    idp = RecordingIdp()
    rt = Runtime(db=db, clock=clock, loaded=parse_policy(POLICY, env={}), connectors={"idp": idp},
                 directory=Directory({"idp": idp}, clock))
    async with db.transaction() as s:
        s.add(KeyValue(key=SCHEDULE_KEY, value={"next_at": (clock.now() + timedelta(days=1)).isoformat(),
                                                "by": "bench"}))
    return Worker(rt, OutboxDispatcher(db, RecordingNotifier(), clock), worker_id="scale")


async def measure(path: str, ticks: int) -> dict[str, float]:
    db = Database(f"sqlite+aiosqlite:///{path}")
    worker = await worker_for(db, SystemClock())
    await worker.tick()  # warm caches
    times = []
    for _ in range(ticks):
        t0 = time.perf_counter()
        await worker.tick()
        times.append(time.perf_counter() - t0)
    rss = rss_mb()
    await db.dispose()
    return {"tick_p50_ms": pct(times, 50) * 1000, "tick_p90_ms": pct(times, 90) * 1000, "rss_mb": rss}


def child(historical: int, active: int, ticks: int) -> dict[str, float]:
    """Build the database in one process, measure in a fresh one (so RSS is the bot's, not the loader's)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/scale.db"
        subprocess.run([sys.executable, "-m", "bench.scale", "--build", path, str(historical), str(active)],
                       check=True)
        out = subprocess.run([sys.executable, "-m", "bench.scale", "--measure", path, str(ticks)],
                             check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--active-big", type=int, default=100_000)
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--build", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        asyncio.run(build(args.build[0], int(args.build[1]), int(args.build[2])))
        return 0
    if args.measure:
        print(json.dumps(asyncio.run(measure(args.measure[0], int(args.measure[1])))))
        return 0
    print(f"machine: {machine()}")
    small = child(args.small, 0, args.ticks)
    big = child(args.big, 0, args.ticks)
    print(f"{'rows':>10} {'tick p50 ms':>12} {'tick p90 ms':>12}")
    print(f"{args.small:>10} {small['tick_p50_ms']:>12.2f} {small['tick_p90_ms']:>12.2f}")
    print(f"{args.big:>10} {big['tick_p50_ms']:>12.2f} {big['tick_p90_ms']:>12.2f}")
    print(f"tick ratio (p50) = {big['tick_p50_ms'] / small['tick_p50_ms']:.2f} (target ≤ 2)")
    a_small = child(0, 1_000, 5)
    a_big = child(0, args.active_big, 5)
    print(f"{'active grants':>14} {'RSS MB':>8}")
    print(f"{1_000:>14} {a_small['rss_mb']:>8.1f}")
    print(f"{args.active_big:>14} {a_big['rss_mb']:>8.1f}")
    print(f"RSS ratio = {a_big['rss_mb'] / a_small['rss_mb']:.2f} (target ≤ 1.1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
