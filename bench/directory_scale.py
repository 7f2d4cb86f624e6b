"""Directory scale: what the `/jit` form costs against a 100,000-member requestor group at a slow IdP.

    python -m bench.directory_scale [--idp okta|entra] [--members 100000] [--groups 1000]
                                    [--latency 0.1] [--people 50]

The strict fake Okta or fake Entra (tests/fakes/idp/) runs in a process of its own — its memory and CPU
are not the bot's — holding ``--members`` people in the requestor group ``engineers`` and ``--groups``
other groups, each API call answered after ``--latency`` seconds. The bot's side is the real connector
(the okta SDK / msal + Graph, over TLS, in ``ResilientConnector``) and the real ``Directory``; each of
``--people`` members (and as many outsiders) asks what the form asks before ``views.open``: which of the
policy's eligibilities may I request? (``RequestService.requestable``: five eligibilities over four
groups). Printed: cold (a person's first form) and warm (their next) p50/p99 and IdP calls per person,
and the bot's RSS against the same run over a 10-member directory (``--members 10``, run first in a
process of its own).

Targets (docs/benchmarks.md): cold p99 ≤ 1.0 s with ≤ 4 IdP calls, warm p99 ≤ 50 ms, RSS ≤ +50 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, pct, rss_mb

ELIGIBILITY_GROUPS = ["engineers", "team-7", "team-500", "engineers", "team-99"]


# -- the fake's process -----------------------------------------------------------------------------
async def _serve(idp: str, members: int, groups: int, latency: float, ready: Path) -> None:
    from tests.connectors.idp_fixtures import ENTRA_CLIENT, ENTRA_SECRET, ENTRA_TENANT, OKTA_TOKEN
    from tests.fakes.idp.entra import FakeEntra
    from tests.fakes.idp.okta import FakeOkta
    from tests.fakes.idp.tls import localhost_tls

    context, ca_file = localhost_tls()
    fake: Any
    if idp == "okta":
        fake = FakeOkta(api_token=OKTA_TOKEN, page_size=200)
        add = fake.add_user
    else:
        fake = FakeEntra(tenant_id=ENTRA_TENANT, client_id=ENTRA_CLIENT, client_secret=ENTRA_SECRET, page_size=100)
        add = lambda email: fake.add_user(email, email.split("@")[0])  # noqa: E731
    await fake.start(context)
    ids = [add(f"user{i}@example.com") for i in range(members)]
    for i in range(200):
        add(f"outsider{i}@example.com")
    fake.add_group("engineers", ids)
    for g in range(groups):
        fake.add_group(f"team-{g}", ids[g * 10:g * 10 + 10])
    fake.latency = latency
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if idp == "okta":
        settings = {"type": "okta", "org_url": fake.base_url, "api_token": OKTA_TOKEN, "ca_file": ca_file,
                    "timeout": 30}
    else:
        settings = {"type": "entra", "tenant_id": ENTRA_TENANT, "client_id": ENTRA_CLIENT,
                    "client_secret": ENTRA_SECRET, "authority_url": fake.authority_url,
                    "graph_url": fake.graph_url, "ca_file": ca_file, "timeout": 30}
    ready.write_text(json.dumps({"settings": settings}))
    calls = fake.api_calls
    while not stop.is_set():
        await asyncio.sleep(0.05)
        if fake.api_calls != calls:
            calls = fake.api_calls
            Path(f"{ready}.calls").write_text(str(calls))
    await fake.stop()


class FakeProcess:
    def __init__(self, idp: str, members: int, groups: int, latency: float, workdir: Path) -> None:
        self.args = ["--serve", idp, "--members", str(members), "--groups", str(groups),
                     "--latency", str(latency)]
        self.ready = workdir / f"{idp}-{members}.ready"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> dict[str, Any]:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.directory_scale", *self.args,
                                      "--ready", str(self.ready)])
        deadline = time.monotonic() + 600
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fake IdP did not start")
            time.sleep(0.1)
        settings: dict[str, Any] = json.loads(self.ready.read_text())["settings"]
        return settings

    def calls(self) -> int:
        """API calls the fake has answered (it writes the count down within 50 ms of a change)."""
        time.sleep(0.12)
        counted = Path(f"{self.ready}.calls")
        return int(counted.read_text()) if counted.exists() else 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


# -- the bot's side ---------------------------------------------------------------------------------
def _policy(settings: dict[str, Any]) -> str:
    eligibilities = "".join(
        f"  - {{name: e{i}, connector: idp, target: {{group: team-{i}}}, requestors: {{groups: [{g}]}},"
        f" max_duration: 1h}}\n" for i, g in enumerate(ELIGIBILITY_GROUPS))
    return ('audit_channel: "#jit-audit"\ndirectory: idp\nconnectors:\n  idp: ' + json.dumps(settings)
            + "\neligibilities:\n" + eligibilities)


async def measure(settings: dict[str, Any], people: int, fake: FakeProcess) -> dict[str, Any]:
    from bot.bootstrap import build_connectors
    from bot.policy_file import parse_policy
    from bot.services.clock import SystemClock
    from bot.services.directory import Directory

    loaded = parse_policy(_policy(settings), source="bench", env={})
    policy = loaded.policy
    connectors = build_connectors(loaded, None)  # type: ignore[arg-type]  # no memory connector: no store
    directory = Directory(connectors, SystemClock())
    rss_before = rss_mb()

    async def requestable(email: str) -> list[str]:
        return [e.name for e in policy.eligibilities if await directory.contains(policy, e.requestors, email)]

    # One outsider first: the connector's own start (token, group-name lookups) is not a person's cost.
    await requestable("outsider199@example.com")
    cold, warm, calls = [], [], []
    for i in range(people):
        for email in (f"user{i * 97 % 1000}@example.com", f"outsider{i}@example.com"):
            before = fake.calls()
            t = time.perf_counter()
            await requestable(email)
            cold.append(time.perf_counter() - t)
            calls.append(fake.calls() - before)
            t = time.perf_counter()
            await requestable(email)
            warm.append(time.perf_counter() - t)
    for conn in connectors.values():
        await conn.aclose()
    return {"cold": cold, "warm": warm, "calls": calls, "rss": rss_mb(), "rss_growth": rss_mb() - rss_before}


def run_bot(idp: str, members: int, groups: int, latency: float, people: int, workdir: Path) -> dict[str, Any]:
    fake = FakeProcess(idp, members, groups, latency, workdir)
    try:
        settings = fake.start()
        return asyncio.run(measure(settings, people, fake))
    finally:
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idp", choices=["okta", "entra"], default="okta")
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--serve", choices=["okta", "entra"], help=argparse.SUPPRESS)
    parser.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bot-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in list(os.environ):  # the okta SDK reads OKTA_* variables and ./okta.yaml
        if name.startswith("OKTA_"):
            del os.environ[name]
    if args.serve:
        asyncio.run(_serve(args.serve, args.members, args.groups, args.latency, args.ready))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.bot_only:
            print(json.dumps(run_bot(args.idp, args.members, args.groups, args.latency, args.people, workdir)))
            return
        runs = {}
        for members in (10, args.members):  # each bot side in a fresh process: clean RSS
            groups = args.groups if members == args.members else 1
            out = subprocess.run([sys.executable, "-m", "bench.directory_scale", "--bot-only", "--idp", args.idp,
                                  "--members", str(members), "--groups", str(groups), "--latency", str(args.latency),
                                  "--people", str(min(args.people, members))],
                                 check=True, capture_output=True, text=True, cwd=os.getcwd())
            runs[members] = json.loads(out.stdout.strip().splitlines()[-1])
    big, small = runs[args.members], runs[10]
    print(f"{machine()}; {args.idp}, requestor group of {args.members:,}, {args.groups:,} other groups, "
          f"{args.latency * 1000:.0f} ms a call, {len(big['cold'])} people (half members, half outsiders)")
    print(f"cold form: p50 {pct(big['cold'], 50):.3f} s, p99 {pct(big['cold'], 99):.3f} s, "
          f"IdP calls per person max {max(big['calls'])} (mean {sum(big['calls']) / len(big['calls']):.1f})")
    print(f"warm form: p50 {pct(big['warm'], 50) * 1000:.2f} ms, p99 {pct(big['warm'], 99) * 1000:.2f} ms")
    print(f"bot RSS: {big['rss']:.1f} MB against {small['rss']:.1f} MB over a 10-member directory "
          f"({big['rss'] - small['rss']:+.1f} MB)")


if __name__ == "__main__":
    main()
