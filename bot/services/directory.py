"""Who is in which group: resolved through the directory connector, cached with a TTL."""

from __future__ import annotations

from collections.abc import Mapping

from bot.domain.policy import Policy, Principals
from bot.services.clock import Clock
from connectors.base import Connector, IdpUser


class Directory:
    def __init__(self, connectors: Mapping[str, Connector], clock: Clock) -> None:
        self.connectors = connectors
        self.clock = clock
        self._groups: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}
        self._users: dict[tuple[str, str], tuple[float, IdpUser | None]] = {}

    def invalidate(self) -> None:
        self._groups.clear()
        self._users.clear()

    async def group_members(self, policy: Policy, group: str) -> frozenset[str]:
        """Emails (lower case) of ``group`` at the policy's directory connector."""
        conn_name = policy.directory_connector
        key = (conn_name, group)
        ttl = policy.settings.membership_cache_ttl.total_seconds()
        now = self.clock.now().timestamp()
        hit = self._groups.get(key)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        members = frozenset(u.email.lower() for u in await self.connectors[conn_name].list_members(group))
        self._groups[key] = (now, members)
        return members

    async def expand(self, policy: Policy, principals: Principals) -> set[str]:
        people = set(principals.users)
        for group in principals.groups:
            people |= await self.group_members(policy, group)
        return people

    async def contains(self, policy: Policy, principals: Principals, email: str) -> bool:
        email = email.lower()
        if email in principals.users:
            return True
        for group in principals.groups:
            if email in await self.group_members(policy, group):
                return True
        return False

    async def find_user(self, connector: str, email: str) -> IdpUser | None:
        key = (connector, email.lower())
        now = self.clock.now().timestamp()
        hit = self._users.get(key)
        if hit is not None and now - hit[0] < 300:
            return hit[1]
        user = await self.connectors[connector].find_user(email)
        self._users[key] = (now, user)
        return user

    async def is_admin(self, policy: Policy, email: str) -> bool:
        return await self.contains(policy, policy.admins, email)
