"""10,000 grants expiring within the same minute: revoke lag, and throughput under an IdP rate limit.

    python -m bench.mass_expiry [--grants 10000] [--spread 60] [--rate R] [--idp memory|okta [--window W]]
                                [--database-url URL]

Lag = time the IdP received the revoke − the grant's expires_at. With --rate the IdP answers 429
(retry-after = rest of its fixed 1-second window) above R calls/s; the achieved rate should be ≥ 0.95 R.
``--idp memory`` (the default) is an in-process IdP object (bench/common.py ``RecordingIdp``, raising
``RateLimited`` itself); ``--idp okta`` is the real Okta connector over TLS against the fake Okta org,
which enforces R × W calls per W-second window with Okta's headers (bench/okta_idp.py).

Achieved rate (the target's figure) = the calls the IdP admitted in its complete 1-second windows
(every window but the last) / the time from the first window's opening to the last one's. A window
admits at most R calls and lasts at least 1 s (it opens at the first call after the previous one
closed, so a client that leaves the IdP idle opens it late), so this can never exceed R, whatever the
timing of calls within windows. Also printed: (revokes − 1) / (last revoke − first revoke) as received
by the IdP; that one can exceed R by up to 1/(W−1) over W windows when each window is filled early and
the client then waits for the next. Checked, with a non-zero exit if violated: every grant revoked at
the IdP exactly once, none left a member, every grant ended, and exactly one ``expired`` audit event
per request.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from bench import okta_idp
from bench.common import RecordingIdp, machine, pct
from bot.policy_file import parse_policy
from bot.services.background.worker import Worker
from bot.services.clock import SystemClock
from bot.services.directory import Directory
from bot.services.outbox.dispatcher import OutboxDispatcher, RecordingNotifier
from bot.services.runtime import Runtime
from connectors.resilience import ResilientConnector
from storage.db import Database
from storage.tables import AccessRequest, Event, Grant, OutboxMessage

POLICY = """
audit_channel: C0AUDIT
connectors: {idp: {type: memory}}
eligibilities:
  - {name: bulk, connector: idp, target: {group: g}, requestors: {users: [a@example.com]}, max_duration: 1h}
