"""Claiming due rows exactly once across workers and replicas (compare-and-set with a lease)."""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.core_tx import CoreTx
from storage.db import ADVISORY_XACT_LOCK, Database
from storage.tables import Grant, OutboxMessage, WorkerHeartbeat

_GRANTS = Grant.__table__  # type: ignore[attr-defined]
_FREE = or_(_GRANTS.c.claimed_until.is_(None), _GRANTS.c.claimed_until < bindparam("b_now"))


def locked_ids(inner: Any, *, skip_locked: bool, of: Any = None) -> Any:
    """The ids ``inner`` (a SELECT … LIMIT n) picks, for ``… WHERE id IN (…)``. With ``skip_locked``
    (PostgreSQL: claimers skip each other's rows instead of waiting) they are locked in a MATERIALIZED
    CTE: as a plain subquery the planner may run it again for further rows, and every run skips what the
    previous one locked, so the claim took every due row instead of n (measured: LIMIT 2 claimed 7)."""
    if not skip_locked:
        return inner.scalar_subquery()
    due = inner.with_for_update(skip_locked=True, of=of).cte("due").prefix_with("MATERIALIZED")
    return select(due.c.id)


_claims: dict[tuple[Any, ...], Any] = {}


def _claim_statement(status: str, due: str, values: tuple[str, ...], excluded: str | None, skip_locked: bool) -> Any:
    """UPDATE grant … RETURNING id for one shape of claim, built once (a statement built per call cost its
    construction and cache key every time, twice a worker pass): every value a bound parameter —
    ``b_now``, ``b_limit``, ``v_<column>`` for each value set, ``x_excluded`` (a list) for ``excluded``."""
    key = (status, due, values, excluded, skip_locked)
    stmt = _claims.get(key)
    if stmt is None:
        due_column = _GRANTS.c[due]
        where = [_GRANTS.c.status == status, due_column <= bindparam("b_now"), _FREE]
        if excluded is not None:
            where.append(_GRANTS.c[excluded].not_in(bindparam("x_excluded", expanding=True)))
        inner = select(_GRANTS.c.id).where(*where).order_by(due_column).limit(bindparam("b_limit"))
        ids = locked_ids(inner, skip_locked=skip_locked)
        stmt = _claims[key] = (
            update(_GRANTS).where(_GRANTS.c.id.in_(ids), _GRANTS.c.status == status, due_column <= bindparam("b_now"),
                                  _FREE)
            .values({**{c: bindparam(f"v_{c}") for c in values}, "claim_token": _GRANTS.c.claim_token + 1})
            .returning(_GRANTS.c.id, _GRANTS.c.claim_token))
    return stmt


class ClaimedIds(list[str]):
    """The ids a claim took (a list, as before), and the token each claim set (``tokens``: id → token):
    the fence a worker checks before it acts on, and records, a claimed grant (bot/services/access/fencing.py)."""

    tokens: dict[str, int]

    def __init__(self, rows: Any) -> None:
        rows = list(rows)
        super().__init__(r[0] for r in rows)
        self.tokens = {r[0]: r[1] for r in rows}


LEASE = timedelta(minutes=5)  # a claim on a grant: a worker that dies holding it frees it when this runs out
FIRST_TOKEN = 1  # the claim token of a claim made by the transaction that creates the row (a new row has 0)


async def claim_grants(db: Database, *, status: str, due_column: Any, now: datetime, lease: timedelta,
                       limit: int, owner: str = "", set_values: dict[str, Any] | None = None,
                       session: AsyncSession | None = None,
                       exclude: tuple[Any, list[str]] | None = None) -> ClaimedIds:
    """Claim up to ``limit`` grants in ``status`` whose ``due_column`` has passed; returns their ids.

    One UPDATE … WHERE id IN (SELECT … [FOR UPDATE SKIP LOCKED]) AND <still claimable> RETURNING id:
    a row is returned to exactly one claimer, and a claim whose lease ran out (crashed worker) is
    claimable again. In its own transaction, or in ``session``'s (the claim then commits with the
    work done on the claimed rows). ``exclude``: (a column, values) — grants whose column holds one of
    them are left alone. Every claim raises the row's ``claim_token`` by one; the result carries the
    tokens (``ClaimedIds.tokens``).
    """
    values = {"claimed_until": now + lease, "claimed_by": owner, **(set_values or {})}
    excluded = exclude if exclude is not None and exclude[1] else None
    stmt = _claim_statement(status, due_column.key, tuple(values), excluded[0].key if excluded else None,
                            skip_locked=not db.is_sqlite)
    params = {"b_now": now, "b_limit": limit, **{f"v_{k}": v for k, v in values.items()}}
    if excluded is not None:
        params["x_excluded"] = list(excluded[1])
    if session is not None:
        return ClaimedIds((await session.execute(stmt, params)).all())
    async with db.core_transaction() as tx:
        return ClaimedIds(await tx.rows(stmt, params))


