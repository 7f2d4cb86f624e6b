"""The memory connector's membership store, persisted in the database."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from storage.db import Database
from storage.tables import Membership

# Built once: a statement built per call costs its construction and cache key every time.
_MEMBERS = select(Membership.user_id).where(Membership.connector == bindparam("b_connector"),
                                            Membership.target == bindparam("b_target"))
_MEMBER = _MEMBERS.where(Membership.user_id == bindparam("b_user"))


class DatabaseMembershipStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def members(self, connector: str, target: str) -> set[str]:
        async with self.db.sessions() as session:
            rows = await session.execute(_MEMBERS, {"b_connector": connector, "b_target": target})
            return set(rows.scalars().all())

    async def add(self, connector: str, target: str, user_id: str) -> bool:
        try:
            async with self.db.transaction() as session:
                exists = (await session.execute(_MEMBER, {"b_connector": connector, "b_target": target,
                                                          "b_user": user_id})).scalar()
                if exists is not None:
                    return False
                session.add(Membership(connector=connector, target=target, user_id=user_id))
                return True
        except IntegrityError:  # another replica added it at the same moment
            return False

    async def remove(self, connector: str, target: str, user_id: str) -> bool:
        async with self.db.transaction() as session:
            result = await session.execute(delete(Membership).where(
                Membership.connector == connector, Membership.target == target, Membership.user_id == user_id))
            return bool(result.rowcount)  # type: ignore[attr-defined]
