"""Throughput: complete flows per second — /jit → modal → submit → approve → grant, every message delivered.

    python -m bench.throughput [--flows 300] [--concurrency 20] [--replicas 1|1,2|1,2,1,2] [--database sqlite|postgres]
                               [--replica-cpu 0.5] [--floor | --with-floor] [--idp memory|okta] [--warmup N]

The bot runs as real `jitbot serve` processes (HTTP mode, worker inside) against the fake Slack in this
process; with --replicas N the flows are spread round-robin over N processes sharing one database
(the approval click goes to another replica than the request). A flow's steps end when the
requester's "You now have …" DM has arrived; the run ends when the bot's outbox has nothing pending
(every message of every flow delivered, the audit channel's included), and flows/s counts until then.
The clock starts after a warm-up (--warmup, default two flows per user, delivered in full): a replica's
first flows open its pool's connections and prepare each statement on each of them, fill its Slack
caches (DM channels, emails) and its compiled-statement cache. Measured from a cold start, that cost —
~0.8 s of the bot's CPU and ~0.7 s of PostgreSQL's per replica — counted against a 500-flow run twice
with two replicas, once with one: a start-up cost, not a per-flow one (--warmup 0 shows it).
"bot CPU ms/flow" is the replicas' user + system CPU time over the measured window divided by the
flows: if it stays the same with more replicas, they add no coordination cost, and throughput is
bounded by the cores the machine has to give them.

--replica-cpu C holds each replica to C cores with a Linux CPU quota (a control group, as a container's
CPU limit does; needs root). On a 2-core machine that also runs PostgreSQL, the fake Slack and the load
generator, unlimited replicas compete for the same two cores, so "two replicas vs one" measures the
machine; with a limit, each replica is a fixed-size unit as in a real deployment, and the ratio shows
whether the replicas themselves scale (claims, locks, the outbox) while the machine has cores to spare.

--idp okta grants through the real Okta connector (okta SDK over TLS) against the fake Okta org in a
process of its own (bench/okta_idp.py); the default memory connector keeps memberships in the bot's own
database (an IdP inside the bot: its reads and writes are the bot's CPU and transactions).

--floor runs bench/slack_floor.py instead of jitbot: the same Bolt stack making the same Slack calls for
each flow with no database, no checks and no audit — what the Slack side alone costs per flow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import okta_idp
from bench.common import CpuLimit, cpu_times, machine, machine_use, pct, pg_dsn, pg_url
from bench.throughput_flows import FlowDriver
from bench.throughput_probes import cpu_seconds, pending_messages, pg_stats, postgres_cpu_seconds, replica_counts
from bot import event_loop
from bot.fakes import FakeSlack, SlackSender

TOKEN, SECRET = "xoxb-throughput", "throughput-secret"
N_USERS = 60


def org() -> dict[str, Any]:
    """The users and groups of the run (the memory connector's, or the fake Okta org's)."""
    users = [f"u{i}@example.com" for i in range(N_USERS)]
    leads = ["lead1@example.com", "lead2@example.com"]
    return {"users": users + leads, "groups": {"engineers": users, "leads": leads, "target": []}, "watch": "target"}


def policy_text(okta: dict[str, Any] | None = None) -> str:
    """The run's policy: the memory connector, or (``okta``: its settings) the Okta connector."""
    spec = org()
    if okta is None:
        connector = (f"    type: memory\n    users: [{', '.join(f'{{email: {u}}}' for u in spec['users'])}]\n"
                     "    groups:\n" + "".join(f"      {g}: [{', '.join(m)}]\n" for g, m in spec["groups"].items()))
    else:  # JSON values are YAML
        connector = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in okta.items())
    return f"""
audit_channel: C0AUDIT
connectors:
  demo:
{connector.rstrip()}
eligibilities:
  - name: ops
    connector: demo
    target: {{group: target}}
    requestors: {{groups: [engineers]}}
    max_duration: 8h
    default_duration: 1h
    approvals:
      - approvers: {{groups: [leads]}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(port: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(900):
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"replica on :{port} did not become healthy")


async def run(flows: int, concurrency: int, replicas: int, database: str,
              replica_cpu: float | None = None, floor: bool = False, idp: str = "memory",
              warmup: int = 0) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp())
    okta = okta_idp.OktaProcess(tmp / "okta-report.json") if idp == "okta" else None
    okta_info = await okta.start(org()) if okta else None
    (tmp / "policy.yml").write_text(policy_text(okta_idp.settings(okta_info) if okta_info else None))
    dbname = None
    if database == "postgres":
        dbname = "bench_" + uuid.uuid4().hex[:8]
        conn = await asyncpg.connect(pg_dsn("postgres"))
        await conn.execute(f"CREATE DATABASE {dbname}")
        await conn.close()
        url = pg_url(dbname)
    else:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    slack = FakeSlack(token=TOKEN)
    for i in range(N_USERS):
        slack.add_user(f"U{i:04d}", f"u{i}", email=f"u{i}@example.com")
    slack.add_user("UL1", "lead1", email="lead1@example.com")
    slack.add_user("UL2", "lead2", email="lead2@example.com")
    slack.add_channel("C0AUDIT", "jit-audit")
    procs: list[subprocess.Popen[bytes]] = []
    limits: list[CpuLimit] = []
    async with slack:
        ports = [free_port() for _ in range(replicas)]
        for k, port in enumerate(ports):
            env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.url,
                   "DATABASE_URL": url, "JITBOT_POLICY": str(tmp / "policy.yml"), "JITBOT_INSTANCE_ID": f"bench-{k}"}
            # BENCH_PY_ARGS="-m cProfile -o /tmp/serve.prof" profiles a replica (written when it stops).
            py_args = os.environ.get("BENCH_PY_ARGS", "").split()
            log = open(tmp / f"replica{k}.log", "w")  # noqa: SIM115 - closed with the temporary directory
            limit = CpuLimit(f"replica{k}", replica_cpu) if replica_cpu else None
            if limit:
                limits.append(limit)
            # --floor: bench/slack_floor.py, the Slack side of a flow without jitbot (no database)
            module = ["-m", "bench.slack_floor"] if floor else ["-m", "bot.cli", "serve"]
            procs.append(subprocess.Popen([sys.executable, *py_args, *module, "--port", str(port)],
                                          env=env, stdout=subprocess.DEVNULL, stderr=log,
                                          preexec_fn=limit.enter if limit else None))
            await wait_healthy(port)  # one at a time: the first applies migrations
        senders = [SlackSender(slack, f"http://127.0.0.1:{p}/slack/events", SECRET) for p in ports]
        driver = FlowDriver(slack, senders, users=N_USERS, concurrency=concurrency, floor=floor)
        if warmup:  # each replica's first flows, before the clock: see --warmup
            await driver.run_flows(range(flows, flows + warmup))
            while not floor and await pending_messages(url):
                await asyncio.sleep(0.01)
            driver.forget_timings()
        calls_before = len(slack.calls())
        cpu_before = sum(cpu_seconds(p.pid) for p in procs)
        pg_before = await pg_stats(url)
        pg_cpu_before = postgres_cpu_seconds()
        throttled_before = sum(g.throttled_s() for g in limits)
        harness_before, machine_before = cpu_seconds(os.getpid()), cpu_times()
        start = time.perf_counter()
        await driver.run_flows(range(flows))
        last_flow = time.perf_counter() - start
        # A flow is complete when all its messages are out, the audit channel's lines included.
        while not floor and await pending_messages(url):
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        pg_after = await pg_stats(url)
        pg_cpu = postgres_cpu_seconds() - pg_cpu_before
        replica_cpu_s = sum(cpu_seconds(p.pid) for p in procs) - cpu_before
        harness_cpu = cpu_seconds(os.getpid()) - harness_before
        throttled = sum(g.throttled_s() for g in limits) - throttled_before
        use = machine_use(machine_before, cpu_times())
        per_method: dict[str, int] = {}
        for c in slack.calls()[calls_before:]:
            per_method[c.method] = per_method.get(c.method, 0) + 1
        for s in senders:
            await s.aclose()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        # the replicas' worker passes (all, full) and outbox counts over their lives, from their last log lines
        passes, dispatch = replica_counts([tmp / f"replica{k}.log" for k in range(replicas)])
        for g in limits:
            g.close()
    if okta is not None:
        await okta.finish()
        print(f"Okta API calls per flow: {okta.calls / flows:.1f} (the fake Okta org, a process of its own): "
              + ", ".join(f"{k} {n / flows:.2f}" for k, n in sorted(okta.by_kind.items(), key=lambda kv: -kv[1])))
    if dbname and not os.environ.get("BENCH_KEEP_DB"):  # BENCH_KEEP_DB=1 keeps it for a look afterwards
        conn = await asyncpg.connect(pg_dsn("postgres"))
        await conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        await conn.close()
    durations, steps = driver.durations, driver.steps
    out = {"flows_per_s": flows / elapsed, "drain_s": elapsed - last_flow, "p50": pct(durations, 50),
           "p99": pct(durations, 99), "elapsed": elapsed}
    out["slack_calls_per_flow"] = sum(per_method.values()) / flows
    out["cpu_ms_per_flow"] = replica_cpu_s / flows * 1000
    if not floor:  # counted over the replicas' lives (start-up and warm-up included), from their last log line
        print(f"worker passes: {passes[0]} ({passes[0] / (flows + warmup):.2f} per flow; {passes[1]} of them full)")
    if pg_before:
        print(f"PostgreSQL per flow: CPU {pg_cpu / flows * 1000:.1f} ms (its processes), "
              + ", ".join(f"{k} {(pg_after[k] - v) / flows:.1f}" for k, v in pg_before.items()
                          if not k.startswith("idx:")))
        idx = sorted(((pg_after[k] - v) / flows, k[4:]) for k, v in pg_before.items() if k.startswith("idx:"))
        print("index entries read per flow: " + ", ".join(f"{t} {n:.0f}" for n, t in idx[::-1][:4]))
    if dispatch:
        print("outbox dispatchers per flow: "
              + ", ".join(f"{k} {n / (flows + warmup):.2f}" for k, n in sorted(dispatch.items())))
    print("Slack calls per flow: " + ", ".join(f"{m} {n / flows:.1f}" for m, n in sorted(per_method.items())))
    print(f"{use}; load generator + fake Slack CPU {harness_cpu / flows * 1000:.1f} ms/flow; "
          f"last messages out {out['drain_s']:.2f} s after the last flow's grant")
    if limits and replica_cpu:
        quota_use = replica_cpu_s / (replica_cpu * elapsed * len(limits))
        print(f"replicas held to {replica_cpu} cores each: used {quota_use:.0%} of their quota, "
              f"held back by it for {throttled:.1f} s in all")
    for name, values in steps.items():
        out[f"{name}_p50"], out[f"{name}_p99"] = pct(values, 50), pct(values, 99)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--replicas", default="1",
                        help="replica counts to run one after the other, e.g. 1,2 (the ratio is printed)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--replica-cpu", type=float, default=None,
                        help="hold each replica to this many cores (a CPU quota, as a container limit; needs root)")
    parser.add_argument("--idp", choices=["memory", "okta"], default="memory",
                        help="the memory connector (memberships in the bot's database), or the Okta connector "
                             "against the fake Okta org over TLS in a process of its own")
    parser.add_argument("--users", type=int, default=60,
                        help="requesters (a user's flows run one after the other: at most this many at once)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="flows run before the clock starts (default: two per user), each replica's first: "
                             "its pool's connections and their prepared statements, its Slack caches. "
                             "0 measures from a cold start")
    parser.add_argument("--floor", action="store_true",
                        help="run bench/slack_floor.py instead of jitbot: the Slack side of a flow, no database")
    parser.add_argument("--with-floor", action="store_true",
                        help="also run the floor in the same invocation and print jitbot's rate as a ratio to it")
    args = parser.parse_args(argv)
    globals()["N_USERS"] = args.users  # org() and run() read it (run() hands it to the flows)
    warmup = 2 * args.users if args.warmup is None else args.warmup
    counts = [int(n) for n in str(args.replicas).split(",")]
    print(f"machine: {machine()}")
    print(("FLOOR (bench/slack_floor.py, no jitbot) " if args.floor else "")
          + f"database={args.database} idp={args.idp} flows={args.flows} concurrency={args.concurrency} "
          f"users={args.users} warmup={warmup}"
          + (f" replica CPU limit={args.replica_cpu} cores" if args.replica_cpu else ""))
    print(f"{'replicas':>8} {'flows/s':>8} {'flow p50 s':>10} {'flow p99 s':>10} {'bot CPU ms/flow':>15}"
          "  steps (p50 / p99 s)")
    results: list[dict[str, float]] = []
    for n in counts:
        # the load generator and the fake Slack on uvloop, as the bot (bot/event_loop.py): less of the
        # machine's CPU goes to the harness
        r = event_loop.run(run(args.flows, args.concurrency, n, args.database, args.replica_cpu, args.floor, args.idp,
                                   warmup))
        results.append(r)
        steps = ", ".join(f"{s} {r[s + '_p50']:.3f} / {r[s + '_p99']:.3f}" for s in ("modal", "ask", "grant"))
        print(f"{n:>8} {r['flows_per_s']:>8.1f} {r['p50']:>10.3f} {r['p99']:>10.3f} {r['cpu_ms_per_flow']:>15.1f}"
              f"  {steps}")
    if len(results) > 1:
        print(ratio_line(counts, [r["flows_per_s"] for r in results]))
    if args.with_floor and not args.floor:
        # the host's speed drifts from run to run and host to host: the figure to compare is jitbot's
        # throughput as a share of what Bolt and the fake Slack alone do on the same machine, same minute
        floor = event_loop.run(run(args.flows, args.concurrency, 1, args.database, args.replica_cpu, True, args.idp,
                                   warmup))
        mine = statistics.median(r["flows_per_s"] for r in results)
        print(f"floor (bench/slack_floor.py, no database) {floor['flows_per_s']:.1f} flows/s at "
              f"{floor['cpu_ms_per_flow']:.1f} ms/flow; jitbot {mine:.1f} flows/s = "
              f"{mine / floor['flows_per_s']:.2f}x the floor")
    return 0


def ratio_line(counts: list[int], rates: list[float]) -> str:
    """The most replicas against the fewest. Run alternately (``--replicas 1,2,1,2,…``), each count's
    median is compared and every adjacent pair's ratio shown: this machine's speed drifts by ±10 %
    within minutes, so one pair of runs can say 1.5× or 1.9× for the same code."""
    lo, hi = min(counts), max(counts)
    if counts.count(lo) == 1 and counts.count(hi) == 1:
        return f"ratio {hi} vs {lo} replicas: {rates[counts.index(hi)] / rates[counts.index(lo)]:.2f}x"
    by = {n: statistics.median(r for c, r in zip(counts, rates, strict=True) if c == n) for n in (lo, hi)}
    pairs = [rates[i + 1] / rates[i] for i in range(len(counts) - 1) if (counts[i], counts[i + 1]) == (lo, hi)]
    return (f"ratio {hi} vs {lo} replicas: {by[hi] / by[lo]:.2f}x (medians {by[lo]:.1f} and {by[hi]:.1f} flows/s; "
            f"each {lo}-then-{hi} pair: {', '.join(f'{p:.2f}x' for p in pairs)})")


if __name__ == "__main__":
    raise SystemExit(main())
