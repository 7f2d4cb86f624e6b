"""The event loop of the long-running processes (``serve``, ``worker``): uvloop where it is installed.

The bot's work is small pieces on one loop — HTTP requests in and out, SQLite statements, outbox
deliveries — so the loop's own cost (callbacks, sockets, timers) is a tenth of its CPU under load; uvloop
does that part in C (``bench.throughput``: 8–12 % less CPU per flow). ``JITBOT_EVENT_LOOP=asyncio``
keeps the standard library's loop (to rule uvloop out when chasing a problem).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop, or None (asyncio's own) when asked for or when uvloop is not installed."""
    choice = (choice if choice is not None else os.environ.get("JITBOT_EVENT_LOOP", "uvloop")).strip().lower()
    if choice == "asyncio":
        return None
    if choice != "uvloop":
        raise ValueError(f"JITBOT_EVENT_LOOP must be uvloop or asyncio, not {choice!r}")
    try:
        import uvloop
    except ImportError:  # not built for this platform (Windows)
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
