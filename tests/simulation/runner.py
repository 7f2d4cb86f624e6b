"""Running seeds: a fresh database each, the scheduler's steps, the end of the run, shrinking a failure.

``run_seed(seed, dbs)`` generates and applies ``STEPS`` steps from ``random.Random(seed)``, then ends the
run (``finish``): every request's start and expiry passes, the worker drains, and the memberships must
be exactly the standing ones. A ``Violation`` becomes a ``Failure`` with the seed and the step trace;
``shrink`` drops steps while the same invariant still breaks, for a minimal replay.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text

from storage.db import Database
from tests.simulation.model import TARGETS, Violation
from tests.simulation.settle import Stuck
from tests.simulation.steps import Step, apply, pick
from tests.simulation.world import Determinism, World

STEPS = int(os.environ.get("JITBOT_SIM_STEPS", "12"))  # per seed: short runs, many seeds


@dataclass
class Failure:
    seed: int
    backend: str
    message: str
    kind: str
    trace: list[tuple[Step, str]]
    shrunk: list[Step] | None = None

    def report(self) -> str:
        lines = [f"simulation seed {self.seed} on {self.backend} broke an invariant:", f"  {self.message}",
                 "steps (what the services answered):"]
        lines += [f"  {i:3d}. {s}  -> {answer}" if answer else f"  {i:3d}. {s}"
                  for i, (s, answer) in enumerate(self.trace)]
        if self.shrunk is not None:
            lines.append(f"minimal replay ({len(self.shrunk)} steps): [{', '.join(map(str, self.shrunk))}]")
        lines.append(f"rerun: JITBOT_SIM_SEED={self.seed} .venv/bin/pytest -q -p no:cacheprovider "
                     f"tests/simulation -k {self.backend}  (or: python -m tests.simulation --seed {self.seed} "
                     f"--db {self.backend} -v)")
        return "\n".join(lines)


@dataclass
class Outcome:
    seed: int
    failure: Failure | None
    steps: int
    kinds: dict[str, int] = field(default_factory=dict)
    trace: list[tuple[Step, str]] = field(default_factory=list)


class Databases:
    """A migrated database, emptied for each seed. Each seed's first generation uses one long-lived engine
    (its statements compiled once, its connections open); a restart makes a new engine, as a new process
    would, sharing the compiled-statement cache (the same dialect: only the compiling is saved)."""

    def __init__(self, backend: str, *, pg_dsn: str | None = None) -> None:
        self.backend = backend
        self.pg_dsn = pg_dsn
        self.dir = Path(tempfile.mkdtemp(prefix="jitbot-sim-"))
        self.schema = f"sim_{random.randrange(16**8):08x}"
        self._tables: list[str] = []
        self.base: Database | None = None
        self.made: list[Database] = []

    @property
    def url(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite+aiosqlite:///{self.dir / 'sim.db'}"
        assert self.pg_dsn
        return self.pg_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)

    def _new(self) -> Database:
        return Database(self.url, schema=None if self.backend == "sqlite" else self.schema, pool_size=5)

    async def setup(self) -> None:
        if self.backend != "sqlite":
            conn = await asyncpg.connect(self.pg_dsn)
            try:
                await conn.execute(f"CREATE SCHEMA {self.schema}")
            finally:
                await conn.close()
        self.base = self._new()
        await self.base.migrate()
        async with self.base.engine.connect() as conn:
            ordered = await conn.run_sync(lambda c: sa_inspect(c).get_sorted_table_and_fkc_names())
        # dependents first, so that deleting never breaks a foreign key
        self._tables = [n for n, _ in reversed(ordered) if n and n != "alembic_version"]

    async def fresh(self) -> Callable[[], Database]:
        """Empty the database for the next seed; returns the engine factory (a restart calls it again)."""
        assert self.base is not None
        # tiny tables: DELETE is far cheaper than PostgreSQL's TRUNCATE; on PostgreSQL all of them in one
        # round trip (a simple-protocol script is one implicit transaction)
        if self.backend == "sqlite":
            async with self.base.engine.begin() as conn:
                for name in self._tables:
                    await conn.execute(text(f'DELETE FROM "{name}"'))
        else:
            async with self.base.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                await raw.driver_connection.execute(  # type: ignore[union-attr]
                    "".join(f'DELETE FROM "{name}";' for name in self._tables))
        first = [True]

        def make() -> Database:
            if first[0]:
                first[0] = False
                assert self.base is not None
                return self.base
            db = self._new()
            assert self.base is not None
            for mine, base in ((db.engine, self.base.engine), (db.read_engine, self.base.read_engine)):
                mine.sync_engine._compiled_cache = base.sync_engine._compiled_cache
            self.made.append(db)
            return db
        return make

    async def release(self) -> None:
        for db in self.made:
            await db.dispose()
        self.made.clear()

    async def teardown(self) -> None:
        await self.release()
        if self.base is not None:
            await self.base.dispose()
        if self.backend != "sqlite":
            conn = await asyncpg.connect(self.pg_dsn)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            finally:
                await conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@asynccontextmanager
async def databases(backend: str, *, pg_dsn: str | None = None) -> AsyncIterator[Databases]:
    dbs = Databases(backend, pg_dsn=pg_dsn)
    await dbs.setup()
    try:
        yield dbs
    finally:
        await dbs.teardown()


async def finish(world: World) -> None:
    """The end of a run: every scheduled start, then every expiry, passes; held must be the standing ones."""
    await world.drain()
    world.clock.advance(timedelta(hours=4))  # past every start (at most 3 h ahead, 5 min per drain)
    await world.drain()
    world.clock.advance(timedelta(hours=9))  # past every expiry (4 h at most, extensions included)
    await world.drain()
    held = {m for m in world.members() if m[0] in TARGETS}
    standing = {m for m in world.model.standing if m[0] in TARGETS}
    if held != standing:
        raise Violation(f"after everything ended: held {sorted(held - standing)} beyond the standing "
                        f"{sorted(standing)}" + (f", missing {sorted(standing - held)}" if standing - held else ""))


async def run(seed: int, dbs: Databases, *, steps: list[Step] | None = None, n_steps: int = STEPS,
              lenient: frozenset[str] = frozenset()) -> Outcome:
    """One seed: generated steps (or ``steps``, a replay), then ``finish``; never raises a Violation."""
    rng = random.Random(seed)
    trace: list[tuple[Step, str]] = []
    kinds: dict[str, int] = {}
    make_db = await dbs.fresh()
    with Determinism(seed):
        world = World(make_db, dbs.dir, seed, lenient)
        failure = None
        try:
            await world.start()
            todo = list(steps) if steps is not None else None
            for _ in range(len(todo) if todo is not None else n_steps):
                step = todo.pop(0) if todo is not None else pick(rng, world)
                kinds[step.kind] = kinds.get(step.kind, 0) + 1
                trace.append((step, ""))
                answer = await apply(world, step)
                trace[-1] = (step, answer)
                world.model.check_always(world.members())
            trace.append((Step("finish"), ""))
            await finish(world)
        except Violation as exc:
            failure = Failure(seed, dbs.backend, str(exc), exc.kind, trace)
        except Stuck as exc:
            failure = Failure(seed, dbs.backend, str(exc), "stuck", trace)
        finally:
            await world.close()
            await dbs.release()
    return Outcome(seed, failure, len(trace), kinds, trace)


async def shrink(failure: Failure, dbs: Databases, *, budget_s: float = 120.0,
                 lenient: frozenset[str] = frozenset()) -> list[Step]:
    """Drop steps (chunks, then one at a time) while the replay still breaks the same invariant."""
    steps = [s for s, _ in failure.trace if s.kind != "finish"]
    deadline = time.monotonic() + budget_s
    chunk = max(1, len(steps) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        i, changed = 0, False
        while i < len(steps) and time.monotonic() < deadline:
            candidate = steps[:i] + steps[i + chunk:]
            out = await run(failure.seed, dbs, steps=candidate, lenient=lenient)
            if out.failure is not None and out.failure.kind == failure.kind:
                steps, changed = candidate, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return steps
