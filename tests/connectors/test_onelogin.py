"""OneLogin connector against the fake OneLogin API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.base import ConfigError, Connector, IdpUser, PermissionDenied, Target, TargetKind, Transient
from connectors.onelogin import OneLoginConnector, from_settings
from tests.connectors.conformance import *  # noqa: F403
from tests.connectors.conformance import EXPIRES, Harness
from tests.fakes.idp.onelogin import FakeOneLogin

CLIENT_ID = "0b3f2c6e5a0e4c7f"
SECRET = "s3cr3t-onelogin-client-secret-value"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOneLogin]:
    server = FakeOneLogin(client_id=CLIENT_ID, client_secret=SECRET)
    alice = server.add_user("alice@example.com", "Alice", "Smith")
    others = [server.add_user(f"eng{i}@example.com") for i in range(4)]
    server.add_role("Prod Admin")
    server.add_role("Engineering", [alice, *others])
    await server.start()
    yield server
    await server.stop()


def settings(fake: FakeOneLogin, **extra: Any) -> dict[str, Any]:
    return {
        "type": "onelogin",
        "base_url": fake.url,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "timeout": 5,
        **extra,
    }


def role(fake: FakeOneLogin, name: str) -> str:
    return str(next(r["id"] for r in fake.roles.values() if r["name"] == name))


@pytest.fixture
async def connector(fake: FakeOneLogin) -> AsyncIterator[OneLoginConnector]:
    conn = from_settings("onelogin", settings(fake))
    yield conn
    await conn.aclose()


@pytest.fixture
async def harness(fake: FakeOneLogin, connector: OneLoginConnector) -> Harness:
    async def bad_credentials() -> Connector:
        return from_settings("onelogin-bad", settings(fake, client_secret="wrong"))

    return Harness(
        connector=connector,
        controls=fake,
        existing_email="alice@example.com",
        unknown_email="nobody@example.com",
        target=Target(TargetKind.ROLE, role(fake, "Prod Admin")),
        paged_group=f"role:{role(fake, 'Engineering')}",
        paged_group_size=5,
        bad_credentials=bad_credentials,
    )


async def test_token_is_reused_until_it_expires(fake: FakeOneLogin, connector: OneLoginConnector) -> None:
    for _ in range(3):
        await connector.find_user("alice@example.com")
    assert fake.token_requests == 1
    connector._token_expires = 0.0
    await connector.find_user("alice@example.com")
    assert fake.token_requests == 2


async def test_revoked_token_is_replaced_once(fake: FakeOneLogin, connector: OneLoginConnector) -> None:
    await connector.find_user("alice@example.com")
    fake.tokens.clear()
    assert await connector.find_user("alice@example.com") is not None
    assert fake.token_requests == 2


async def test_v2_calls_send_the_documented_bearer_header(
    fake: FakeOneLogin, connector: OneLoginConnector
) -> None:
    await connector.find_user("alice@example.com")
    token = next(iter(fake.tokens))
    assert fake.requests[-1] == ("GET", "/api/2/users", f"bearer {token}")


async def test_role_users_are_paged_with_after_cursor(
    fake: FakeOneLogin, connector: OneLoginConnector
) -> None:
    before = fake.api_calls
    members = await connector.list_members(role(fake, "Engineering"))  # a bare id names a role
    # three pages of role users, then the five users read by id: three pages of the fake's two
    assert len(members) == 5 and fake.api_calls - before == 6
    assert "alice@example.com" in {m.email for m in members}


async def test_role_members_are_people_read_by_their_user_id(
    fake: FakeOneLogin, connector: OneLoginConnector
) -> None:
    # Role-user rows are {id, name, username, added_by, added_at, assigned}: a username is no email.
    bob = fake.add_user("bob.jones@example.com", "Bob", "Jones", username="bjones")
    carol = fake.add_user("carol@example.com", "Carol", username="carol@old-domain.example")
    rid = fake.add_role("Support", [bob, carol])
    members = await connector.list_members(f"role:{rid}")
    assert {(m.id, m.email, m.display_name) for m in members} == {
        (str(bob), "bob.jones@example.com", "Bob Jones"),
        (str(carol), "carol@example.com", "Carol"),
    }
    user = await connector.find_user("bob.jones@example.com")
    assert user is not None and user.id == str(bob) and user in members


async def test_members_of_a_large_role_are_read_100_ids_a_call(fake: FakeOneLogin) -> None:
    fake.page_size = 100
    ids = [fake.add_user(f"u{i}@example.com") for i in range(150)]
    rid = fake.add_role("Everyone", ids)
    conn = from_settings("onelogin", settings(fake))
    try:
        before = fake.api_calls
        members = await conn.list_members(f"role:{rid}")
    finally:
        await conn.aclose()
    assert sorted(m.email for m in members) == sorted(f"u{i}@example.com" for i in range(150))
    assert fake.api_calls - before == 4  # two pages of role users, two calls of 100 + 50 ids


def test_page_size_is_at_most_the_documented_100() -> None:
    with pytest.raises(ConfigError) as info:
        from_settings("onelogin", {"base_url": "https://x.onelogin.com", "client_id": CLIENT_ID,
                                   "client_secret": SECRET, "page_size": 500})
    assert "page_size" in str(info.value)


async def test_logout_uses_the_v1_endpoint_and_header(
    fake: FakeOneLogin, connector: OneLoginConnector
) -> None:
    user = await connector.find_user("alice@example.com")
    assert user is not None
    await connector.terminate_sessions(user)
    token = next(iter(fake.tokens))
    assert fake.logged_out == [int(user.id)]
    assert fake.requests[-1] == ("PUT", f"/api/1/users/{user.id}/logout", f"bearer:{token}")


async def test_wildcards_in_an_email_find_nobody(connector: OneLoginConnector) -> None:
    assert await connector.find_user("*@example.com") is None


async def test_groups_are_refused(connector: OneLoginConnector) -> None:
    user = IdpUser(id="1", email="a@example.com")
    with pytest.raises(ConfigError):
        await connector.grant(user, Target(TargetKind.GROUP, "admins"), grant_id="g", expires_at=EXPIRES)


async def test_slow_response_times_out_as_transient(fake: FakeOneLogin) -> None:
    conn = from_settings("onelogin", settings(fake, timeout=0.3))
    try:
        await conn.find_user("alice@example.com")
        fake.slow_next(2)
        with pytest.raises(Transient):
            await conn.find_user("alice@example.com")
    finally:
        await conn.aclose()


async def test_unreachable_fails_check() -> None:
    conn = from_settings(
        "onelogin",
        {"base_url": "http://127.0.0.1:9", "client_id": CLIENT_ID, "client_secret": SECRET, "timeout": 2},
    )
    try:
        checks = await conn.check()
    finally:
        await conn.aclose()
    assert [c.name for c in checks if not c.ok] == ["reachable"]


def test_settings_are_validated_without_echoing_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        from_settings("onelogin", {"base_url": "x", "client_secret": SECRET, "extra": 1})
    assert SECRET not in str(info.value) and "client_id" in str(info.value) and "extra" in str(info.value)


async def test_no_secret_in_logs_or_errors(fake: FakeOneLogin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    conn = from_settings("onelogin", settings(fake))
    try:
        user = await conn.find_user("alice@example.com")
        assert user is not None
        token = next(iter(fake.tokens))
        fake.forbid_next()
        with pytest.raises(PermissionDenied) as denied:
            await conn.grant(
                user, Target(TargetKind.ROLE, role(fake, "Prod Admin")), grant_id="g", expires_at=EXPIRES
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


async def test_a_suspended_user_is_read_as_inactive(fake: FakeOneLogin, connector: OneLoginConnector) -> None:
    bob, carol = fake.add_user("bob@example.com", "Bob"), fake.add_user("carol@example.com", "Carol")
    rid = fake.add_role("Approvers", [bob, carol])
    fake.set_status(bob, 2)  # suspended
    user = await connector.find_user("bob@example.com")
    assert user is not None and not user.active
    active = {m.email: m.active for m in await connector.list_members(f"role:{rid}")}
    assert active == {"bob@example.com": False, "carol@example.com": True}
