"""The memory connector's membership store, persisted in the database."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.db import Database
from storage.tables import Membership

# Core statements, built once (Database.core_transaction / core_reads: storage/core_tx.py)
_TABLE = Membership.__table__  # type: ignore[attr-defined]
_MEMBERS = select(_TABLE.c.user_id).where(_TABLE.c.connector == bindparam("b_connector"),
                                          _TABLE.c.target == bindparam("b_target"))
_MEMBER = _MEMBERS.where(_TABLE.c.user_id == bindparam("b_user"))
# One statement: a row already there (another replica added it at the same moment, too) is left as it is and
# returns nothing.
_ADD = {dialect: insert(_TABLE).values(connector=bindparam("b_connector"), target=bindparam("b_target"),
                                       user_id=bindparam("b_user")).on_conflict_do_nothing().returning(_TABLE.c.user_id)
        for dialect, insert in (("sqlite", sqlite_insert), ("postgresql", pg_insert))}
_REMOVE = delete(_TABLE).where(*_MEMBER.whereclause.clauses).returning(_TABLE.c.user_id)


class DatabaseMembershipStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def members(self, connector: str, target: str) -> set[str]:
        async with self.db.core_reads() as reads:
            return set(await reads.scalars(_MEMBERS, {"b_connector": connector, "b_target": target}))

    async def has(self, connector: str, target: str, user_id: str) -> bool:
        async with self.db.core_reads() as reads:
            return bool(await reads.rows(_MEMBER, {"b_connector": connector, "b_target": target, "b_user": user_id}))

    async def add(self, connector: str, target: str, user_id: str) -> bool:
        add = _ADD["sqlite" if self.db.is_sqlite else "postgresql"]
        async with self.db.core_transaction() as tx:
            return bool(await tx.rows(add, {"b_connector": connector, "b_target": target, "b_user": user_id}))

    async def remove(self, connector: str, target: str, user_id: str) -> bool:
        async with self.db.core_transaction() as tx:
            return bool(await tx.rows(_REMOVE, {"b_connector": connector, "b_target": target, "b_user": user_id}))
