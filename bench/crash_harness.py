"""Kill a running jitbot with SIGKILL at random points of the loop, restart it, check the invariants.

    python -m bench.crash_harness --trials 50 [--database postgres]

With --database postgres each trial gets a fresh database on the server JITBOT_TEST_PG names, else on
127.0.0.1:5432 (dropped afterwards).

Invariants after each kill + restart + quiet period:
* no IdP membership (memory connector) without a grant that is active (i.e. a completed approval chain),
* no membership past expires_at + 5 s,
* `audit verify` passes (every event in the chain),
* every outbox message delivered at least once (a duplicate only when the kill fell between send and record).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from sqlalchemy import select

from bench.common import pg_dsn, pg_url
from bot.services.auditing.audit import verify_chain
from storage.db import Database
from storage.tables import Grant, Membership, OutboxMessage

POLICY = """
audit_channel: C0AUDIT
connectors:
  demo:
    type: memory
    users: [{users}]
    groups:
      engineers: [{emails}]
      jit-target: []
eligibilities:
  - name: short
    connector: demo
    target: {{group: jit-target}}
    requestors: {{groups: [engineers]}}
    max_duration: 10s
    warn_before: 1s
"""


def policy_text() -> str:
    emails = [f"u{i}@example.com" for i in range(20)]
    return POLICY.format(users=", ".join(f"{{email: {e}}}" for e in emails), emails=", ".join(emails))


@dataclass
class TrialResult:
    kills: int
    memberships_without_grant: list[str] = field(default_factory=list)
    overdue: list[str] = field(default_factory=list)
    audit_ok: bool = True
    undelivered: int = 0
    duplicates: int = 0
    grants: int = 0
    ended: int = 0

    @property
    def ok(self) -> bool:
        return not self.memberships_without_grant and not self.overdue and self.audit_ok and not self.undelivered


def _spawn(url: str, policy: str, seconds: float, log: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.crash_child", url, policy, str(seconds), log],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ})


async def check(url: str, log: Path, schema: str | None = None) -> TrialResult:
    db = Database(url, schema=schema)
    try:
        now = datetime.now(UTC)
        async with db.sessions() as s:
            stmt = select(Membership).where(Membership.target == "group:jit-target")
            members = (await s.execute(stmt)).scalars().all()
            grants = (await s.execute(select(Grant))).scalars().all()
            outbox = (await s.execute(select(OutboxMessage))).scalars().all()
        active = {g.user_email for g in grants if g.status in ("active", "granting", "revoking")
                  and (g.expires_at is None or g.expires_at + timedelta(seconds=5) > now)}
        result = TrialResult(kills=0, grants=len(grants), ended=sum(1 for g in grants if g.status == "ended"))
        for m in members:
            if m.user_id not in active:
                result.memberships_without_grant.append(m.user_id)
        result.overdue = [g.id for g in grants if g.status in ("active", "revoking") and g.expires_at is not None
                          and g.expires_at + timedelta(seconds=5) < now]
        result.audit_ok = (await verify_chain(db)).ok
        result.undelivered = sum(1 for o in outbox if o.status != "sent")
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []
        counts = Counter((x["kind"], x["id"], x["event"]) for x in lines)
        result.duplicates = sum(c - 1 for c in counts.values() if c > 1)
        return result
    finally:
        await db.dispose()


def run_trial(url: str, workdir: Path, *, kills: int, rng: random.Random) -> TrialResult:
    policy = workdir / "policy.yml"
    policy.write_text(policy_text())
    log = workdir / "sent.jsonl"
    for _ in range(kills):
        child = _spawn(url, str(policy), 30, str(log))
        assert child.stdout is not None
        if child.stdout.readline().strip() != b"ready":  # started and recovered; now kill it mid-loop
            raise RuntimeError("crash child did not start; run python -m bench.crash_child by hand to see why")
        time.sleep(rng.uniform(0.3, 2.0))
        child.send_signal(signal.SIGKILL)
        child.wait()
    # restart and let it finish everything that is due (grants last at most 3 s)
    final = _spawn(url, str(policy), 0, str(log))  # restart: only the worker, no new requests
    final.wait(timeout=120)
    time.sleep(4)  # every grant (≤ 3 s) is now past its expiry
    final = _spawn(url, str(policy), 0, str(log))
    final.wait(timeout=120)
    result = asyncio.run(check(url, log))
    result.kills = kills
    return result


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(pg_dsn("postgres"))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    failures = 0
    print(f"{'trial':>5} {'kills':>5} {'grants':>6} {'ended':>5} {'leaked':>6} {'overdue':>7} {'audit':>5} "
          f"{'undeliv':>7} {'dupes':>5}")
    for trial in range(args.trials):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{tmp}/crash.db"
            dbname = None
            if args.database == "postgres":
                dbname = f"crash_{uuid.uuid4().hex[:8]}"
                asyncio.run(_admin(f"CREATE DATABASE {dbname}"))
                url = pg_url(dbname)
            try:
                r = run_trial(url, Path(tmp), kills=args.kills, rng=rng)
            finally:
                if dbname:
                    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))
            failures += not r.ok
            print(f"{trial:>5} {r.kills:>5} {r.grants:>6} {r.ended:>5} {len(r.memberships_without_grant):>6} "
                  f"{len(r.overdue):>7} "
                  f"{'ok' if r.audit_ok else 'BAD':>5} {r.undelivered:>7} {r.duplicates:>5}")
    print(f"{args.trials - failures}/{args.trials} trials held every invariant")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
