"""A jitbot process for the crash harness: submits short auto-approved requests and runs the worker.

Run: python -m bench.crash_child DATABASE_URL POLICY_FILE SECONDS
It is killed with SIGKILL at random points by bench/crash_harness.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.bootstrap import build_runtime
from bot.domain.requests import PolicyViolation
from bot.policy_file import load_policy
from bot.services.background.worker import Worker
from bot.services.outbox.dispatcher import Delivery, OutboxDispatcher
from bot.services.requesting.requests import RequestService


class FileNotifier:
    """Appends every delivered message to a file (fsynced), so the harness can count deliveries."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def deliver(self, kind: str, payload: dict[str, Any]) -> Delivery:
        with self.path.open("a") as f:
            f.write(json.dumps({"kind": kind, "id": (payload.get("request") or {}).get("id"),
                                "event": payload.get("event")}) + "\n")
            f.flush()
        return Delivery()


async def main(url: str, policy_path: str, seconds: float, sent_log: str) -> None:
    rt = await build_runtime(load_policy(policy_path), url)
    worker = Worker(rt, OutboxDispatcher(rt.db, FileNotifier(Path(sent_log)), rt.clock), worker_id="crash-child")
    requests = RequestService(rt)
    await worker.recover()
    print("ready", flush=True)  # the harness starts its kill timer only now
    deadline = time.monotonic() + seconds
    users = [f"u{i}@example.com" for i in range(20)]
    while seconds > 0 and time.monotonic() < deadline:
        try:
            await requests.submit(requester=random.choice(users), eligibility="short", justification="crash test",
                                  duration=timedelta(seconds=random.choice([1, 2, 3])))
        except PolicyViolation:
            pass  # already pending for that user
        await worker.tick()
    await worker.run_until_idle()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]))
