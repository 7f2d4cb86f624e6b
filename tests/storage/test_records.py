"""Model rows through a Core transaction (storage/records.py): stored as the ORM stores them, only
changed columns written back, new rows inserted in the order they were added."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import IntegrityError

from storage import records
from storage.core_tx import CoreTx
from storage.db import Database
from storage.records import Unit, build
from storage.tables import AccessRequest, ApprovalVote, Grant
from tests.conftest import DbFactory

AT = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
REQUESTS = AccessRequest.__table__  # type: ignore[attr-defined]
GRANTS = Grant.__table__  # type: ignore[attr-defined]
VOTES = ApprovalVote.__table__  # type: ignore[attr-defined]
REQUEST = select(REQUESTS).where(REQUESTS.c.id == bindparam("b_id"))
VOTES_OF = select(VOTES).where(VOTES.c.request_id == bindparam("b_id")).order_by(VOTES.c.id)


def _request(rid: str, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "eligibility": "prod-admin", "requester": "ana@example.com", "duration_s": 3600,
            "justification": "INC-1 — fix ✓", "status": "pending", "layers": 2, "created_at": AT,
            "updated_at": AT, "layer_deadline": AT + timedelta(hours=1), "after_hours": True, **extra}


async def _stored(db: Database, table: str, key: str) -> tuple[Any, ...]:
    """A row as the database holds it (text and types untouched by any processor), less its key."""
    async with db.sessions() as session:
        row = (await session.execute(text(f'SELECT * FROM "{table}" WHERE id = :k'), {"k": key})).one()
    return tuple(row)[1:]


async def _store(db: Database, *rows: Any) -> None:
    """Insert ``rows`` (model objects, in order) in one Core transaction."""
    async with db.core_transaction() as tx:
        unit = Unit(tx)
        for row in rows:
            unit.add(row)
        await unit.flush()


class Spy(CoreTx):
    """Passes statements on and keeps the parameters each write sent."""

    def __init__(self, tx: CoreTx) -> None:
        self.tx, self.info = tx, tx.info
        self.sent: list[dict[str, Any]] = []

    async def rows(self, statement: Any, params: Any = None) -> list[Any]:
        return await self.tx.rows(statement, params)

    async def many(self, statement: Any, params: Any) -> None:
        self.sent.extend(dict(p) for p in params)
        await self.tx.many(statement, params)


async def test_a_row_is_stored_as_the_orm_stores_it(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    async with db.transaction() as session:
        session.add(AccessRequest(**_request("R-orm")))
    by_orm = await _stored(db, "access_request", "R-orm")
    async with db.transaction() as session:  # one pending request per person and eligibility: make room
        await session.execute(text("DELETE FROM access_request WHERE id = 'R-orm'"))
    await _store(db, build(AccessRequest, **_request("R-core")))
    assert await _stored(db, "access_request", "R-core") == by_orm


async def test_build_gives_the_fields_defaults_and_refuses_unknown_columns() -> None:
    req = build(AccessRequest, **_request("R-1"))
    assert (req.kind, req.layer, req.escalated, req.version, req.decided_at) == ("access", 1, False, 0, None)
    assert req.after_hours is True and req.created_at == AT
    with pytest.raises(TypeError, match="no column statuss"):
        build(AccessRequest, statuss="pending")


async def test_loaded_rows_come_back_typed_and_only_changed_columns_are_written(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    await _store(db, build(AccessRequest, **_request("R-1")))
    async with db.core_transaction() as tx:
        spy = Spy(tx)
        unit = Unit(spy)
        req = await unit.first(AccessRequest, REQUEST, {"b_id": "R-1"})
        assert req is not None
        assert (req.created_at, req.after_hours, req.escalated, req.justification) == (AT, True, False,
                                                                                      "INC-1 — fix ✓")
        req.status, req.updated_at, req.version = "approved", AT + timedelta(minutes=5), req.version + 1
        req.layer_deadline = None
        req.escalated = False  # set to what it was: not a change
        await unit.flush()
        await unit.flush()  # nothing changed since: nothing sent
    assert spy.sent == [{"v_status": "approved", "v_updated_at": AT + timedelta(minutes=5), "v_version": 1,
                         "v_layer_deadline": None, "b_id": "R-1"}]
    async with db.core_reads() as reads:
        again = await Unit(reads).first(AccessRequest, REQUEST, {"b_id": "R-1"})
    assert again is not None
    assert (again.status, again.version, again.layer_deadline, again.updated_at) == (
        "approved", 1, None, AT + timedelta(minutes=5))


async def test_new_rows_are_inserted_in_the_order_added(db_factory: DbFactory) -> None:
    """A grant refers to its request: added after it, both are written; added before it, the foreign key
    refuses the grant (the order is the caller's)."""
    db = db_factory()
    await db.migrate()
    grant = {"request_id": "R-1", "connector": "okta", "target_kind": "group", "target_id": "g1",
             "user_email": "ana@example.com", "status": "granting", "next_attempt_at": AT}
    with pytest.raises(IntegrityError):
        async with db.core_transaction() as tx:
            unit = Unit(tx)
            unit.add(build(Grant, id="G-0", **grant))
            unit.add(build(AccessRequest, **_request("R-1")))
            await unit.flush()
    async with db.core_transaction() as tx:
        unit = Unit(tx)
        unit.add(build(AccessRequest, **_request("R-1")))
        unit.add(build(Grant, id="G-1", **grant))
        for approver in ("bo@example.com", "cy@example.com"):  # the database numbers them
            unit.add(build(ApprovalVote, request_id="R-1", layer=1, approver=approver, decision="approve", at=AT))
        await unit.flush()
    async with db.core_reads() as reads:
        unit = Unit(reads)
        votes = await unit.all(ApprovalVote, VOTES_OF, {"b_id": "R-1"})
        assert await reads.scalars(select(GRANTS.c.id)) == ["G-1"]
    assert [v.approver for v in votes] == ["bo@example.com", "cy@example.com"]
    assert votes[0].id is not None and votes[1].id == votes[0].id + 1


async def test_a_duplicate_vote_fails_at_flush_and_the_transaction_writes_nothing(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    await _store(db, build(AccessRequest, **_request("R-1")),
                 build(ApprovalVote, request_id="R-1", layer=1, approver="bo@example.com", decision="approve", at=AT))
    with pytest.raises(IntegrityError):
        async with db.core_transaction() as tx:
            unit = Unit(tx)
            req = await unit.first(AccessRequest, REQUEST, {"b_id": "R-1"})
            assert req is not None
            req.status = "approved"
            unit.add(build(ApprovalVote, request_id="R-1", layer=1, approver="bo@example.com", decision="deny",
                           at=AT))
            await unit.flush()
    async with db.core_reads() as reads:
        assert await reads.scalars(select(REQUESTS.c.status)) == ["pending"]
        assert await reads.scalars(select(VOTES.c.decision)) == ["approve"]


def test_update_statements_are_built_once_per_set_of_columns() -> None:
    assert records._update(REQUESTS, ("status",)) is records._update(REQUESTS, ("status",))
    assert records._update(REQUESTS, ("status",)) is not records._update(REQUESTS, ("status", "version"))


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "analyzed"])
async def test_the_pending_duplicate_check_reads_the_requesters_rows_not_every_request(
        tmp_path: Any, analyzed: bool) -> None:
    """Every submission asks whether the requester already has a pending request for the eligibility.
    Without an index on those columns SQLite picked ``ix_request_review_due`` for ``kind = ?`` and read
    every access request ever made (migration 0008)."""
    from bot.services.requesting.submission_checks import _OPEN_DUPLICATE
    from storage.core_tx import SqliteCore
    from storage.prepared import Prepared

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'jit.db'}")
    await db.migrate()
    try:
        async with db.core_transaction() as tx:
            unit = Unit(tx)
            for i in range(400):  # a history: everyone's requests of the same eligibility, long decided
                unit.add(build(AccessRequest, **_request(f"R-{i}", requester=f"u{i % 40}@example.com",
                                                         status="expired")))
            await unit.flush()
            assert isinstance(tx, SqliteCore)
            if analyzed:
                tx.connection.execute("ANALYZE")
        statement, values = Prepared(_OPEN_DUPLICATE, db.engine.dialect)._params(
            {"b_requester": "u1@example.com", "b_elig": "prod-admin"})
        async with db.core_reads() as reads:
            assert isinstance(reads, SqliteCore)
            plan = " | ".join(row[3] for row in reads.connection.execute("EXPLAIN QUERY PLAN " + statement, values))
        assert "ix_request_open" in plan, plan
    finally:
        await db.dispose()


def test_a_built_row_can_be_read_before_the_process_has_made_any_orm_query() -> None:
    """``build`` makes objects as the ORM loads rows, without the ORM's first query, which is what set up
    the models' attributes: in a fresh process (a break-glass as the first thing a restarted bot did)
    reading a field failed. A new interpreter, since this one's ORM was set up long ago."""
    import subprocess
    import sys

    code = ("from storage.records import build\nfrom storage.tables import AccessRequest\n"
            "print(build(AccessRequest, id='R-1', eligibility='db-admin').eligibility)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "db-admin"