"""


def policy(target: str) -> str:
    return POLICY.replace("{group: g}", f"{{group: {target}}}")


async def seed(db: Database, n: int, start: datetime, spread_s: float, *, target: str = "g",
               idp_ids: dict[str, str] | None = None) -> dict[str, datetime]:
    expiries: dict[str, datetime] = {}
    reqs, grants = [], []
    for i in range(n):
        exp = start + timedelta(seconds=spread_s * i / n)
        rid, gid = f"R-M{i:07d}", f"G-M{i:07d}"
        expiries[gid] = exp
        reqs.append(dict(id=rid, eligibility="bulk", kind="access", requester=f"user{i}@example.com",
                         duration_s=3600, justification="bench", status="active", layer=1, layers=0,
                         created_at=start, updated_at=start, version=0))
        email = f"user{i}@example.com"
        grants.append(dict(id=gid, request_id=rid, connector="idp", target_kind="group", target_id=target,
                           user_email=email, user_idp_id=(idp_ids or {}).get(email), status="active",
                           owns_membership=True,
                           granted_at=start - timedelta(hours=1), expires_at=exp, attempts=0, alerted=False))
    async with db.transaction() as s:
        for k in range(0, n, 2000):
            await s.execute(insert(AccessRequest), reqs[k:k + 2000])
            await s.execute(insert(Grant), grants[k:k + 2000])
    return expiries


async def run(n: int, rate: float | None, url: str | None, spread: float,
              audit_interval: float = 0.0, idp_kind: str = "memory", window: int = 1,
              lead: float = 3.0) -> dict[str, float]:
    """Seed ``n`` grants expiring over ``spread`` seconds from ``lead`` seconds on, run the worker until
    each is revoked and audited, and return what was measured and checked."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(url or f"sqlite+aiosqlite:///{tmp}/bench.db")
        await db.migrate()
        idp: Any
        if idp_kind == "okta":
            idp = okta_idp.OktaProcess(Path(tmp) / "okta-report.json")
            info = await idp.start(okta_idp.bulk_spec(n), rate, window)
            inner, idp_ids, target = idp.connector(info), info["ids"], info["groups"]["jit-bulk"]
        else:
            idp, idp_ids, target = RecordingIdp(rate=rate), {}, "g"
            inner = idp
        loaded = parse_policy(policy(target), env={})
        connector = ResilientConnector(inner, max_attempts=2, max_concurrency=16)
        clock = SystemClock()
        rt = Runtime(db=db, clock=clock, loaded=loaded, connectors={"idp": connector},
                     directory=Directory({"idp": connector}, clock))
        notifier = RecordingNotifier()
        worker = Worker(rt, OutboxDispatcher(db, notifier, clock, lane_interval=audit_interval), worker_id="bench")
        start = datetime.now(UTC) + timedelta(seconds=lead)
        expiries = await seed(db, n, start, spread, target=target, idp_ids=idp_ids)
        if idp_kind != "okta":
            idp.members["g"] = {f"user{i}@example.com" for i in range(n)}  # what the grants hold at the IdP
        t0, cpu0 = time.time(), time.process_time()
        worker.start(interval=0.25)  # the production loops: schedule ticks and outbox dispatch apart
        while time.time() - t0 < 600:  # until every revocation is done and recorded in the audit log
            async with db.sessions() as s:
                stmt = select(func.count()).select_from(Event).where(Event.kind == "expired")
                done = (await s.execute(stmt)).scalar()
            if done == n:
                break
            await asyncio.sleep(0.2)
        audit_done = None
        if audit_interval:  # …and, with the audit channel paced as in production, until its lines are out
            while time.time() - t0 < 900:
                async with db.sessions() as s:
                    left = (await s.execute(select(func.count()).select_from(OutboxMessage)
                                            .where(OutboxMessage.status == "pending"))).scalar()
                if not left:
                    audit_done = time.time()
                    break
                await asyncio.sleep(0.2)
        await worker.stop()
        if idp_kind == "okta":
            await idp.finish()
        first = min(idp.revoked_at.values())
        last = max(idp.revoked_at.values())
        lags = [idp.revoked_at[g] - expiries[g].timestamp() for g in idp.revoked_at]
        async with db.sessions() as s:
            per_request = (await s.execute(select(Event.request_id, func.count()).where(Event.kind == "expired")
                                           .group_by(Event.request_id))).all()
            not_ended = (await s.execute(select(func.count()).select_from(Grant)
                                         .where(Grant.status != "ended"))).scalar()
        await db.dispose()
        await connector.aclose()
        still = idp.still_members() if idp_kind == "okta" else len(idp.members["g"])
        return {"revoked": len(idp.revoked_at), "audited": float(sum(c for _, c in per_request)),
                "audited_once": float(sum(1 for _, c in per_request if c == 1)), "revoked_twice": idp.revoked_twice,
                "still_member": still, "not_ended": float(not_ended or 0),
                "lag_p50": pct(lags, 50), "lag_p99": pct(lags, 99), "lag_max": max(lags),
                "rate": (len(idp.revoked_at) - 1) / max(last - first, 1e-9), "windowed": idp.windowed_rate(),
                "throttled": idp.throttled, "calls": idp.calls,
                "audit_lines": float(len(notifier.of_kind("audit"))),
                "audit_posts": float(notifier.posts.get("audit", 0)),
                "audit_after": (audit_done - last) if audit_done else -1.0,
                "cpu_s": time.process_time() - cpu0, "wall_s": time.time() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grants", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=None, help="IdP limit in requests/s (429 above it)")
    parser.add_argument("--spread", type=float, default=60.0, help="seconds over which the grants expire")
    parser.add_argument("--idp", choices=["memory", "okta"], default="memory",
                        help="in-process IdP, or the Okta connector against the fake Okta org over TLS")
    parser.add_argument("--window", type=int, default=1,
                        help="--idp okta --rate R: the fake's budget is R × W calls per W-second window")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--audit-interval", type=float, default=0.0,
                        help="pace the audit channel as production does (JITBOT_AUDIT_CHANNEL_INTERVAL, e.g. 1)")
    args = parser.parse_args(argv)
    r = asyncio.run(run(args.grants, args.rate, args.database_url, args.spread, args.audit_interval,
                        args.idp, args.window))
    print(f"machine: {machine()}")
    window = f" in {args.window}-s windows" if args.idp == "okta" and args.rate else ""
    print(f"grants={args.grants} spread={args.spread}s idp={args.idp} idp_rate={args.rate or 'unlimited'}{window}")
    print(f"{'revoked':>8} {'audited':>8} {'lag p50':>8} {'lag p99':>8} {'lag max':>8} {'rate/s':>8} {'429s':>6}")
    print(f"{r['revoked']:>8.0f} {r['audited']:>8.0f} {r['lag_p50']:>8.3f} {r['lag_p99']:>8.3f} {r['lag_max']:>8.3f} "
          f"{r['rate']:>8.1f} {r['throttled']:>6.0f}")
    print(f"this process (worker, database, IdP client) used {r['cpu_s']:.1f} s of CPU in {r['wall_s']:.1f} s"
          + (" (the fake Okta runs in a process of its own)" if args.idp == "okta" else ""))
    if args.rate:
        print(f"achieved = {r['windowed']:.1f}/s over the IdP's complete windows: {r['windowed'] / args.rate:.3f} "
              f"of the limit (target ≥ 0.95); first to last revoke: {r['rate'] / args.rate:.3f}; "
              f"IdP calls {r['calls']:.0f}, of which 429: {r['throttled']:.0f}")
    if args.audit_interval:
        print(f"audit channel, one post per {args.audit_interval:g} s at most: {r['audit_lines']:.0f} lines in "
              f"{r['audit_posts']:.0f} posts; the last was out "
              f"{r['audit_after']:.1f} s after the last revoke")
    problems = [f"{what}: {r[key]:.0f} (want {want})" for what, key, want in (
        ("revoked at the IdP", "revoked", args.grants), ("revoked twice", "revoked_twice", 0),
        ("still members", "still_member", 0), ("grants not ended", "not_ended", 0),
        ("expired events", "audited", args.grants), ("requests audited exactly once", "audited_once", args.grants),
    ) if r[key] != want]
    print("checks: " + ("all passed (none lost, each revoked once, each audited once)" if not problems
                        else "FAILED — " + "; ".join(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
