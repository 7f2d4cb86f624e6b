"""The fake Slack of ``bench.slack_tiers``, in the bench's process or in a process of its own.

    python -m bench.slack_process --people N --speedup S --ready FILE   (started by ``SlackProcess``)

In-process, the fake's request handling shares one event loop (and one core at most) with the bot it
measures; with ``--slack-process`` it runs here, in its own interpreter, as the real Slack would be
elsewhere. Either side answers the same questions: ``progress()`` (calls, successful posts, successful
lookups, so far) and ``report()`` (the figures checked at the end, see ``summary``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bot.fakes import Call, FakeSlack
from bot.fakes.slack_tiers import TierLimiter

TOKEN = "xoxb-bench"
AUDIT = "C0AUDIT"


def workspace(people: int, speedup: float) -> tuple[FakeSlack, TierLimiter]:
    """The bench's workspace: the audit channel, ``people`` members with an email, Slack's tiers and
    chat.postMessage limits ×``speedup``. Not yet listening."""
    slack = FakeSlack(token=TOKEN)
    slack.add_channel(AUDIT, "jit-audit")
    for i in range(people):
        slack.add_user(f"U{i:07d}", f"user{i}", email=f"user{i}@example.com")
    tiers = slack.enforce_tiers(speedup=speedup)
    slack.limit_channel_posts(1.0 * speedup, 3)
    return slack, tiers


class Progress:
    """Running counts of the calls (a listener: nothing rescanned while the bench polls)."""

    def __init__(self, slack: FakeSlack) -> None:
        self.calls = self.posts = self.lookups = 0
        slack.listeners.append(self._seen)

    def _seen(self, call: Call) -> None:
        self.calls += 1
        if call.status == 200 and call.method == "chat.postMessage":
            self.posts += 1
        elif call.status == 200 and call.method == "users.lookupByEmail":
            self.lookups += 1

    def as_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "posts": self.posts, "lookups": self.lookups}


def summary(slack: FakeSlack, tiers: TierLimiter, progress: Progress) -> dict[str, Any]:
    """Requester notices by DM channel, audit lines by request, successful posts and lookups, 429s by method."""
    dms = Counter(m.channel for ch in slack.state.messages for m in slack.messages(ch)
                  if ch != AUDIT and "has expired" in m.text)
    audit_text = "\n".join(m.text for m in slack.messages(AUDIT))
    audited = Counter(re.findall(r"(R-M\d{7})\*? bulk for [^:]+: expired", audit_text))
    return {"dms": dict(dms), "audited": dict(audited), **progress.as_dict(), "rejected": dict(tiers.rejected)}


class InProcessSlack:
    """The fake in the bench's own event loop."""

    def __init__(self, people: int, speedup: float) -> None:
        self.slack, self.tiers = workspace(people, speedup)
        self._progress = Progress(self.slack)
        self.url = ""

    async def start(self) -> None:
        await self.slack.start()
        self.url = self.slack.url

    async def progress(self) -> dict[str, int]:
        return self._progress.as_dict()

    async def report(self) -> dict[str, Any]:
        return summary(self.slack, self.tiers, self._progress)

    async def stop(self) -> None:
        await self.slack.stop()


class SlackProcess:
    """The fake in a process of its own (``python -m bench.slack_process``), asked over HTTP."""

    def __init__(self, people: int, speedup: float) -> None:
        self.people, self.speedup = people, speedup
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self._control = ""
        self._tmp = tempfile.TemporaryDirectory()
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        ready = Path(self._tmp.name) / "ready.json"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.slack_process", "--people", str(self.people),
            "--speedup", str(self.speedup), "--ready", str(ready))
        for _ in range(2400):  # up to two minutes: 10,000 people take a while to add on a loaded host
            if ready.exists() or self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        if not ready.exists():
            raise RuntimeError("the fake Slack process did not start")
        info = json.loads(ready.read_text())
        self.url, self._control = info["url"], info["control"]
        self._http = aiohttp.ClientSession()

    async def _get(self, what: str) -> Any:
        assert self._http is not None
        async with self._http.get(f"{self._control}{what}") as resp:
            resp.raise_for_status()
            return await resp.json()

    async def progress(self) -> dict[str, int]:
        got: dict[str, int] = await self._get("progress")
        return got

    async def report(self) -> dict[str, Any]:
        got: dict[str, Any] = await self._get("report")
        return got

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await self.proc.wait()
        self._tmp.cleanup()


async def serve(people: int, speedup: float, ready: Path) -> None:
    """The child: the workspace on a free port, and a control server (``/progress``, ``/report``) on
    another, until SIGTERM."""
    slack, tiers = workspace(people, speedup)
    progress = Progress(slack)
    await slack.start()

    async def on_progress(_: web.Request) -> web.Response:
        return web.json_response(progress.as_dict())

    async def on_report(_: web.Request) -> web.Response:
        return web.json_response(summary(slack, tiers, progress))

    app = web.Application()
    app.router.add_get("/progress", on_progress)
    app.router.add_get("/report", on_report)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    partial = ready.with_suffix(".tmp")
    partial.write_text(json.dumps({"url": slack.url, "control": f"http://127.0.0.1:{port}/", "pid": os.getpid()}))
    partial.rename(ready)  # the parent never reads half a file
    await stop.wait()
    await runner.cleanup()
    await slack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="the fake Slack of bench.slack_tiers --slack-process")
    parser.add_argument("--people", type=int, required=True)
    parser.add_argument("--speedup", type=float, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.people, args.speedup, args.ready))


if __name__ == "__main__":
    main()
