"""Letting the services run until each of their tasks waits on the simulation.

After a step the simulation lets every task it started run until it is done or *parked*: waiting for an
IdP call the simulation has not answered, for another task, or for a lock one of them holds — an asyncio
lock, or a membership's database lock held by a task across an IdP call (``_LOCK_ACROSS_CALL``), which
the simulation answers only once the others are parked. A task waiting on anything else (a database
round trip, a thread) is still busy. Steps are therefore atomic:
between two steps nothing runs but what the simulation holds back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from types import CoroutineType, GeneratorType
from typing import Any

_PARKING_FRAMES = {("asyncio", "wait"), ("asyncio", "_wait"), ("asyncio", "acquire"), ("asyncio", "gather"),
                   ("asyncio", "shield")}


class Stuck(AssertionError):
    """Tasks stayed busy (not parked on the simulation) for longer than the timeout."""


def _awaited(task: asyncio.Task[Any]) -> tuple[list[tuple[str, str]], object]:
    """The chain of coroutine frames ``task`` is suspended in, and the future at its end."""
    frames: list[tuple[str, str]] = []
    obj: Any = task.get_coro()
    while obj is not None:
        if isinstance(obj, CoroutineType):
            code, nxt = obj.cr_code, obj.cr_await
        elif isinstance(obj, GeneratorType):
            code, nxt = obj.gi_code, obj.gi_yieldfrom
        else:
            return frames, obj
        mod = "asyncio" if "/asyncio/" in code.co_filename else code.co_filename
        frames.append((mod, code.co_name))
        obj = nxt
    return frames, None


def parked(task: asyncio.Task[Any], held: Collection[str]) -> bool:
    """Whether ``task`` waits on the simulation: in one of the ``held`` functions (``module:name``, the
    IdP's pending calls), or for other tasks or a lock."""
    frames, _ = _awaited(task)
    if frames and f"{frames[-1][0]}:{frames[-1][1]}" in held:
        return True
    return any(f in _PARKING_FRAMES for f in frames)


# Where a task holds a membership's database lock (bot/services/claims.py ``lock_holder``) across an IdP call
# (bot/services/access/fencing.py ``undo_stale_revoke``: the add-back is made under the lock): another task
# waiting for that lock waits on the simulation, which answers the call only once the others are parked.
_LOCK_ACROSS_CALL = {"undo_stale_revoke"}


def _holds_lock_in_call(task: asyncio.Task[Any], held: Collection[str]) -> bool:
    frames, _ = _awaited(task)
    return bool(frames) and f"{frames[-1][0]}:{frames[-1][1]}" in held and any(
        name in _LOCK_ACROSS_CALL for _, name in frames)


def _waits_for_membership_lock(task: asyncio.Task[Any]) -> bool:
    frames, _ = _awaited(task)
    return any(mod.endswith("bot/services/claims.py") and name == "lock_holder" for mod, name in frames)


async def settle(held: Collection[str], ignore: set[asyncio.Task[Any]],
                 *, timeout: float = 60.0) -> None:
    """Return once every task (but ``ignore`` and the caller) is done or parked, twice in a row."""
    me = asyncio.current_task()
    deadline = time.monotonic() + timeout
    calm = 0
    while calm < 2:
        for _ in range(4):
            await asyncio.sleep(0)
        tasks = [t for t in asyncio.all_tasks() if t is not me and t not in ignore and not t.done()]
        busy = [t for t in tasks if not parked(t, held)]
        if busy and any(_holds_lock_in_call(t, held) for t in tasks):
            busy = [t for t in busy if not _waits_for_membership_lock(t)]
        if busy:
            calm = 0
            if time.monotonic() > deadline:
                raise Stuck(f"tasks still busy after {timeout}s: {[_awaited(t)[0] for t in busy]}")
            await asyncio.sleep(0.0005)  # a database round trip or a thread
        else:
            calm += 1
