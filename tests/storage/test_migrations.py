"""The Alembic revisions build exactly the schema the SQLModel tables describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import storage.tables  # noqa: F401  (registers the tables)
from tests.conftest import DbFactory


async def test_migrated_schema_matches_the_tables(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()

    def diff(conn: Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        # alembic's own table, and the audit chain's staging table on PostgreSQL (migration 0007: no model)
        return [d for d in compare_metadata(ctx, SQLModel.metadata)
                if not (isinstance(d, tuple) and d[0] == "remove_table"
                        and d[1].name in ("alembic_version", "event_pending"))]

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_every_revision_downgrades_and_upgrades_again(db_factory: DbFactory) -> None:
    """Down to the first revision and back up (on PostgreSQL this drops and recreates the audit chain's
    append function, migration 0006); the chain still appends afterwards."""
    from pathlib import Path

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from bot.services.auditing.audit import append_event, verify_chain
    from bot.services.clock import ManualClock

    db = db_factory()
    await db.migrate()
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(storage.tables.__file__).parent / "migrations"))

    def run(conn: Connection, step: str, target: str) -> None:
        cfg.attributes["connection"] = conn
        getattr(command, step)(cfg, target)

    def functions(conn: Connection) -> list[str]:
        if conn.dialect.name == "sqlite":
            return []
        return sorted(conn.execute(text(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.proname LIKE 'jitbot%' AND n.nspname = current_schema()")).scalars())

    at_head = [] if db.is_sqlite else ["jitbot_link_event"]
    async with db.engine.begin() as conn:
        assert await conn.run_sync(functions) == at_head
        await conn.run_sync(run, "downgrade", "0006")
        assert await conn.run_sync(functions) == ([] if db.is_sqlite else ["jitbot_append_events"])
        await conn.run_sync(run, "downgrade", "0005")
        assert await conn.run_sync(functions) == []
        await conn.run_sync(run, "downgrade", "base")
        await conn.run_sync(run, "upgrade", "head")
        assert await conn.run_sync(functions) == at_head
    clock = ManualClock()
    async with db.transaction() as session:
        await append_event(session, at=clock.now(), kind="after_round_trip", actor="a")
    assert (await verify_chain(db)).ok


async def test_duplicate_pending_requests_stop_the_one_pending_upgrade_with_their_ids(db_factory: DbFactory) -> None:
    """Migration 0009 adds uq_request_one_pending; pending duplicates made before it are named, and
    left for someone to decide (the upgrade changes no request itself)."""
    from datetime import UTC, datetime
    from pathlib import Path

    import pytest
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    db = db_factory()
    await db.migrate()
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(storage.tables.__file__).parent / "migrations"))

    def run(conn: Connection, step: str, target: str) -> None:
        cfg.attributes["connection"] = conn
        getattr(command, step)(cfg, target)

    insert = text("INSERT INTO access_request (id, kind, eligibility, requester, duration_s, justification, "
                  "status, layer, layers, created_at, updated_at, escalated, after_hours, version) VALUES "
                  "(:id, 'access', 'db-admin', 'alice@example.com', 600, 'x', 'pending', 1, 1, :at, :at, "
                  "false, false, 0)")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    async with db.engine.begin() as conn:
        await conn.run_sync(run, "downgrade", "0008")
        for rid in ("R-ONE", "R-TWO"):
            await conn.execute(insert, {"id": rid, "at": at})
    with pytest.raises(RuntimeError, match=r"R-ONE \(alice@example.com, db-admin\), R-TWO"):
        async with db.engine.begin() as conn:
            await conn.run_sync(run, "upgrade", "head")
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE access_request SET status = 'cancelled' WHERE id = 'R-TWO'"))
        await conn.run_sync(run, "upgrade", "head")
        with pytest.raises(Exception, match="(?i)unique"):
            async with conn.begin_nested():
                await conn.execute(insert, {"id": "R-THREE", "at": at})


async def test_replicas_starting_together_migrate_one_after_the_other(db_factory: DbFactory) -> None:
    """Three engines on one empty database migrate at once: on PostgreSQL the advisory lock makes the
    later ones wait and find the schema at head (without it they race to create the same tables); on
    SQLite one writer at a time. Every one succeeds, and the schema is at head once."""
    import asyncio

    from sqlalchemy import text

    dbs = [db_factory() for _ in range(3)]
    await asyncio.gather(*(db.migrate() for db in dbs))
    async with dbs[0].engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    assert len(versions) == 1
