"""A 100,000-member requestor group costs a few IdP calls per person, not a listing of the group.

Counted at the strict fake Okta and fake Entra (their own request logs), through the real connectors
and the resilience wrapper, as the `/jit` modal asks: which eligibilities may this person request?
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest

from bot.bootstrap import build_connectors
from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from bot.services.directory import Directory
from connectors.base import parse_target_ref
from connectors.memory import DictMembershipStore, MemoryConnector
from tests.conftest import DbFactory
from tests.connectors.idp_fixtures import (
    as_yaml,
    entra_fake,
    entra_settings,
    isolate_okta_sdk,
    okta_fake,
    okta_settings,
)
from tests.fakes.idp.entra import FakeEntra
from tests.fakes.idp.okta import FakeOkta
from tests.services.stack import make_stack

MEMBERS = 100_000
OTHER_GROUPS = 1_000
MAX_COLD_CALLS = 4


def _populate(fake: FakeOkta | FakeEntra, add_user: Callable[[str], str]) -> None:
    """``engineers`` of 100,000 people (the first of them is alice), 1,000 small groups beside it; alice
    is also in two of those. ``outsider`` is in none of the policy's groups."""
    ids = [add_user(f"user{i}@example.com") for i in range(MEMBERS)]
    alice = add_user("alice@example.com")
    add_user("outsider@example.com")
    fake.add_group("engineers", [alice, *ids])
    for g in range(OTHER_GROUPS):
        fake.add_group(f"team-{g}", [alice] if g in (7, 99) else ids[g * 10:g * 10 + 10])


def _policy(connector_yaml: str) -> str:
    eligibilities = "".join(
        f"  - {{name: e{i}, connector: idp, target: {{group: team-{i}}}, requestors: {{groups: [{group}]}},"
        f" max_duration: 1h}}\n"
        for i, group in enumerate(["engineers", "team-7", "team-500", "engineers", "team-99"]))
    return ('audit_channel: "#jit-audit"\ndirectory: idp\nconnectors:\n' + connector_yaml
            + "eligibilities:\n" + eligibilities)


@asynccontextmanager
async def _okta() -> AsyncIterator[tuple[Any, str]]:
    async with okta_fake(page_size=200) as (fake, ca_file):
        _populate(fake, fake.add_user)
        yield fake, as_yaml("idp", okta_settings(fake, ca_file))


@asynccontextmanager
async def _entra() -> AsyncIterator[tuple[Any, str]]:
    async with entra_fake(page_size=100) as (fake, ca_file):
        _populate(fake, lambda email: fake.add_user(email, email.split("@")[0]))
        yield fake, as_yaml("idp", entra_settings(fake, ca_file))


PROVIDERS = {"okta": _okta, "entra": _entra}


@pytest.fixture(params=sorted(PROVIDERS))
async def idp(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
              tmp_path: os.PathLike[str]) -> AsyncIterator[tuple[Any, str]]:
    isolate_okta_sdk(monkeypatch, tmp_path)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    async with PROVIDERS[request.param]() as pair:
        yield pair


async def test_which_eligibilities_a_person_may_request_costs_at_most_four_idp_calls_cold_and_none_warm(
        idp: tuple[Any, str], clock: ManualClock) -> None:
    fake, connector_yaml = idp
    loaded = parse_policy(_policy(connector_yaml), source="test", env={})
    policy = loaded.policy
    connectors = build_connectors(loaded, None)  # type: ignore[arg-type]  # no memory connector: no store
    directory = Directory(connectors, clock)
    try:
        async def requestable(email: str) -> list[str]:
            return [e.name for e in policy.eligibilities if await directory.contains(policy, e.requestors, email)]

        # The process's first question also resolves the policy's group names to ids (Entra; once per
        # process, ids in the policy avoid it): a person's own cost is measured after it.
        assert await requestable("outsider@example.com") == []
        before = fake.api_calls
        assert await requestable("alice@example.com") == ["e0", "e1", "e3", "e4"]
        cold = fake.api_calls - before
        assert cold <= MAX_COLD_CALLS, fake.requests[before:]

        before = fake.api_calls
        assert await requestable("alice@example.com") == ["e0", "e1", "e3", "e4"]
        assert fake.api_calls == before  # warm: cached per person

        before = fake.api_calls
        assert await requestable("user123@example.com") == ["e0", "e3"]  # deep inside the big group
        assert fake.api_calls - before <= MAX_COLD_CALLS
        before = fake.api_calls
        assert await requestable("outsider@example.com") == []  # cached: no call
        assert await requestable("nobody@example.com") == []  # no account at all: one lookup
        assert fake.api_calls - before <= 1
        assert not any(path.endswith(("/users", "/members")) and "groups/" in path
                       for _, path in fake.requests), "a group was listed"
    finally:
        for conn in connectors.values():
            await conn.aclose()


