"""The ticket watch and the bundle guard ending the same member at once (PostgreSQL row locks): neither
waits for the other while holding what the other waits for, so neither is ended by a deadlock, and the
guard sees what the watch did.

The guard takes the membership's lock, the grant's row, then the request's (the grant pipeline's order);
the ticket watch changes only the grant and locks it alone. The test pauses the watch holding its first
row lock, lets the guard run until PostgreSQL reports it waiting on the watch, then lets the watch go on.
Had the watch locked the request first, the guard would hold the grant and wait for the request while the
watch, holding the request, waited for the grant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from bot.policy_file import parse_policy
from bot.services.background.ticket_watch import TicketWatch
from bot.services.clock import ManualClock
from bot.services.requesting.bundles import BundleGuard
from storage.db import Database
from storage.tables import Event, Grant
from tests.conftest import DbFactory
from tests.services.stack import make_stack
from tests.services.test_bundles import POLICY, _approved_bundle, _rows, _settle, _stack

POLLS = 2000  # looks at pg_stat_activity before giving up on seeing the guard wait


def _pause_after_first_row_lock(db: Database, holding: asyncio.Event, go: asyncio.Event, pid: list[int]) -> None:
    """``db``'s next write transactions stop after their first ``SELECT … FOR UPDATE`` until ``go``."""
    real = db.transaction

    @asynccontextmanager
    async def transaction() -> AsyncIterator[AsyncSession]:
        async with real() as session:
            execute = session.execute

            async def paused(statement: Any, *args: Any, **kwargs: Any) -> Any:
                result = await execute(statement, *args, **kwargs)
                if getattr(statement, "_for_update_arg", None) is not None and not holding.is_set():
                    pid.append(int((await execute(text("SELECT pg_backend_pid()"))).scalar_one()))
                    holding.set()
                    await go.wait()
                return result

            session.execute = paused  # type: ignore[method-assign]
            yield session

    db.transaction = transaction  # type: ignore[method-assign]


async def _waits_on(db: Database, pid: int) -> bool:
    async with db.sessions() as session:
        return bool((await session.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"), {"pid": pid}))
            .scalar_one())


async def test_the_ticket_watch_and_the_bundle_guard_ending_one_member_at_once_do_not_deadlock(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _stack(db_factory, clock)
    if s.rt.db.is_sqlite:
        pytest.skip("row locks: PostgreSQL")
    bundle = await _approved_bundle(s)
    await _settle(s)
    reqs, grants = await _rows(s, bundle)
    member = next(r for r in reqs if r.id != bundle)
    grant = next(g for g in grants if g.request_id == member.id)
    # the bundle request released (not yet revoked: no worker pass): the guard is due to end the member
    await s.grants.end_early(request_id=bundle, actor="alice@example.com", reason="released")
    replica = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock, migrate=False)
    watch = TicketWatch(replica.rt)
    holding, go, pid = asyncio.Event(), asyncio.Event(), list[int]()
    _pause_after_first_row_lock(watch.rt.db, holding, go, pid)

    ticket = asyncio.ensure_future(watch._end(grant.id, member.id, "OPS-1", "its ticket is now 'Done'", by="webhook"))
    await asyncio.wait_for(holding.wait(), 30)
    guard = asyncio.ensure_future(BundleGuard(s.rt)._end(member.id))
    for _ in range(POLLS):  # until the guard waits for the watch's lock (or is done: then it waited for nothing)
        if guard.done() or await _waits_on(s.rt.db, pid[0]):
            break
    else:
        raise AssertionError("the guard neither waited for the ticket watch's lock nor finished")
    go.set()
    ended, guarded = await asyncio.gather(ticket, guard, return_exceptions=True)
    assert ended is True and guarded == 0, (ended, guarded)  # neither was chosen as a deadlock's victim
    async with s.rt.db.sessions() as session:
        g = (await session.execute(select(Grant).where(Grant.id == grant.id))).scalar_one()
        kinds = list((await session.execute(select(Event.kind).where(Event.request_id == member.id))).scalars())
    assert (g.status, g.end_reason) == ("revoking", "ticket")
    assert "ticket_ended" in kinds and "bundle_ended" not in kinds
