"""``jitbot playground``: the whole loop in a browser, without a Slack workspace.

Starts a fake Slack workspace (Web API on 127.0.0.1), the real bot in HTTP mode (signed requests
from the fake), the embedded SQLite database, the memory connector with a demo policy, the worker
with a clock that can be jumped forward, and the web page at http://127.0.0.1:PORT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from sqlalchemy.engine import make_url

from bot.playground.stepup import OTP, PASSWORD
from bot.playground.web import web_page
from bot.playground.world import Playground
from bot.policy_file import LoadedPolicy, PolicyError, load_policy

DEMO_POLICY = Path(__file__).parent / "demo_policy.yml"
DEFAULT_DATABASE = "sqlite+aiosqlite:///jitbot-playground.db"
REAL_CONNECTORS_HELP = "start even when the policy has non-memory connectors (real grants at real identity providers)"


class PlaygroundRefused(Exception):
    """The playground will not start as asked (a policy with real identity providers, not allowed)."""


def real_connectors(loaded: LoadedPolicy) -> list[str]:
    """The policy's connectors that are not ``type: memory`` ("name (type)")."""
    return [f"{name} ({conf.get('type')})" for name, conf in loaded.policy.connectors.items()
            if conf.get("type") != "memory"]


@dataclass
class Running:
    playground: Playground
    url: str


def _fresh_sqlite(database_url: str) -> None:
    """The playground starts empty: remove the default SQLite file left by an earlier run."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(url.database + suffix).unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def start_playground(port: int = 8080, *, policy: str | Path | None = None, database: str | None = None,
                           host: str = "127.0.0.1", allow_real_connectors: bool = False) -> AsyncIterator[Running]:
    """Everything started, the page served on ``host:port`` (0 = a free port); stopped on exit.

    Its personas can request and approve anything, so on a policy whose connectors are not all
    ``memory`` (real identity providers: real grants) it refuses to start unless ``allow_real_connectors``."""
    loaded = load_policy(policy or DEMO_POLICY)
    real = real_connectors(loaded)
    if real and not allow_real_connectors:
        raise PlaygroundRefused(
            f"the policy has connectors to real identity providers: {', '.join(real)}. Anyone using the page "
            "could grant real access as any persona. Use a policy with memory connectors only, or pass "
            "--real-connectors if that is what you mean.")
    if database is None:
        database = DEFAULT_DATABASE
        _fresh_sqlite(database)
    playground = Playground(loaded, database)
    runner: web.AppRunner | None = None
    try:
        await playground.start()
        runner = web.AppRunner(web_page(playground), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        bound = int(runner.addresses[0][1])
        yield Running(playground, f"http://{host}:{bound}")
    finally:
        if runner is not None:
            await runner.cleanup()
        await playground.aclose()


async def run_playground(port: int = 8080, *, policy: str | Path | None = None, database: str | None = None,
                         stop: asyncio.Event | None = None, allow_real_connectors: bool = False) -> int:
    """Run until ``stop`` is set (or SIGINT / SIGTERM). Returns the exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with start_playground(port, policy=policy, database=database,
                                    allow_real_connectors=allow_real_connectors) as running:
            names = ", ".join(f"{p.name} ({p.role})" for p in running.playground.personas)
            print(f"jitbot playground: open {running.url}", flush=True)
            print(f"  personas: {names}", flush=True)
            if running.playground.step_up.providers:
                print(f"  step-up sign-in (a local fake provider): password {PASSWORD!r}, one-time code {OTP}",
                      flush=True)
            print("  Ctrl-C stops it.", flush=True)
            await stop.wait()
    except (PolicyError, PlaygroundRefused) as exc:
        print(f"jitbot playground: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"jitbot playground: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    print("jitbot playground: stopped.", flush=True)
    return 0


def playground_main(args: argparse.Namespace) -> int:
    """Entry point for ``jitbot playground [--port N] [--policy FILE] [--database URL]``."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    port = getattr(args, "port", None) or 8080
    try:
        return asyncio.run(run_playground(int(port), policy=getattr(args, "policy", None),
                                          database=getattr(args, "database", None),
                                          allow_real_connectors=bool(getattr(args, "real_connectors", False))))
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bot.playground.main`` without the jitbot CLI."""
    parser = argparse.ArgumentParser(prog="jitbot playground", description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--policy", default=None, help="policy YAML (default: the demo policy)")
    parser.add_argument("--database", default=None, help=f"database URL (default: {DEFAULT_DATABASE}, fresh)")
    parser.add_argument("--real-connectors", action="store_true", help=REAL_CONNECTORS_HELP)
    return playground_main(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
