"""In-memory connector: users and groups declared in the policy file.

Membership changes go through a ``MembershipStore`` so that, with the database-backed store from
``storage``, they survive restarts. It is the embedded default for demos, the playground and tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from connectors.base import (
    READ_ONLY,
    Check,
    ConfigError,
    GrantResult,
    GroupInfo,
    IdpUser,
    NotFound,
    Target,
    Usage,
    parse_target_ref,
)


class MembershipStore(Protocol):
    """Where the memory connector keeps memberships (target key → user ids)."""

    async def members(self, connector: str, target: str) -> set[str]: ...

    async def has(self, connector: str, target: str, user_id: str) -> bool: ...

    async def add(self, connector: str, target: str, user_id: str) -> bool: ...

    async def remove(self, connector: str, target: str, user_id: str) -> bool: ...


class DictMembershipStore:
    """A process-local store, for unit tests."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], set[str]] = {}

    async def members(self, connector: str, target: str) -> set[str]:
        return set(self._data.get((connector, target), set()))

    async def has(self, connector: str, target: str, user_id: str) -> bool:
        return user_id in self._data.get((connector, target), set())

    async def add(self, connector: str, target: str, user_id: str) -> bool:
        bucket = self._data.setdefault((connector, target), set())
        if user_id in bucket:
            return False
        bucket.add(user_id)
        return True

    async def remove(self, connector: str, target: str, user_id: str) -> bool:
        bucket = self._data.get((connector, target), set())
        if user_id not in bucket:
            return False
        bucket.discard(user_id)
        return True


class MemoryUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str
    name: str = ""


class MemoryConfig(BaseModel):
    """Settings of a ``type: memory`` connector."""

    model_config = ConfigDict(extra="forbid")
    type: str = "memory"
    users: list[MemoryUser] = Field(default_factory=list)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    roles: list[str] = Field(default_factory=list)


class MemoryConnector:
    """A connector whose directory is the policy file and whose memberships live in a store."""

    def __init__(self, name: str, config: MemoryConfig, store: MembershipStore | None = None) -> None:
        self.name = name
        self._config = config
        self._store: MembershipStore = store or DictMembershipStore()
        self._users = {u.email.lower(): IdpUser(id=u.email.lower(), email=u.email.lower(),
                                                display_name=u.name or u.email) for u in config.users}
        for group, emails in config.groups.items():
            for email in emails:
                if email.lower() not in self._users:
                    raise ConfigError(f"memory connector {name!r}: group {group!r} lists unknown user {email!r}")
        self._seeded = False
        self._seed_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, name: str, settings: dict[str, Any],
                      store: MembershipStore | None = None) -> MemoryConnector:
        return cls(name, MemoryConfig.model_validate(settings), store)

    @property
    def users(self) -> Iterable[IdpUser]:
        return self._users.values()

    @property
    def declared_groups(self) -> list[str]:
        return list(self._config.groups)

    def _known_target(self, target: Target) -> str:
        if target.kind.value == "group" and target.id in self._config.groups:
            return str(target)
        if target.kind.value == "role" and target.id in self._config.roles:
            return str(target)
        raise NotFound(f"{self.name}: no {target.kind.value} {target.id!r}",
                       user_message=f"The {target.kind.value} {target.id} does not exist.")

    async def _seed(self) -> None:
        # Declared members are standing access: they are put in the store once, on first use.
        if self._seeded:
            return
        async with self._seed_lock:  # concurrent first calls must all wait for the seeding to finish
            if self._seeded:
                return
            await self._seed_store()
            self._seeded = True

    async def _seed_store(self) -> None:
        for group, emails in self._config.groups.items():
            key = f"group:{group}"
            if await self._store.has(self.name, f"__seeded__:{key}", "yes"):
                continue
            for email in emails:
                await self._store.add(self.name, key, email.lower())
            await self._store.add(self.name, f"__seeded__:{key}", "yes")

    async def check(self, usage: Usage = READ_ONLY) -> list[Check]:
        return [Check("directory", True, f"{len(self._users)} users, {len(self._config.groups)} groups declared")]

    async def find_user(self, email: str) -> IdpUser | None:
        return self._users.get(email.strip().lower())

    async def list_members(self, group: str) -> list[IdpUser]:
        await self._seed()
        key = self._known_target(parse_target_ref(group))
        ids = await self._store.members(self.name, key)
        return sorted((self._users[i] for i in ids if i in self._users), key=lambda u: u.email)

    async def list_groups(self) -> list[GroupInfo]:
        """The declared groups, with their current member counts."""
        return [GroupInfo(id=g, name=g, member_count=len(await self.list_members(f"group:{g}")))
                for g in self._config.groups]

    async def grant(self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        await self._seed()
        key = self._known_target(target)
        if user.id not in self._users:
            raise NotFound(f"{self.name}: no user {user.id!r}")
        added = await self._store.add(self.name, key, user.id)
        return GrantResult(added=added)

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        await self._seed()
        key = self._known_target(target)
        await self._store.remove(self.name, key, user.id)

    async def is_member(self, user: IdpUser, target: Target) -> bool:
        await self._seed()
        key = self._known_target(target)
        return await self._store.has(self.name, key, user.id)  # one membership, not the target's list

    async def aclose(self) -> None:
        return None
