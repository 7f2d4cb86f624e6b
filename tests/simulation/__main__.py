"""``python -m tests.simulation``: run seeds of the deterministic simulation and print figures.

    python -m tests.simulation --seeds 2000 --db sqlite            # seeds 0..1999
    python -m tests.simulation --seed 1234 --db postgres -v        # one seed, its whole trace
    python -m tests.simulation --seeds 500 --first 10000 --keep-going
    python -m tests.simulation --seeds 2000 --workers 2                # seeds dealt to 2 processes

Exits 1 when a seed breaks an invariant (its report, with a shrunk replay, is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter

from tests import pg
from tests.simulation.parallel import WORKERS_DEFAULT, Summary, run_seeds
from tests.simulation.runner import Failure, databases, run, shrink


async def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.simulation")
    p.add_argument("--seeds", type=int, default=200)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--seed", type=int, help="run this one seed")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg-dsn", help="default: the tests' server (tests/pg.py: JITBOT_TEST_PG, or a throwaway one)")
    p.add_argument("--keep-going", action="store_true", help="count failures instead of stopping at the first")
    p.add_argument("--no-shrink", action="store_true")
    p.add_argument("--lenient", default="", help="issue-26 holes to take as policy, e.g. 4 (measures the others)")
    p.add_argument("--workers", type=int, default=WORKERS_DEFAULT,
                   help=f"processes the seeds are dealt to (default {WORKERS_DEFAULT}; 1: this process)")
    p.add_argument("-v", action="store_true", help="print every seed's trace")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    lenient = frozenset(x for x in args.lenient.split(",") if x)
    seeds = [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    pg_dsn = args.pg_dsn or (pg.dsn() if args.db == "postgres" else None)
    if args.workers > 1 and len(seeds) > 1 and not args.v:
        summary = run_seeds(args.db, seeds, workers=args.workers, pg_dsn=pg_dsn, lenient=lenient,
                            keep_going=args.keep_going)
    else:
        summary = await _in_process(args, seeds, pg_dsn, lenient)
    failures = summary.failures
    if failures and args.workers > 1 and not args.v and not args.keep_going:  # its report, from a replay here
        async with databases(args.db, pg_dsn=pg_dsn) as dbs:
            out = await run(failures[0][0], dbs, lenient=lenient)
            if out.failure is not None:
                if not args.no_shrink:
                    out.failure.shrunk = await shrink(out.failure, dbs, lenient=lenient)
                print(out.failure.report())
    ran = summary.seeds
    print(f"{args.db}: {ran} seeds, {summary.steps} steps in {summary.wall_s:.1f}s wall, {summary.cpu_s:.1f}s CPU "
          f"({1000 * summary.cpu_s / max(ran, 1):.0f} ms CPU a seed, {args.workers if len(seeds) > 1 else 1} "
          f"process(es)); {len(failures)} failing" + (f" (first: seed {failures[0][0]})" if failures else ""))
    by_kind: Counter[str] = Counter(kind for _, kind in failures)
    for kind, n in by_kind.most_common():
        first = next(seed for seed, k in failures if k == kind)
        print(f"  {n:5d}× {kind}  (first seed {first})")
    pg.stop()  # the throwaway server, if this run started one
    return 1 if failures else 0


async def _in_process(args: argparse.Namespace, seeds: list[int], pg_dsn: str | None,
                      lenient: frozenset[str]) -> Summary:
    summary = Summary(args.db)
    started, cpu0 = time.monotonic(), time.process_time()
    found: list[Failure] = []
    async with databases(args.db, pg_dsn=pg_dsn) as dbs:
        for seed in seeds:
            out = await run(seed, dbs, lenient=lenient)
            summary.seeds += 1
            summary.steps += out.steps
            if out.failure is None:
                continue
            found.append(out.failure)
            summary.failures.append((seed, out.failure.kind))
            if args.v or not args.keep_going:
                if not args.no_shrink:
                    out.failure.shrunk = await shrink(out.failure, dbs, lenient=lenient)
                print(out.failure.report())
            if not args.keep_going:
                break
    summary.wall_s, summary.cpu_s = time.monotonic() - started, time.process_time() - cpu0
    return summary


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
