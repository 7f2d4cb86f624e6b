"""Mass expiry against Slack's real rate limits: revocation lag, delivery, and a restart half-way.

    python -m bench.slack_tiers [--grants 10000] [--spread 60] [--speedup 20] [--slack-process]

``--grants`` grants of as many people expire over ``--spread`` seconds. The fake Slack enforces every
method's documented tier per workspace and chat.postMessage's per-channel and workspace limits
(bot/fakes/slack_tiers.py, bot/fakes/slack_limits.py), all ``--speedup`` times faster than Slack so that
a run takes minutes instead of hours (the audit channel's pace, ``lane_interval``, is sped up alike); the
ratio of the delivery time to the minimum the limits allow does not depend on it while the bot keeps up.
The requests carry no Slack id (as requests made outside Slack), so each person costs a
``users.lookupByEmail`` (Tier 3) — the worst case; a request made in Slack needs none. Half-way through
the deliveries the worker is stopped and a new one (a new notifier: nothing in memory) takes over.

Printed and checked (non-zero exit when violated): revocation lag p50/p99 (the IdP's receipt − expires_at;
revocation never waits for Slack), every requester notice delivered exactly once, every expiry in the
audit channel exactly once, Slack lookups ≤ people (and after the restart ≤ the people not yet known),
and the time from the first expiry to the last delivery against the minimum the limits allow.

``--slack-process`` runs the fake Slack in a process of its own (bench/slack_process.py), as Slack is
elsewhere: in-process, its request handling takes the bot's event loop and core, which on a loaded
host shows up as revocation lag that is the bench's, not the bot's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import func, select

from bench.common import RecordingIdp, machine, pct
from bench.mass_expiry import policy, seed
from bench.slack_process import AUDIT, TOKEN, InProcessSlack, SlackProcess
from bot.fakes.slack_tiers import METHOD_TIERS, POST_MESSAGE_PER_MINUTE, TIER_PER_MINUTE
from bot.policy_file import parse_policy
from bot.services.background.worker import Worker
from bot.services.clock import SystemClock
from bot.services.directory import Directory
from bot.services.outbox.dispatcher import OutboxDispatcher
from bot.services.runtime import Runtime
from bot.slack.notifier import SlackNotifier
from connectors.resilience import ResilientConnector
from storage.db import Database
from storage.tables import Event, OutboxMessage


def minimum_seconds(people: int, posts: int, spread: float, speedup: float) -> float:
    """The least time the limits allow: every lookup (Tier 3) and every post (the workspace's
    chat.postMessage limit), each bucket starting full, and no earlier than the last expiry."""
    lookup_rate = TIER_PER_MINUTE[METHOD_TIERS["users.lookupByEmail"]] * speedup
    post_rate = POST_MESSAGE_PER_MINUTE * speedup
    lookups = max(0.0, people - lookup_rate) / (lookup_rate / 60)
    return max(spread, lookups, max(0.0, posts - post_rate) / (post_rate / 60))


def lag_breakdown(lags_by_due: list[tuple[float, float]], spread: float, *, window: tuple[float, float],
                  buckets: int = 6) -> str:
    """Revocation lag by when the grant fell due (seconds after the first expiry): in ``buckets`` equal
    slices of the spread, and apart for the grants that fell due while the worker was being restarted
    (``window``), so that a tail is told from the restart."""
    lines = ["revocation lag by when the grant fell due (count, p50, p99, max):"]
    width = spread / buckets if spread > 0 else 1.0
    slices: dict[int, list[float]] = {}
    in_restart: list[float] = []
    for due, lag in lags_by_due:
        if window[0] <= due <= window[1]:
            in_restart.append(lag)
        else:
            slices.setdefault(min(buckets - 1, int(due // width)), []).append(lag)
    for k in sorted(slices):
        v = slices[k]
        lines.append(f"  due {k * width:5.1f}–{(k + 1) * width:5.1f} s: {len(v):6,}  {pct(v, 50):7.3f}  "
                     f"{pct(v, 99):7.3f}  {max(v):7.3f}")
    if in_restart:
        lines.append(f"  due during the restart:  {len(in_restart):6,}  {pct(in_restart, 50):7.3f}  "
                     f"{pct(in_restart, 99):7.3f}  {max(in_restart):7.3f}")
    return "\n".join(lines)


async def _pending(db: Database) -> int:
    async with db.sessions() as s:
        n = (await s.execute(select(func.count()).select_from(OutboxMessage)
                             .where(OutboxMessage.status == "pending"))).scalar()
    return int(n or 0)


async def run(n: int, spread: float, speedup: float, own_process: bool = False) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{tmp}/bench.db")
        await db.migrate()
        idp = RecordingIdp()
        connector = ResilientConnector(idp, max_attempts=2, max_concurrency=16)
        clock = SystemClock()
        rt = Runtime(db=db, clock=clock, loaded=parse_policy(policy("g"), env={}), connectors={"idp": connector},
                     directory=Directory({"idp": connector}, clock))
        slack: InProcessSlack | SlackProcess = (SlackProcess if own_process else InProcessSlack)(n, speedup)
        await slack.start()
        try:
            def worker(name: str) -> Worker:
                notifier = SlackNotifier(AsyncWebClient(token=TOKEN, base_url=slack.url), db, audit_channel=AUDIT,
                                         clock=clock)
                notifier.lookups_per_minute *= speedup  # Slack's tier, as fast as the fake's
                return Worker(rt, OutboxDispatcher(db, notifier, clock, lane_interval=1.0 / speedup), worker_id=name)

            start = datetime.now(UTC) + timedelta(seconds=3)
            expiries = await seed(db, n, start, spread)
            idp.members["g"] = {f"user{i}@example.com" for i in range(n)}
            t0 = time.time()
            first = worker("first")
            first.start(interval=0.25)
            while (await slack.progress())["posts"] < n // 2:
                await asyncio.sleep(0.2)
            stopping = time.time()
            await first.stop()
            known_at_restart = (await slack.progress())["lookups"]
            second = worker("second")
            second.start(interval=0.25)
            restarted = time.time()
            while time.time() - t0 < 3600:
                async with db.sessions() as s:
                    expired = (await s.execute(select(func.count()).select_from(Event)
                                               .where(Event.kind == "expired"))).scalar()
                if expired == n and not await _pending(db):
                    break
                await asyncio.sleep(0.2)
            done = time.time()
            await second.stop()
            got = await slack.report()
        finally:
            await slack.stop()
        dms, audited = Counter(got["dms"]), Counter(got["audited"])
        lookups, posts = int(got["lookups"]), int(got["posts"])
        lags_by_due = [(expiries[g].timestamp() - start.timestamp(), idp.revoked_at[g] - expiries[g].timestamp())
                       for g in idp.revoked_at]
        lags = [lag for _, lag in lags_by_due]
        took = done - start.timestamp()
        least = minimum_seconds(n, posts, spread, speedup)
        await connector.aclose()
        await db.dispose()

    where = "in a process of its own" if own_process else "in the bench's process"
    print(f"{machine()}; load average {os.getloadavg()[0]:.1f} at the end; the fake Slack {where}")
    print(f"{n:,} grants of {n:,} people expiring over {spread:.0f} s; Slack's limits ×{speedup:g}")
    print(f"revocation lag: p50 {pct(lags, 50):.3f} s, p99 {pct(lags, 99):.3f} s, max {max(lags):.3f} s")
    print(f"restart: the first worker stopped {stopping - start.timestamp():.1f} s after the first expiry, the "
          f"second started {restarted - stopping:.1f} s later; the last grant fell due at {spread:.1f} s")
    print(lag_breakdown(lags_by_due, spread, window=(stopping - start.timestamp(), restarted - start.timestamp())))
    print(f"requester notices: {sum(dms.values()):,} delivered, {sum(1 for v in dms.values() if v > 1)} twice; "
          f"audit: {len(audited):,} requests, {sum(1 for v in audited.values() if v > 1)} twice; "
          f"{posts:,} posts, 429s by method {got['rejected']}")
    print(f"Slack lookups: {lookups:,} for {n:,} people; {known_at_restart:,} known at the restart, "
          f"{lookups - known_at_restart:,} after it (≤ {n - known_at_restart:,} not yet known)")
    print(f"delivery: {took:.1f} s from the first expiry to the last message; the limits allow {least:.1f} s "
          f"at least ({took / least:.2f}×)")
    ok = (len(idp.revoked_at) == n and sum(dms.values()) == n and all(v == 1 for v in dms.values())
          and len(audited) == n and all(v == 1 for v in audited.values()) and lookups <= n)
    if not ok:
        print("FAILED: a notice or an audit line missing or repeated, or a person looked up twice")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=60.0)
    parser.add_argument("--speedup", type=float, default=20.0)
    parser.add_argument("--slack-process", action="store_true",
                        help="run the fake Slack in a process of its own (bench/slack_process.py)")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.grants, args.spread, args.speedup, args.slack_process)))


if __name__ == "__main__":
    main()
