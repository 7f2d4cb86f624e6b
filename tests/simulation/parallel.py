"""Running many seeds in worker processes: the suite's and ``python -m tests.simulation``'s seed runs.

Seeds are dealt to ``workers`` processes (each its own interpreter, event loop and database: a SQLite file
or a PostgreSQL schema of its own) in turn, so each process runs every ``workers``-th seed. Every seed is
independent (a fresh database, ``random.Random(seed)``), so which process runs it changes nothing: a
seed's verdict is the same alone, in one process or in many. When a seed fails, the processes stop at the
next seed past the lowest failing one (unless ``keep_going``); the caller replays the lowest failing seed
in its own process to shrink and print it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

WORKERS_DEFAULT = min(2, os.cpu_count() or 1)


@dataclass
class Summary:
    backend: str
    seeds: int = 0  # seeds run to the end or to their failure
    steps: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)  # (seed, invariant), by seed
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process and its workers

    @property
    def first(self) -> int | None:
        return self.failures[0][0] if self.failures else None


_stop: Any = None  # the workers' shared "lowest failing seed" (multiprocessing.Value), set by _init


def _init(stop: Any) -> None:
    global _stop
    _stop = stop
    logging.basicConfig(level=logging.CRITICAL)  # the services' retry warnings are expected here


async def _chunk(backend: str, seeds: list[int], pg_dsn: str | None, lenient: frozenset[str],
                 keep_going: bool) -> tuple[int, int, list[tuple[int, str]]]:
    from tests.simulation.runner import databases, run

    ran = steps = 0
    failures: list[tuple[int, str]] = []
    async with databases(backend, pg_dsn=pg_dsn) as dbs:
        for seed in seeds:
            if not keep_going and seed > _stop.value:
                break
            out = await run(seed, dbs, lenient=lenient)
            ran, steps = ran + 1, steps + out.steps
            if out.failure is not None:
                failures.append((seed, out.failure.kind))
                if not keep_going:
                    with _stop.get_lock():
                        _stop.value = min(_stop.value, seed)
                    break
    return ran, steps, failures


def _work(backend: str, seeds: list[int], pg_dsn: str | None, lenient: frozenset[str],
          keep_going: bool) -> tuple[int, int, list[tuple[int, str]]]:
    return asyncio.run(_chunk(backend, seeds, pg_dsn, lenient, keep_going))


def run_seeds(backend: str, seeds: list[int], *, workers: int = WORKERS_DEFAULT, pg_dsn: str | None = None,
              lenient: frozenset[str] = frozenset(), keep_going: bool = False) -> Summary:
    """Run ``seeds`` in ``workers`` processes; the failures found (all of them with ``keep_going``, else
    the lowest failing seed and any a process met before it heard of it)."""
    started, cpu0 = time.monotonic(), _cpu()
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of the caller's event loop
    stop = ctx.Value("q", 2**62)
    workers = max(1, min(workers, len(seeds)))
    summary = Summary(backend)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(stop,)) as pool:
        futures = [pool.submit(_work, backend, seeds[k::workers], pg_dsn, lenient, keep_going)
                   for k in range(workers)]
        for f in futures:
            ran, steps, failures = f.result()
            summary.seeds += ran
            summary.steps += steps
            summary.failures += failures
    summary.failures.sort()
    if not keep_going and summary.failures:
        first = summary.failures[0][0]
        summary.seeds = sum(1 for s in seeds if s <= first)
    summary.wall_s, summary.cpu_s = time.monotonic() - started, _cpu() - cpu0
    return summary


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
