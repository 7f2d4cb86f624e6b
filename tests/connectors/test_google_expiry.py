"""The Google expiry backstop (connectors/google_expiry.py) against the fake Cloud Identity Groups API, which
ends a member itself when its clock passes the membership's expiry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.backstop import expiry_backstop
from connectors.base import ConfigError, ConnectorError, IdpUser, NotFound, Target, TargetKind, Usage
from connectors.google_expiry import SCOPE_CLOUD_IDENTITY_GROUPS, GoogleExpiryConnector
from connectors.google_workspace import GoogleWorkspaceConnector
from connectors.registry import build_connector
from tests.connectors.test_google_workspace import ADMIN, KEY_ID, SA_EMAIL, keys, settings  # noqa: F401
from tests.fakes.idp.google import SCOPE_GROUP_MEMBER, SCOPE_USER_READ, FakeGoogleWorkspace

GROUP = Target(TargetKind.GROUP, "prod-admins@example.com")
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fake(keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey], clock: Clock) -> AsyncIterator[FakeGoogleWorkspace]:  # noqa: F811
    public = keys[0].public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    server = FakeGoogleWorkspace(public_key_pem=public, client_email=SA_EMAIL, subject=ADMIN, key_id=KEY_ID,
                                 authorized_scopes=(SCOPE_USER_READ, SCOPE_GROUP_MEMBER, SCOPE_CLOUD_IDENTITY_GROUPS),
                                 clock=clock)
    server.add_user(ADMIN, "Admin")
    server.add_user("alice@example.com", "Alice")
    server.add_user("erin@example.com", "Erin")
    server.add_group("prod-admins@example.com")
    await server.start()
    yield server
    assert server.spec_violations == []
    await server.stop()


def ci_settings(fake: FakeGoogleWorkspace, key: rsa.RSAPrivateKey, **extra: Any) -> dict[str, Any]:
    return settings(fake, key, expiry_backstop=True, cloud_identity_base_url=fake.url, **extra)


@pytest.fixture
async def connector(fake: FakeGoogleWorkspace, keys: Any) -> AsyncIterator[GoogleExpiryConnector]:  # noqa: F811
    conn = build_connector("google", ci_settings(fake, keys[0]))
    assert isinstance(conn, GoogleExpiryConnector)
    yield conn
    await conn.aclose()


async def _alice(c: GoogleExpiryConnector) -> IdpUser:
    user = await c.find_user("alice@example.com")
    assert user is not None
    return user


async def test_the_backstop_is_opt_in(fake: FakeGoogleWorkspace, keys: Any) -> None:  # noqa: F811
    plain = build_connector("google", settings(fake, keys[0]))
    assert type(plain) is GoogleWorkspaceConnector and expiry_backstop(plain) is None
    with pytest.raises(ConfigError):  # the plain module never builds one that silently lacks it
        from connectors.google_workspace import from_settings
        from_settings("g", ci_settings(fake, keys[0]))


async def test_grant_sets_an_expiry_and_the_idp_removes_the_member_itself(
        fake: FakeGoogleWorkspace, connector: GoogleExpiryConnector, clock: Clock) -> None:
    alice = await _alice(connector)
    assert expiry_backstop(connector) is connector
    result = await connector.grant(alice, GROUP, grant_id="g1", expires_at=T0 + timedelta(hours=1))
    assert result.added and fake.expiries[("prod-admins@example.com", alice.id)] == T0 + timedelta(hours=1)
    assert await connector.is_member(alice, GROUP)
    clock.now = T0 + timedelta(hours=1)  # jitbot is down: nobody revokes
    assert not await connector.is_member(alice, GROUP)  # Google ended it at its expiry
    await connector.revoke(alice, GROUP, grant_id="g1")  # jitbot back: the revoke of a gone member is done


async def test_extending_moves_the_expiry(fake: FakeGoogleWorkspace, connector: GoogleExpiryConnector,
                                          clock: Clock) -> None:
    alice = await _alice(connector)
    await connector.grant(alice, GROUP, grant_id="g1", expires_at=T0 + timedelta(hours=1))
    await connector.move_expiry(alice, GROUP, expires_at=T0 + timedelta(hours=3))
    clock.now = T0 + timedelta(hours=2)
    assert await connector.is_member(alice, GROUP)  # the old expiry no longer applies
    clock.now = T0 + timedelta(hours=3)
    assert not await connector.is_member(alice, GROUP)
    with pytest.raises(NotFound):  # nothing to move: the membership has ended
        await connector.move_expiry(alice, GROUP, expires_at=T0 + timedelta(hours=5))


async def test_standing_access_keeps_its_membership_without_an_expiry(
        fake: FakeGoogleWorkspace, connector: GoogleExpiryConnector, clock: Clock) -> None:
    erin = await connector.find_user("erin@example.com")
    assert erin is not None
    fake.groups["prod-admins@example.com"]["members"].add(erin.id)  # a member before any grant
    result = await connector.grant(erin, GROUP, grant_id="g2", expires_at=T0 + timedelta(hours=1))
    assert not result.added and fake.expiries == {}
    clock.now = T0 + timedelta(days=2)
    assert await connector.is_member(erin, GROUP)


async def test_an_edition_without_membership_expiry_refuses_the_grant(
        fake: FakeGoogleWorkspace, connector: GoogleExpiryConnector) -> None:
    fake.expiry_licensed = False
    alice = await _alice(connector)
    with pytest.raises(ConnectorError, match="not available"):
        await connector.grant(alice, GROUP, grant_id="g1", expires_at=T0 + timedelta(hours=1))
    assert not await connector.is_member(alice, GROUP)  # nothing added without its expiry


async def test_a_group_named_by_id_is_refused_with_the_backstop(connector: GoogleExpiryConnector) -> None:
    with pytest.raises(ConfigError, match="email"):
        await connector.grant(await _alice(connector), Target(TargetKind.GROUP, "03abc"), grant_id="g",
                              expires_at=T0 + timedelta(hours=1))


async def test_check_reports_the_backstop_and_names_the_missing_scope(
        fake: FakeGoogleWorkspace, connector: GoogleExpiryConnector) -> None:
    checks = await connector.check(Usage(grants=("prod-admin",)))
    assert any(c.name == "google expiry backstop" and c.ok for c in checks)
    fake.authorized_scopes.discard(SCOPE_CLOUD_IDENTITY_GROUPS)
    checks = await connector.check(Usage(grants=("prod-admin",)))
    assert [c.name for c in checks if not c.ok] == [f"google scope {SCOPE_CLOUD_IDENTITY_GROUPS}"]
