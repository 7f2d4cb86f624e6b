"""Who is in which group: resolved through the directory connector, cached with a TTL.

"Is this person in G?" (``contains``: may they request, approve, administer) is answered from the
person's side — their account and the groups they belong to (``MembershipReader.groups_of``, else one
``is_member`` per group) — so it costs a few IdP calls whatever the size of G, and is cached per person.
Whole groups are listed (``group_members``, ``expand``) only where the whole group is needed: approver
fan-out, reconciliation, reviews, transition.

Concurrent misses of one key share one IdP call (a burst of requests after a start or an expiry would
otherwise send the same call once per request — against an IdP that rate-limits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from bot.domain.policy import Policy, Principals
from bot.services.clock import Clock
from connectors.base import Connector, IdpUser, membership_reader, parse_target_ref

T = TypeVar("T")


class Directory:
    def __init__(self, connectors: Mapping[str, Connector], clock: Clock) -> None:
        self.connectors = connectors
        self.clock = clock
        self._groups: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}
        self._users: dict[tuple[str, str], tuple[float, IdpUser | None]] = {}
        self._in_group: dict[tuple[str, str, str], tuple[float, bool]] = {}  # (connector, email, group)
        self._groups_of_policy: tuple[Policy | None, frozenset[str]] = (None, frozenset())
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}
        self._generation = 0  # bumped by ``invalidate``: a read started before it is not cached

    def invalidate(self) -> None:
        self._groups.clear()
        self._users.clear()
        self._in_group.clear()
        self._inflight.clear()
        self._generation += 1

    async def _shared(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        """``fetch()``, or the same call already under way for ``key``. A waiter that is cancelled does
        not cancel the call the others wait for."""
        task = self._inflight.get(key)
        if task is None:
            task = self._inflight[key] = asyncio.ensure_future(fetch())
            task.add_done_callback(lambda t: self._done(key, t))
        result: T = await asyncio.shield(task)
        return result

    def _done(self, key: Hashable, task: asyncio.Future[Any]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: its waiters (if any are left) raise it themselves

    async def group_members(self, policy: Policy, group: str) -> frozenset[str]:
        """Emails (lower case) of ``group``'s active members at the policy's directory connector (a member
        whose account the listing says is suspended or disabled is left out)."""
        conn_name = policy.directory_connector
        key = (conn_name, group)
        ttl = policy.settings.membership_cache_ttl.total_seconds()
        now = self.clock.now().timestamp()
        hit = self._groups.get(key)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        generation = self._generation

        async def fetch() -> frozenset[str]:
            members = frozenset(u.email.lower() for u in await self.connectors[conn_name].list_members(group)
                                if u.active)  # a suspended or disabled account counts in no group
            if generation == self._generation:
                self._groups[key] = (now, members)
            return members

        return await self._shared(("group", *key), fetch)

    async def expand(self, policy: Policy, principals: Principals) -> set[str]:
        people = set(principals.users)
        for group in principals.groups:
            people |= await self.group_members(policy, group)
        return people

    def forget_person(self, email: str) -> None:
        """Drop what is cached about one person's groups (jitbot just changed one of their memberships)."""
        email = email.lower()
        for key in [k for k in self._in_group if k[1] == email]:
            del self._in_group[key]

    async def contains(self, policy: Policy, principals: Principals, email: str) -> bool:
        """Whether ``email`` is one of ``principals``: named, or in one of their groups (never when the
        provider says the account is suspended or disabled) — read from the person's side (a few IdP
        calls, cached per person and group for ``membership_cache_ttl``), never by listing the groups."""
        email = email.lower()
        if email in principals.users:
            return True
        if not principals.groups:
            return False
        conn_name = policy.directory_connector
        ttl = policy.settings.membership_cache_ttl.total_seconds()
        now = self.clock.now().timestamp()
        known = {g: hit[1] for g in principals.groups
                 if (hit := self._in_group.get((conn_name, email, g))) is not None and now - hit[0] < ttl}
        if any(known.values()):
            return True
        missing = [g for g in principals.groups if g not in known]
        if not missing:
            return False
        user = await self.find_user(conn_name, email)
        if user is None or not user.active:  # a suspended or disabled account counts in no group
            return False
        if (held := await self._groups_of(policy, conn_name, email, user, missing, ttl)) is not None:
            return any(g in held for g in missing)
        for group in missing:
            if await self._is_member(conn_name, email, user, group):
                return True
        return False

    def _policy_groups(self, policy: Policy) -> frozenset[str]:
        """Every group the policy names for people (requestors, delegates, approvers, admins, …): one read
        of a person's side answers all of them, so later questions about that person cost nothing."""
        if self._groups_of_policy[0] is not policy:
            found: set[str] = set()

            def walk(value: object) -> None:
                if isinstance(value, Principals):
                    found.update(value.groups)
                elif isinstance(value, BaseModel):
                    for name in type(value).model_fields:
                        walk(getattr(value, name))
                elif isinstance(value, list | tuple):
                    for item in value:
                        walk(item)

            walk(policy)
            self._groups_of_policy = (policy, frozenset(found))
        return self._groups_of_policy[1]

    async def _groups_of(self, policy: Policy, conn_name: str, email: str, user: IdpUser, missing: list[str],
                         ttl: float) -> frozenset[str] | None:
        """Which of the policy's groups (``missing`` first) the person is in, in one read of their side,
        each answer cached; None when the connector cannot read a person's groups."""
        reader = membership_reader(self.connectors[conn_name])
        if reader is None:
            return None
        now = self.clock.now().timestamp()
        fresh = {g for g in self._policy_groups(policy)
                 if (hit := self._in_group.get((conn_name, email, g))) is not None and now - hit[0] < ttl}
        among = tuple(sorted(set(missing) | (self._policy_groups(policy) - fresh)))
        generation = self._generation

        async def fetch() -> frozenset[str] | None:
            held = await reader.groups_of(user, among)
            if held is not None and generation == self._generation:
                for group in among:
                    self._in_group[(conn_name, email, group)] = (now, group in held)
            return held

        return await self._shared(("held", conn_name, email, among), fetch)

    async def _is_member(self, conn_name: str, email: str, user: IdpUser, group: str) -> bool:
        key = (conn_name, email, group)
        now = self.clock.now().timestamp()
        generation = self._generation

        async def fetch() -> bool:
            member = await self.connectors[conn_name].is_member(user, parse_target_ref(group))
            if generation == self._generation:
                self._in_group[key] = (now, member)
            return member

        return await self._shared(("in", *key), fetch)

    async def find_user(self, connector: str, email: str) -> IdpUser | None:
        key = (connector, email.lower())
        now = self.clock.now().timestamp()
        hit = self._users.get(key)
        if hit is not None and now - hit[0] < 300:
            return hit[1]
        generation = self._generation

        async def fetch() -> IdpUser | None:
            user = await self.connectors[connector].find_user(email)
            if generation == self._generation:
                self._users[key] = (now, user)
            return user

        return await self._shared(("user", *key), fetch)

    async def is_admin(self, policy: Policy, email: str) -> bool:
        return await self.contains(policy, policy.admins, email)
