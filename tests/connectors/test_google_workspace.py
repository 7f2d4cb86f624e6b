"""Google Workspace connector against the fake Directory API and token endpoint."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.base import (
    ConfigError,
    Connector,
    IndirectMembership,
    PermissionDenied,
    RateLimited,
    Target,
    TargetKind,
    Transient,
)
from connectors.google_workspace import GoogleWorkspaceConnector, from_settings
from tests.connectors.conformance import *  # noqa: F403
from tests.connectors.conformance import EXPIRES, Harness
from tests.fakes.idp.google import SCOPE_GROUP_MEMBER, SCOPE_USER_READ, FakeGoogleWorkspace

SA_EMAIL = "jitbot@jit-project.iam.gserviceaccount.com"
ADMIN = "admin@example.com"
KEY_ID = "0123456789abcdef0123456789abcdef01234567"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def key_json(key: rsa.RSAPrivateKey, token_uri: str) -> str:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "jit-project",
            "private_key_id": KEY_ID,
            "private_key": _pem(key),
            "client_email": SA_EMAIL,
            "client_id": "1234567890",
            "token_uri": token_uri,
        }
    )


@pytest.fixture
async def fake(keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]) -> AsyncIterator[FakeGoogleWorkspace]:
    public = (
        keys[0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    server = FakeGoogleWorkspace(public_key_pem=public, client_email=SA_EMAIL, subject=ADMIN, key_id=KEY_ID)
    server.add_user(ADMIN, "Admin")
    alice = server.add_user("alice@example.com", "Alice")
    members = [server.add_user(f"eng{i}@example.com") for i in range(5)]
    server.add_group("prod-admins@example.com")
    server.add_group("engineers@example.com", [alice, *members])
    await server.start()
    yield server
    await server.stop()


def settings(fake: FakeGoogleWorkspace, key: rsa.RSAPrivateKey, **extra: Any) -> dict[str, Any]:
    return {
        "type": "google",
        "service_account_json": key_json(key, fake.token_uri),
        "subject": ADMIN,
        "api_base_url": fake.url,
        "timeout": 5,
        **extra,
    }


@pytest.fixture
async def connector(fake: FakeGoogleWorkspace, keys: Any) -> AsyncIterator[GoogleWorkspaceConnector]:
    conn = from_settings("google", settings(fake, keys[0], terminate_sessions=True))
    yield conn
    await conn.aclose()


@pytest.fixture
async def harness(fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector, keys: Any) -> Harness:
    async def bad_credentials() -> Connector:
        return from_settings("google-bad", settings(fake, keys[1]))  # signed with a key Google doesn't know

    return Harness(
        connector=connector,
        controls=fake,
        existing_email="alice@example.com",
        unknown_email="nobody@example.com",
        target=Target(TargetKind.GROUP, "prod-admins@example.com"),
        paged_group="engineers@example.com",
        paged_group_size=6,
        bad_credentials=bad_credentials,
    )


async def test_assertion_is_signed_for_the_delegated_admin_with_the_directory_scopes(
    fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector
) -> None:
    await connector.find_user("alice@example.com")
    claims = fake.assertions[-1]
    assert claims["iss"] == SA_EMAIL and claims["sub"] == ADMIN and claims["aud"] == fake.token_uri
    assert {SCOPE_USER_READ, SCOPE_GROUP_MEMBER} <= set(claims["scope"].split())
    assert claims["exp"] - claims["iat"] == 3600


async def test_token_is_reused_until_it_expires(
    fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector
) -> None:
    for _ in range(3):
        await connector.find_user("alice@example.com")
    assert fake.token_requests == 1
    connector._token_expires = 0.0  # as if the hour had passed
    await connector.find_user("alice@example.com")
    assert fake.token_requests == 2


async def test_revoked_token_is_refreshed_once_and_the_call_succeeds(
    fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector
) -> None:
    await connector.find_user("alice@example.com")
    fake.tokens.clear()  # Google revoked our token
    assert await connector.find_user("alice@example.com") is not None
    assert fake.token_requests == 2


async def test_list_members_uses_page_tokens(
    fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector
) -> None:
    before = fake.api_calls
    members = await connector.list_members("group:engineers@example.com")
    assert len(members) == 6 and fake.api_calls - before == 3  # fake pages hold 2 members


async def test_user_rate_limit_403_is_rate_limited_with_default_retry_after(
    fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector
) -> None:
    fake.user_rate_limit_next()
    with pytest.raises(RateLimited) as info:
        await connector.find_user("alice@example.com")
    assert info.value.retry_after == 10.0


async def test_sign_out_needs_terminate_sessions_enabled(fake: FakeGoogleWorkspace, keys: Any) -> None:
    conn = from_settings("google", settings(fake, keys[0]))  # no user.security scope requested
    try:
        with pytest.raises(ConfigError):
            await conn.terminate_sessions(await conn.find_user("alice@example.com"))  # type: ignore[arg-type]
    finally:
        await conn.aclose()


async def test_sign_out_ends_the_users_sessions(
    fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector
) -> None:
    user = await connector.find_user("alice@example.com")
    assert user is not None
    await connector.terminate_sessions(user)
    assert fake.signed_out == [user.id]


async def test_unauthorized_scope_fails_check_with_delegation_hint(
    fake: FakeGoogleWorkspace, keys: Any
) -> None:
    fake.authorized_scopes.discard(SCOPE_GROUP_MEMBER)
    conn = from_settings("google", settings(fake, keys[0]))
    try:
        checks = await conn.check()
    finally:
        await conn.aclose()
    failed = [c for c in checks if not c.ok]  # the token is asked for scope by scope: the refused one is named
    assert [c.name for c in failed] == [f"google scope {SCOPE_GROUP_MEMBER}"]
    assert "Domain-wide delegation" in failed[0].message and "client ID 1234567890" in failed[0].message


async def test_unreachable_token_endpoint_fails_check_and_is_transient(keys: Any) -> None:
    conn = from_settings(
        "google",
        {
            "service_account_json": key_json(keys[0], "http://127.0.0.1:9/token"),
            "subject": ADMIN,
            "api_base_url": "http://127.0.0.1:9",
            "timeout": 2,
        },
    )
    try:
        checks = await conn.check()
        assert [c.name for c in checks if not c.ok] == ["reachable"]
        with pytest.raises(Transient):
            await conn.find_user("alice@example.com")
    finally:
        await conn.aclose()


async def test_slow_response_times_out_as_transient(fake: FakeGoogleWorkspace, keys: Any) -> None:
    conn = from_settings("google", settings(fake, keys[0], timeout=0.3))
    try:
        await conn.find_user("alice@example.com")  # token first, so only the API call is slow
        fake.slow_next(2)
        with pytest.raises(Transient):
            await conn.find_user("alice@example.com")
    finally:
        await conn.aclose()


async def test_roles_are_refused(connector: GoogleWorkspaceConnector) -> None:
    user = await connector.find_user("alice@example.com")
    assert user is not None
    with pytest.raises(ConfigError):
        await connector.grant(user, Target(TargetKind.ROLE, "x"), grant_id="g", expires_at=EXPIRES)


def test_settings_are_validated_without_echoing_the_key(keys: Any) -> None:
    pem = _pem(keys[0])
    with pytest.raises(ConfigError) as info:
        from_settings("google", {"service_account_json": json.dumps({"private_key": pem}), "subject": ADMIN})
    assert "PRIVATE KEY" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        from_settings("google", {"service_account_json": "x", "subject": ADMIN, "surprise": 1})
    assert "surprise" in str(info.value)


async def test_no_secret_in_logs_or_errors(
    fake: FakeGoogleWorkspace, keys: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    conn = from_settings("google", settings(fake, keys[0]))
    try:
        user = await conn.find_user("alice@example.com")
        assert user is not None
        token = next(iter(fake.tokens))
        fake.forbid_next()
        with pytest.raises(PermissionDenied) as denied:
            await conn.grant(
                user, Target(TargetKind.GROUP, "prod-admins@example.com"), grant_id="g", expires_at=EXPIRES
            )
        fake.break_credentials()
        checks = await conn.check()
    finally:
        await conn.aclose()
    key_body = _pem(keys[0]).splitlines()[1]
    text = " ".join([caplog.text, str(denied.value), denied.value.user_message, *(c.message for c in checks)])
    assert key_body not in text and token not in text and "assertion" not in caplog.text


# -- direct and nested membership (admin.directory_v1: members.delete removes direct memberships only) --


@pytest.fixture
def nested(fake: FakeGoogleWorkspace) -> dict[str, str]:
    """oncall@ is a member of prod-admins@; dave is in oncall@ only, erin directly in prod-admins@."""
    dave, erin = fake.add_user("dave@example.com"), fake.add_user("erin@example.com")
    oncall = fake.add_group("oncall@example.com", [dave])
    fake.groups["prod-admins@example.com"]["members"] |= {oncall, erin}
    return {"dave": dave, "erin": erin}


PROD = Target(TargetKind.GROUP, "prod-admins@example.com")


async def test_members_through_a_nested_group_are_listed_as_not_direct(
    fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector, nested: dict[str, str]
) -> None:
    members = {m.email: m.direct for m in await connector.list_members("prod-admins@example.com")}
    assert members == {"dave@example.com": False, "erin@example.com": True}


async def test_a_group_without_nested_groups_is_listed_once(
    fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector
) -> None:
    await connector.find_user("alice@example.com")
    before = fake.api_calls
    members = await connector.list_members("engineers@example.com")
    assert len(members) == 6 and all(m.direct for m in members)
    assert fake.api_calls - before == 3  # the direct listing's three pages, no derived listing


async def test_revoking_a_nested_only_membership_is_not_a_success(
    fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector, nested: dict[str, str]
) -> None:
    dave = await connector.find_user("dave@example.com")
    assert dave is not None and await connector.is_member(dave, PROD)
    with pytest.raises(IndirectMembership) as info:
        await connector.revoke(dave, PROD, grant_id="g1")
    assert "nested group" in info.value.user_message
    assert fake.holds(PROD, nested["dave"])  # still holds it: nothing was removed


async def test_a_grant_to_a_nested_member_is_its_own_direct_membership(
    fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector, nested: dict[str, str]
) -> None:
    dave = await connector.find_user("dave@example.com")
    assert dave is not None
    result = await connector.grant(dave, PROD, grant_id="g1", expires_at=EXPIRES)
    assert result.added is True and fake.is_member(PROD, nested["dave"])
    await connector.revoke(dave, PROD, grant_id="g1")  # removes the grant's direct membership: success
    assert not fake.is_member(PROD, nested["dave"]) and fake.holds(PROD, nested["dave"])


async def test_revoking_from_a_deleted_group_or_of_a_deleted_account_is_success(
    fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector
) -> None:
    alice = await connector.find_user("alice@example.com")
    assert alice is not None
    await connector.revoke(alice, Target(TargetKind.GROUP, "gone@example.com"), grant_id="g1")
    del fake.users[alice.id]
    await connector.revoke(alice, PROD, grant_id="g1")


async def test_a_suspended_user_is_read_as_inactive(
    fake: FakeGoogleWorkspace, connector: GoogleWorkspaceConnector, nested: dict[str, str]
) -> None:
    fake.suspend(nested["erin"])
    fake.suspend(nested["dave"])
    user = await connector.find_user("erin@example.com")
    assert user is not None and not user.active
    direct = {m.email: m.active for m in await connector.list_members("oncall@example.com")}
    assert direct == {"dave@example.com": False}
    derived = {m.email: m.active for m in await connector.list_members("prod-admins@example.com")}
    assert derived == {"dave@example.com": False, "erin@example.com": False}
