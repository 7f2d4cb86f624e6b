"""PingOne connector against the fake PingOne auth server and Platform API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.base import ConfigError, Connector, IdpUser, PermissionDenied, Target, TargetKind, Transient
from connectors.pingone import PingOneConnector, from_settings
from tests.connectors.conformance import *  # noqa: F403
from tests.connectors.conformance import EXPIRES, Harness
from tests.fakes.idp.pingone import FakePingOne

ENV = "abfba8f6-49eb-49f5-a5d9-80ad5c98f9f6"
CLIENT_ID = "6b6e3c43-7b4d-4f1c-9b3a-1a2b3c4d5e6f"
SECRET = "pingone-worker-secret-~value~"


@pytest.fixture
async def fake() -> AsyncIterator[FakePingOne]:
    server = FakePingOne(environment_id=ENV, client_id=CLIENT_ID, client_secret=SECRET)
    alice = server.add_user("alice@example.com", "Alice", "Smith")
    others = [server.add_user(f"eng{i}@example.com") for i in range(6)]
    server.add_group()
    server.add_group([alice, *others])
    await server.start()
    yield server
    await server.stop()


def settings(fake: FakePingOne, **extra: Any) -> dict[str, Any]:
    return {
        "type": "pingone",
        "environment_id": ENV,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "region": "eu",
        "auth_base_url": fake.auth_base_url,
        "api_base_url": fake.api_base_url,
        "timeout": 5,
        **extra,
    }


def groups(fake: FakePingOne) -> tuple[str, str]:
    empty, paged = list(fake.groups)
    return empty, paged


@pytest.fixture
async def connector(fake: FakePingOne) -> AsyncIterator[PingOneConnector]:
    conn = from_settings("pingone", settings(fake))
    yield conn
    await conn.aclose()


@pytest.fixture
async def harness(fake: FakePingOne, connector: PingOneConnector) -> Harness:
    async def bad_credentials() -> Connector:
        return from_settings("pingone-bad", settings(fake, client_secret="wrong"))

    empty, paged = groups(fake)
    return Harness(
        connector=connector,
        controls=fake,
        existing_email="alice@example.com",
        unknown_email="nobody@example.com",
        target=Target(TargetKind.GROUP, empty),
        paged_group=paged,
        paged_group_size=7,
        bad_credentials=bad_credentials,
    )


def test_region_selects_the_documented_hosts() -> None:
    conn = from_settings(
        "p", {"environment_id": ENV, "client_id": CLIENT_ID, "client_secret": SECRET, "region": "asia"}
    )
    assert conn._token_url == f"https://auth.pingone.asia/{ENV}/as/token"
    assert conn._env == f"https://api.pingone.asia/v1/environments/{ENV}"
    with pytest.raises(ConfigError):
        from_settings(
            "p", {"environment_id": ENV, "client_id": CLIENT_ID, "client_secret": SECRET, "region": "mars"}
        )


@pytest.mark.parametrize("region", ["com.au", "sg"])
def test_the_australia_and_singapore_regions_are_served(region: str) -> None:
    conn = from_settings(
        "p", {"environment_id": ENV, "client_id": CLIENT_ID, "client_secret": SECRET, "region": region}
    )
    assert conn._token_url == f"https://auth.pingone.{region}/{ENV}/as/token"
    assert conn._env == f"https://api.pingone.{region}/v1/environments/{ENV}"


async def test_token_is_reused_until_it_expires(fake: FakePingOne, connector: PingOneConnector) -> None:
    for _ in range(3):
        await connector.find_user("alice@example.com")
    assert fake.token_requests == 1
    connector._token_expires = 0.0
    await connector.find_user("alice@example.com")
    assert fake.token_requests == 2


async def test_expired_token_is_replaced_once(fake: FakePingOne, connector: PingOneConnector) -> None:
    await connector.find_user("alice@example.com")
    fake.tokens.clear()
    assert await connector.find_user("alice@example.com") is not None
    assert fake.token_requests == 2


async def test_user_lookup_uses_a_scim_email_filter(fake: FakePingOne, connector: PingOneConnector) -> None:
    assert await connector.find_user('x"or email sw "a') is None  # quotes are escaped, not injected
    await connector.find_user("alice@example.com")
    assert "?filter=email%20eq%20%22alice%40example.com%22&limit=100" in fake.requests[-1][1]


async def test_group_members_follow_next_links(fake: FakePingOne, connector: PingOneConnector) -> None:
    before = fake.api_calls
    members = await connector.list_members(f"group:{groups(fake)[1]}")
    assert len(members) == 7 and fake.api_calls - before == 5  # the group, then 4 pages of 2 users
    assert any(m.display_name == "Alice Smith" for m in members)


async def test_grant_race_with_uniqueness_violation_is_not_added(
    fake: FakePingOne, connector: PingOneConnector
) -> None:
    user = await connector.find_user("alice@example.com")
    assert user is not None
    target = Target(TargetKind.GROUP, groups(fake)[0])

    async def already_member(_: IdpUser, __: Target) -> bool:
        return False  # someone adds the user between our check and our add

    fake.groups[target.id].add(user.id)
    connector.is_member = already_member  # type: ignore[method-assign]
    assert (await connector.grant(user, target, grant_id="g", expires_at=EXPIRES)).added is False


async def test_slow_response_times_out_as_transient(fake: FakePingOne) -> None:
    conn = from_settings("pingone", settings(fake, timeout=0.3))
    try:
        await conn.find_user("alice@example.com")
        fake.slow_next(2)
        with pytest.raises(Transient):
            await conn.find_user("alice@example.com")
    finally:
        await conn.aclose()


async def test_unreachable_fails_check() -> None:
    conn = from_settings(
        "p",
        {
            "environment_id": ENV,
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "auth_base_url": "http://127.0.0.1:9",
            "api_base_url": "http://127.0.0.1:9/v1",
            "timeout": 2,
        },
    )
    try:
        checks = await conn.check()
    finally:
        await conn.aclose()
    assert [c.name for c in checks if not c.ok] == ["reachable"]


async def test_forbidden_listing_fails_check_with_role_hint(
    fake: FakePingOne, connector: PingOneConnector
) -> None:
    await connector.find_user("alice@example.com")
    fake.forbid_next()
    checks = await connector.check()
    assert [c.name for c in checks if not c.ok] == ["permissions"]
    assert "Identity Data Admin" in checks[-1].message


async def test_no_secret_in_logs_or_errors(fake: FakePingOne, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    conn = from_settings("pingone", settings(fake))
    try:
        user = await conn.find_user("alice@example.com")
        assert user is not None
        token = next(iter(fake.tokens))
        fake.forbid_next()
        with pytest.raises(PermissionDenied) as denied:
            await conn.grant(
                user, Target(TargetKind.GROUP, groups(fake)[0]), grant_id="g", expires_at=EXPIRES
            )
        fake.break_credentials()
        checks = await conn.check()
        with pytest.raises(PermissionDenied) as rejected:
            await conn.find_user("alice@example.com")
    finally:
        await conn.aclose()
    text = " ".join(
        [
            caplog.text,
            str(denied.value),
            str(rejected.value),
            repr(conn._config),
            *(c.message for c in checks),
        ]
    )
    assert SECRET not in text and token not in text
    assert any(not c.ok and "client_secret" in c.message for c in checks)


async def test_a_disabled_user_is_read_as_inactive(fake: FakePingOne, connector: PingOneConnector) -> None:
    _, paged = groups(fake)
    uid = next(u for u, v in fake.users.items() if v["email"] == "eng0@example.com")
    fake.set_enabled(uid, False)
    user = await connector.find_user("eng0@example.com")
    assert user is not None and not user.active
    active = {m.email: m.active for m in await connector.list_members(paged)}
    assert active["eng0@example.com"] is False and active["alice@example.com"] is True
