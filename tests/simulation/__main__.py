"""``python -m tests.simulation``: run seeds of the deterministic simulation and print figures.

    python -m tests.simulation --seeds 2000 --db sqlite            # seeds 0..1999
    python -m tests.simulation --seed 1234 --db postgres -v        # one seed, its whole trace
    python -m tests.simulation --seeds 500 --first 10000 --keep-going

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
    p.add_argument("-v", action="store_true", help="print every seed's trace")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    lenient = frozenset(x for x in args.lenient.split(",") if x)
    seeds = [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    failures: list[Failure] = []
    by_message: Counter[str] = Counter()
    steps = 0
    started = time.monotonic()
    pg_dsn = args.pg_dsn or (pg.dsn() if args.db == "postgres" else None)
    async with databases(args.db, pg_dsn=pg_dsn) as dbs:
        for seed in seeds:
            out = await run(seed, dbs, lenient=lenient)
            steps += out.steps
            if out.failure is None:
                continue
            failures.append(out.failure)
            by_message[out.failure.kind] += 1
            if args.v or not args.keep_going:
                if not args.no_shrink:
                    out.failure.shrunk = await shrink(out.failure, dbs, lenient=lenient)
                print(out.failure.report())
            if not args.keep_going:
                break
    took = time.monotonic() - started
    ran = len(seeds) if args.keep_going or not failures else seeds.index(failures[0].seed) + 1
    print(f"{args.db}: {ran} seeds, {steps} steps in {took:.1f}s ({1000 * took / max(ran, 1):.0f} ms a seed); "
          f"{len(failures)} failing" + (f" (first: seed {failures[0].seed})" if failures else ""))
    for message, n in by_message.most_common():
        first = next(f.seed for f in failures if f.kind == message)
        print(f"  {n:5d}× {message}  (first seed {first})")
    pg.stop()  # the throwaway server, if this run started one
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
