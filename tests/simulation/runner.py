"""Running seeds: a fresh database each, the scheduler's steps, the end of the run, shrinking a failure.

``run_seed(seed, dbs)`` generates and applies ``STEPS`` steps from ``random.Random(seed)``, then ends the
run (``finish``): every request's start and expiry passes, the worker drains, and the memberships must
be exactly the standing ones. A ``Violation`` becomes a ``Failure`` with the seed and the step trace;
``shrink`` drops steps while the same invariant still breaks, for a minimal replay.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import asyncpg

from storage.db import Database
from tests.simulation.model import TARGETS, Violation
from tests.simulation.settle import Stuck
from tests.simulation.steps import Step, apply, pick
from tests.simulation.world import Determinism, World

STEPS = 24  # per seed: tiny runs, many seeds


@dataclass
class Failure:
    seed: int
    backend: str
    message: str
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


class Databases:
    """A fresh, migrated database per seed: a copy of a migrated SQLite file, or a PostgreSQL schema
    emptied between seeds (migrating each time would cost more than the seed)."""

    def __init__(self, backend: str, *, pg_dsn: str | None = None) -> None:
        self.backend = backend
        self.pg_dsn = pg_dsn
        self.dir = Path(tempfile.mkdtemp(prefix="jitbot-sim-"))
        self.template = self.dir / "template.db"
        self.schema = f"sim_{random.randrange(16**8):08x}"
        self._tables: list[str] = []
        self.made: list[Database] = []

    @property
    def url(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite+aiosqlite:///{self.dir / 'seed.db'}"
        assert self.pg_dsn
        return self.pg_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def setup(self) -> None:
        if self.backend == "sqlite":
            db = Database(f"sqlite+aiosqlite:///{self.template}")
            await db.migrate()
            await db.dispose()
            return
        conn = await asyncpg.connect(self.pg_dsn)
        try:
            await conn.execute(f"CREATE SCHEMA {self.schema}")
        finally:
            await conn.close()
        db = Database(self.url, schema=self.schema)
        await db.migrate()
        await db.dispose()
        conn = await asyncpg.connect(self.pg_dsn)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1 "
                                    "AND tablename <> 'alembic_version'", self.schema)
        finally:
            await conn.close()
        self._tables = [f'{self.schema}."{r["tablename"]}"' for r in rows]

    async def fresh(self) -> Callable[[], Database]:
        """Empty the database for the next seed; returns the engine factory (a restart calls it again)."""
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.dir / 'seed.db'}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(self.template, self.dir / "seed.db")
        else:
            conn = await asyncpg.connect(self.pg_dsn)
            try:
                await conn.execute(f"TRUNCATE {', '.join(self._tables)} RESTART IDENTITY CASCADE")
            finally:
                await conn.close()

        def make() -> Database:
            db = Database(self.url, schema=None if self.backend == "sqlite" else self.schema)
            self.made.append(db)
            return db
        return make

    async def release(self) -> None:
        for db in self.made:
            await db.dispose()
        self.made.clear()

    async def teardown(self) -> None:
        await self.release()
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


async def run(seed: int, dbs: Databases, *, steps: list[Step] | None = None, n_steps: int = STEPS) -> Outcome:
    """One seed: generated steps (or ``steps``, a replay), then ``finish``; never raises a Violation."""
    rng = random.Random(seed)
    trace: list[tuple[Step, str]] = []
    kinds: dict[str, int] = {}
    make_db = await dbs.fresh()
    with Determinism(seed):
        world = World(make_db, dbs.dir, seed)
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
        except (Violation, Stuck) as exc:
            failure = Failure(seed, dbs.backend, str(exc), trace)
        finally:
            await world.close()
            await dbs.release()
    return Outcome(seed, failure, len(trace), kinds)


def _same(a: str, b: str) -> bool:
    return a.split(":")[0] == b.split(":")[0]


async def shrink(failure: Failure, dbs: Databases, *, budget_s: float = 120.0) -> list[Step]:
    """Drop steps (chunks, then one at a time) while the replay still breaks the same invariant."""
    steps = [s for s, _ in failure.trace if s.kind != "finish"]
    deadline = time.monotonic() + budget_s
    chunk = max(1, len(steps) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        i, changed = 0, False
        while i < len(steps) and time.monotonic() < deadline:
            candidate = steps[:i] + steps[i + chunk:]
            out = await run(failure.seed, dbs, steps=candidate)
            if out.failure is not None and _same(out.failure.message, failure.message):
                steps, changed = candidate, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return steps