async def test_jitbot_forgets_a_persons_groups_when_it_changes_one_of_their_memberships(clock: ManualClock) -> None:
    loaded = parse_policy("""
audit_channel: "#jit-audit"
connectors:
  idp:
    type: memory
    users: [{email: ann@example.com}]
    groups: {engineers: [], target: []}
eligibilities:
  - {name: ops, connector: idp, target: {group: target}, requestors: {groups: [engineers]}, max_duration: 1h}
""", source="test", env={})
    connectors: dict[str, Any] = {
        "idp": MemoryConnector.from_settings("idp", loaded.policy.connectors["idp"], DictMembershipStore())}
    directory = Directory(connectors, clock)
    policy = loaded.policy
    elig = policy.eligibilities[0]
    assert not await directory.contains(policy, elig.requestors, "ann@example.com")
    ann = await directory.find_user("idp", "ann@example.com")
    assert ann is not None
    await connectors["idp"].grant(ann, parse_target_ref("engineers"), grant_id="g", expires_at=clock.now())
    assert not await directory.contains(policy, elig.requestors, "ann@example.com")  # cached answer
    directory.forget_person("ANN@example.com")
    assert await directory.contains(policy, elig.requestors, "ann@example.com")


async def test_a_grant_and_its_revocation_refresh_what_the_directory_knows_of_that_person(
        db_factory: DbFactory, clock: ManualClock) -> None:
    """A target that is also a group the policy names for people (here: who may request ``ops``) is seen
    at once when jitbot grants or revokes it — not a membership-cache TTL later."""
    loaded = parse_policy("""
audit_channel: "#jit-audit"
connectors:
  idp:
    type: memory
    users: [{email: ann@example.com}]
    groups: {engineers: [ann@example.com], oncall: [], target: []}
eligibilities:
  - {name: join-oncall, connector: idp, target: {group: oncall}, requestors: {groups: [engineers]}, max_duration: 1h}
  - {name: ops, connector: idp, target: {group: target}, requestors: {groups: [oncall]}, max_duration: 1h}
""", source="test", env={})
    stack = await make_stack(db_factory(), loaded, clock)
    assert [e.name for e in await stack.requests.requestable("ann@example.com")] == ["join-oncall"]
    req = await stack.requests.submit(requester="ann@example.com", eligibility="join-oncall",
                                      duration=timedelta(hours=1), justification="on call tonight")
    await stack.worker.run_until_idle()
    assert [e.name for e in await stack.requests.requestable("ann@example.com")] == ["join-oncall", "ops"]
    await stack.grants.end_early(request_id=req.id, actor="ann@example.com", reason="released")
    await stack.worker.run_until_idle()
    assert [e.name for e in await stack.requests.requestable("ann@example.com")] == ["join-oncall"]


@pytest.mark.parametrize("by_id", [False, True])
async def test_another_group_with_the_same_name_or_named_like_the_id_grants_nothing(
        clock: ManualClock, monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str], by_id: bool) -> None:
    """Okta: the policy's approver group, named by name or by id; a second group carrying that name (an
    imported APP_GROUP, say) or named after the first one's id holds mallory. She is no approver."""
    isolate_okta_sdk(monkeypatch, tmp_path)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    async with okta_fake(page_size=50) as (fake, ca_file):
        bob, mallory = fake.add_user("bob@example.com"), fake.add_user("mallory@example.com")
        leads = fake.add_group("leads", [bob])
        ref = leads if by_id else "leads"
        other = fake.add_group(ref, [mallory])
        fake.groups[other]["type"] = "APP_GROUP"
        target = fake.add_group("prod")
        connector_yaml = as_yaml("okta", okta_settings(fake, ca_file))
        loaded = parse_policy('audit_channel: "#jit-audit"\nconnectors:\n' + connector_yaml + f"""eligibilities:
  - name: prod
    connector: okta
    target: {{group: {target}}}
    requestors: {{users: [alice@example.com]}}
    approvals: [{{approvers: {{groups: ["{ref}"]}}}}]
    max_duration: 1h
""", source="test", env={})
        connectors = build_connectors(loaded, None)  # type: ignore[arg-type]
        directory = Directory(connectors, clock)
        approvers = loaded.policy.eligibilities[0].approvals[0].approvers
        try:
            assert not await directory.contains(loaded.policy, approvers, "mallory@example.com")
            assert await directory.contains(loaded.policy, approvers, "bob@example.com") is by_id  # a name
            # that two groups carry names no single group: nobody is in it (as list_members refuses it)
        finally:
            for conn in connectors.values():
                await conn.aclose()
