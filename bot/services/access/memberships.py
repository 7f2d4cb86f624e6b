"""The memory connector's membership store, persisted in the database."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError

from storage.db import Database
from storage.tables import Membership

# Core statements, built once (Database.core_transaction / core_reads: storage/core_tx.py)
_TABLE = Membership.__table__  # type: ignore[attr-defined]
_MEMBERS = select(_TABLE.c.user_id).where(_TABLE.c.connector == bindparam("b_connector"),
                                          _TABLE.c.target == bindparam("b_target"))
_MEMBER = _MEMBERS.where(_TABLE.c.user_id == bindparam("b_user"))
_ADD = insert(_TABLE)
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
        key = {"b_connector": connector, "b_target": target, "b_user": user_id}
        try:
            async with self.db.core_transaction() as tx:
                if await tx.rows(_MEMBER, key):
                    return False
                await tx.many(_ADD, [{"connector": connector, "target": target, "user_id": user_id}])
                return True
        except IntegrityError:  # another replica added it at the same moment
            return False

    async def remove(self, connector: str, target: str, user_id: str) -> bool:
        async with self.db.core_transaction() as tx:
            return bool(await tx.rows(_REMOVE, {"b_connector": connector, "b_target": target, "b_user": user_id}))
