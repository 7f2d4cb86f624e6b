"""A paused replica cannot hold the others up: bounded lock waits, statements and idle transactions on
every PostgreSQL connection; freeing its claims skips what it still locks; finished work carries no claim."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy import select, text

from bot.services.claims import release_claims
from bot.services.clock import ManualClock
from storage.db import Database
from storage.tables import AccessRequest, Grant, OutboxMessage
from tests import pg
from tests.conftest import DbFactory
from tests.services.stack import make_stack


async def test_every_postgres_connection_bounds_lock_waits_statements_and_idle_transactions(
        db_factory: DbFactory) -> None:
    db = db_factory()
    if db.is_sqlite:
        pytest.skip("PostgreSQL connection settings")
    async with db.sessions() as session:
        shown = {name: (await session.execute(text(f"SHOW {name}"))).scalar_one()
                 for name in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout",
                              "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")}
    assert shown == {"lock_timeout": "10s", "statement_timeout": "1min", "idle_in_transaction_session_timeout": "30s",
                     "tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}


async def _claimed_grants(db: Database, owner: str, n: int, clock: ManualClock) -> list[str]:
    now = clock.now()
    ids = [f"G-P{i}" for i in range(n)]
    async with db.transaction() as session:
        for i, gid in enumerate(ids):
            session.add(AccessRequest(id=f"R-P{i}", eligibility="readonly", requester="alice@example.com",
                                      duration_s=600, justification="x", status="active", layers=0,
                                      created_at=now, updated_at=now))
            session.add(Grant(id=gid, request_id=f"R-P{i}", connector="demo", target_kind="group",
                              target_id="readonly", user_email="alice@example.com", status="revoking",
                              claimed_by=owner, claimed_until=now + timedelta(minutes=5), next_attempt_at=now))
    return ids


async def test_freeing_a_dead_replicas_claims_skips_the_row_it_still_locks_and_frees_it_later(
        db_factory: DbFactory, loaded_policy: object, clock: ManualClock) -> None:
    db = db_factory()
    if db.is_sqlite:
        pytest.skip("row locks: PostgreSQL")
    s = await make_stack(db, loaded_policy, clock)  # type: ignore[arg-type]
    held, free = await _claimed_grants(s.rt.db, "dead-replica", 2, clock)
    schema = (await _one(s.rt.db, "SELECT current_schema()"))
    paused = await asyncpg.connect(pg.dsn(), server_settings={"search_path": schema})
    try:
        tx = paused.transaction()
        await tx.start()  # the "paused" replica: inside a transaction, holding one grant's row lock
        await paused.execute("SELECT id FROM \"grant\" WHERE id = $1 FOR UPDATE", held)
        # returns at once (it waited for the lock before: a whole tick, and the revocations behind it)
        freed = await asyncio.wait_for(release_claims(s.rt.db, owners=["dead-replica"]), timeout=5)
        assert freed == 1
        assert await _claim_of(s.rt.db, free) == (None, None)
        assert (await _claim_of(s.rt.db, held))[1] == "dead-replica"
        await tx.rollback()
    finally:
        await paused.close()
    assert await release_claims(s.rt.db, owners=["dead-replica"]) == 1  # the next call frees the rest
    assert await _claim_of(s.rt.db, held) == (None, None)
    assert await release_claims(s.rt.db, owners=["dead-replica"]) == 0  # nothing finished is touched again


async def _one(db: Database, sql: str) -> str:
    async with db.sessions() as session:
        return str((await session.execute(text(sql))).scalar_one())


async def _claim_of(db: Database, gid: str) -> tuple[object, object]:
    async with db.sessions() as session:
        g = (await session.execute(select(Grant).where(Grant.id == gid))).scalar_one()
        return g.claimed_until, g.claimed_by


async def test_finished_work_carries_no_claim(db_factory: DbFactory, loaded_policy: object,
                                              clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)  # type: ignore[arg-type]
    await s.requests.submit(requester="alice@example.com", eligibility="readonly", duration=timedelta(hours=1),
                            justification="logs")
    await s.worker.run_until_idle()
    clock.advance(timedelta(hours=1, minutes=1))
    await s.worker.run_until_idle()
    async with s.rt.db.sessions() as session:
        grants = (await session.execute(select(Grant))).scalars().all()
        sent = (await session.execute(select(OutboxMessage).where(OutboxMessage.status == "sent"))).scalars().all()
    assert [(g.status, g.claimed_by, g.claimed_until) for g in grants] == [("ended", None, None)]
    assert sent and all(m.claimed_by is None for m in sent)
