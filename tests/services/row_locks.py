"""Two transactions racing for the same rows on PostgreSQL, made deterministic: one is paused right after
it takes its first row lock, the other is let run until PostgreSQL reports it waiting on the first, then
the first goes on. Where the two take their locks in opposite orders, this is a deadlock every time
(PostgreSQL ends one of them: "deadlock detected"); where they take them in one order, both finish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Insert, Update, text
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database

POLLS = 2000  # looks at pg_stat_activity before giving up on seeing the other side wait


def _locks_rows(statement: Any) -> bool:
    """A ``SELECT … FOR UPDATE`` or an ``UPDATE`` (a claim: its rows stay locked until the commit)."""
    return getattr(statement, "_for_update_arg", None) is not None or isinstance(statement, Update)


def inserts_into(table: str) -> Callable[[Any], bool]:
    """An ``INSERT`` into ``table`` (its new row stays invisible to other transactions until the commit)."""
    return lambda statement: isinstance(statement, Insert) and statement.table.name == table  # type: ignore[attr-defined]


class Pause:
    """Stops ``db``'s next write transaction after its first statement that locks rows (``after``: the first
    for which ``after`` is true), until ``go()``."""

    def __init__(self, db: Database, after: Callable[[Any], bool] = _locks_rows) -> None:
        self.holding, self._go, self.pid = asyncio.Event(), asyncio.Event(), 0
        real = db.transaction

        @asynccontextmanager
        async def transaction() -> AsyncIterator[AsyncSession]:
            async with real() as session:
                execute = session.execute

                async def paused(statement: Any, *args: Any, **kwargs: Any) -> Any:
                    result = await execute(statement, *args, **kwargs)
                    if after(statement) and not self.holding.is_set():
                        self.pid = int((await execute(text("SELECT pg_backend_pid()"))).scalar_one())
                        self.holding.set()
                        await self._go.wait()
                    return result

                session.execute = paused  # type: ignore[method-assign]
                yield session

        db.transaction = transaction  # type: ignore[method-assign]

    def go(self) -> None:
        self._go.set()


async def waits_on(db: Database, pid: int) -> bool:
    """Whether some session of the database waits for a lock that backend ``pid`` holds."""
    async with db.sessions() as session:
        return bool((await session.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"), {"pid": pid}))
            .scalar_one())


async def race(db: Database, paused: Pause, first: Any, second: Any) -> list[Any]:
    """Start ``first`` (an awaitable whose transaction ``paused`` stops), once it holds its first row lock
    start ``second``, wait (a bounded number of looks) until ``second`` waits on it or is done, let
    ``first`` go on; both outcomes (an exception is returned, not raised)."""
    one = asyncio.ensure_future(first)
    await asyncio.wait_for(paused.holding.wait(), 30)
    two = asyncio.ensure_future(second)
    for _ in range(POLLS):  # until the second waits for the first's lock (or is done: it waited for nothing)
        if two.done() or await waits_on(db, paused.pid):
            break
    else:
        paused.go()
        await asyncio.gather(one, two, return_exceptions=True)
        raise AssertionError("the second transaction neither waited for the first's lock nor finished")
    paused.go()
    return list(await asyncio.gather(one, two, return_exceptions=True))