def holder_key(grant: Any) -> int:
    """The advisory-lock key of ``grant``'s (connector, target, user) membership."""
    return zlib.crc32(f"{grant.connector}|{grant.target_kind}|{grant.target_id}|{grant.user_email}".encode())


async def lock_holder(db: Database, session: AsyncSession | CoreTx, grant: Any) -> None:
    """Serialise decisions about one (connector, target, user) membership across replicas."""
    if db.is_sqlite:
        return
    if isinstance(session, CoreTx):
        await session.rows(ADVISORY_XACT_LOCK, {"k": holder_key(grant)})
    else:
        await session.execute(ADVISORY_XACT_LOCK, {"k": holder_key(grant)})


async def lock_holders(db: Database, session: AsyncSession | CoreTx, grants: Any) -> None:
    """``lock_holder`` for each of several grants' memberships, once each, in ascending key order: two
    transactions that lock several memberships never wait for each other in a circle."""
    if db.is_sqlite:
        return
    for key in sorted({holder_key(g) for g in grants}):
        if isinstance(session, CoreTx):
            await session.rows(ADVISORY_XACT_LOCK, {"k": key})
        else:
            await session.execute(ADVISORY_XACT_LOCK, {"k": key})


# The same membership as a given grant (``holder_params``), as bound parameters: built once, not per call.
HOLDER_BOUND = [Grant.connector == bindparam("h_connector"), Grant.target_kind == bindparam("h_kind"),
                Grant.target_id == bindparam("h_target"), Grant.user_email == bindparam("h_email"),
                Grant.id != bindparam("h_id")]


def holder_params(grant: Any) -> dict[str, Any]:
    return {"h_connector": grant.connector, "h_kind": grant.target_kind, "h_target": grant.target_id,
            "h_email": grant.user_email, "h_id": grant.id}


def _release_statement(model: Any, *, skip_locked: bool) -> Any:
    table = model.__table__
    held = (table.c.claimed_by.in_(bindparam("b_owners", expanding=True)), table.c.claimed_until.is_not(None))
    ids = locked_ids(select(table.c.id).where(*held), skip_locked=skip_locked)
    return update(table).where(table.c.id.in_(ids), *held).values(claimed_until=None, claimed_by=None)


async def release_claims(db: Database, *, owners: list[str]) -> int:
    """Free the live claims held by ``owners`` (this instance after a restart, or instances that died).

    Never waits for a row lock: a row that another transaction holds (a paused replica in the middle of
    its work, until the server ends that transaction: storage/db.py) is skipped and freed by a later
    call — the worker calls this on start and every 30 full passes — so that freeing a dead replica's
    claims can never hold up the caller's revocations."""
    if not owners:
        return 0
    freed = 0
    for model in (Grant, OutboxMessage):  # one short transaction each: no lock held across both
        async with db.core_transaction() as tx:
            freed += len(await tx.rows(_release_statement(model, skip_locked=not db.is_sqlite)
                                       .returning(model.__table__.c.id), {"b_owners": owners}))
    return freed


async def dead_instances(db: Database, *, now: datetime, silent_for: timedelta) -> list[str]:
    """Worker instances whose heartbeat stopped more than ``silent_for`` ago."""
    async with db.sessions() as session:
        rows = await session.execute(select(WorkerHeartbeat.worker_id)
                                     .where(WorkerHeartbeat.beat_at < now - silent_for))
        return list(rows.scalars().all())
