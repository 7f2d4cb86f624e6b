"""The directory's cache: one IdP call per key however many ask at once."""

from __future__ import annotations

import asyncio

import pytest

from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from bot.services.directory import Directory
from connectors.base import IdpUser

POLICY = parse_policy("""
audit_channel: "#jit-audit"
connectors:
  idp: {type: memory}
eligibilities:
  - {name: ops, connector: idp, target: {group: target}, requestors: {groups: [engineers]}, max_duration: 1h}
""", env={}).policy


class GatedIdp:
    """Answers member listings and user lookups once ``gate`` is set; counts the calls."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.listings = 0
        self.lookups = 0
        self.fail: Exception | None = None
        self.members = ["Ann@example.com"]
        self.hold: asyncio.Event | None = None  # a gate for the next listing alone

    async def list_members(self, group: str) -> list[IdpUser]:
        self.listings += 1
        members, hold = list(self.members), self.hold  # the group as it is when asked
        await (hold or self.gate).wait()
        if self.fail is not None:
            raise self.fail
        return [IdpUser(id=str(i), email=e) for i, e in enumerate(members)]

    async def find_user(self, email: str) -> IdpUser | None:
        self.lookups += 1
        await self.gate.wait()
        return IdpUser(id="1", email=email)


async def _started(*coros: object) -> list[asyncio.Task[object]]:
    tasks = [asyncio.ensure_future(c) for c in coros]  # type: ignore[arg-type]
    for _ in range(3):
        await asyncio.sleep(0)  # each has asked
    return tasks


@pytest.fixture
def idp() -> GatedIdp:
    return GatedIdp()


@pytest.fixture
def directory(idp: GatedIdp, clock: ManualClock) -> Directory:
    return Directory({"idp": idp}, clock)  # type: ignore[dict-item]


async def test_concurrent_misses_share_one_listing_and_one_lookup(idp: GatedIdp, directory: Directory) -> None:
    groups = await _started(*(directory.group_members(POLICY, "engineers") for _ in range(20)))
    users = await _started(*(directory.find_user("idp", "ann@example.com") for _ in range(20)))
    idp.gate.set()
    assert {frozenset(r) for r in await asyncio.gather(*groups)} == {frozenset({"ann@example.com"})}  # type: ignore[arg-type]
    assert len({id(u) for u in await asyncio.gather(*users)}) == 1
    assert idp.listings == 1 and idp.lookups == 1
    assert await directory.group_members(POLICY, "engineers") == {"ann@example.com"}  # cached now
    assert idp.listings == 1


async def test_a_cancelled_waiter_leaves_the_shared_call_to_the_others(idp: GatedIdp, directory: Directory) -> None:
    first, second = await _started(directory.group_members(POLICY, "engineers"),
                                   directory.group_members(POLICY, "engineers"))
    first.cancel()
    idp.gate.set()
    assert await second == {"ann@example.com"} and idp.listings == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_failed_call_fails_its_waiters_and_is_not_cached(idp: GatedIdp, directory: Directory) -> None:
    idp.fail = RuntimeError("IdP down")
    waiters = await _started(*(directory.group_members(POLICY, "engineers") for _ in range(3)))
    idp.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and idp.listings == 1
    idp.fail = None
    assert await directory.group_members(POLICY, "engineers") == {"ann@example.com"}
    assert idp.listings == 2


async def test_a_listing_under_way_at_invalidation_is_not_cached(idp: GatedIdp, directory: Directory) -> None:
    idp.gate.set()
    idp.members = ["ann@example.com"]
    slow = asyncio.Event()
    idp.hold = slow  # this listing answers only when told: it read the group before the change
    (before,) = await _started(directory.group_members(POLICY, "engineers"))
    idp.hold, idp.members = None, ["bob@example.com"]
    directory.invalidate()  # a policy reload after the group changed
    assert await directory.group_members(POLICY, "engineers") == {"bob@example.com"}  # did not join the old read
    slow.set()
    assert await before == {"ann@example.com"}  # the old read answers last…
    assert await directory.group_members(POLICY, "engineers") == {"bob@example.com"}  # …and was not kept
    assert idp.listings == 2
