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
        return [d for d in compare_metadata(ctx, SQLModel.metadata)
                if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")]

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
