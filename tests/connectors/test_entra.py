"""The Entra connector: real msal token code and Graph calls against a strict fake tenant over TLS."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from functools import lru_cache

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.base import (
    ConfigError,
    ConnectorError,
    IdpUser,
    PermissionDenied,
    RateLimited,
    Target,
    TargetKind,
    Transient,
)
from connectors.entra import EntraConnector, from_settings
from connectors.registry import build_connector
from tests.connectors.conformance import *  # noqa: F403
from tests.connectors.conformance import EXPIRES, Harness
from tests.fakes.idp.entra import FakeEntra
from tests.fakes.idp.tls import localhost_tls

TENANT = "8f1c2d3e-0000-4000-8000-00000000beef"
CLIENT_ID = "5a6b7c8d-0000-4000-8000-00000000c1d0"
SECRET = "Xy8Q~entra-SECRET-value-do-not-log"
Built = tuple[EntraConnector, FakeEntra]


@lru_cache(maxsize=2)
def _certificate(which: str) -> tuple[str, str, str]:
    """(private key PEM, public key PEM, SHA-1 thumbprint hex) of a throwaway app certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public_der = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public, hashlib.sha1(public_der).hexdigest()  # noqa: S324 - a thumbprint, not security


@pytest.fixture
async def entra(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeEntra, str]]:
    context, ca_file = localhost_tls()
    # The connector passes its own ca_file; the environment must not be what makes TLS work.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    _, public, thumbprint = _certificate("good")
    fake = FakeEntra(tenant_id=TENANT, client_id=CLIENT_ID, client_secret=SECRET,
                     certificate_public_pem=public, certificate_thumbprint=thumbprint, page_size=2)
    await fake.start(context)
    fake.alice = fake.add_user("alice@example.com", "Alice Adams")  # type: ignore[attr-defined]
    staff = [fake.add_user(f"user{i}@example.com") for i in range(5)]
    fake.target = fake.add_group("jit-admins")  # type: ignore[attr-defined]
    fake.paged = fake.add_group("engineering", staff)  # type: ignore[attr-defined]
    yield fake, ca_file
    await fake.stop()
    # every test here, harness or not: no exchange departed from Graph's description (tests/specs/graph)
    assert not fake.spec_violations, "\n".join(fake.spec_violations)


def _settings(fake: FakeEntra, ca_file: str, mode: str, **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"type": "entra", "tenant_id": TENANT, "client_id": CLIENT_ID,
                               "authority_url": fake.authority_url, "graph_url": fake.graph_url,
                               "ca_file": ca_file, "timeout": 5}
    if mode == "secret":
        base["client_secret"] = SECRET
    else:
        private, _, thumbprint = _certificate("good")
        base |= {"certificate_private_key": private, "certificate_thumbprint": thumbprint}
    return base | overrides


@pytest.fixture(params=["secret", "certificate"])
async def harness(request: pytest.FixtureRequest, entra: tuple[FakeEntra, str]) -> AsyncIterator[Harness]:
    fake, ca_file = entra
    mode = request.param
    connector = from_settings("entra", _settings(fake, ca_file, mode))

    async def bad() -> EntraConnector:
        wrong = ({"client_secret": "wrong"} if mode == "secret"
                 else {"certificate_private_key": _certificate("other")[0]})
        return from_settings("entra-bad", _settings(fake, ca_file, mode, **wrong))

    yield Harness(connector=connector, controls=fake, existing_email="alice@example.com",
                  unknown_email="nobody@example.com", target=Target(TargetKind.GROUP, fake.target),  # type: ignore[attr-defined]
                  paged_group=fake.paged, paged_group_size=5, bad_credentials=bad)  # type: ignore[attr-defined]
    await connector.aclose()


@pytest.fixture
async def connector(entra: tuple[FakeEntra, str]) -> AsyncIterator[tuple[EntraConnector, FakeEntra]]:
    fake, ca_file = entra
    built = from_settings("entra", _settings(fake, ca_file, "secret"))
    yield built, fake
    await built.aclose()


async def test_token_is_cached_across_calls(connector: Built) -> None:
    entra_connector, fake = connector
    user = await entra_connector.find_user("alice@example.com")
    assert user is not None
    await entra_connector.grant(user, Target(TargetKind.GROUP, fake.target), grant_id="g", expires_at=EXPIRES)  # type: ignore[attr-defined]
    await entra_connector.list_members("engineering")
    assert fake.token_requests == 1
    assert len(set(fake.auth_headers)) == 1 and fake.auth_headers[0].startswith("Bearer ")


async def test_member_list_follows_odata_next_link(connector: Built) -> None:
    entra_connector, fake = connector
    before = fake.api_calls
    members = await entra_connector.list_members(fake.paged)  # type: ignore[attr-defined]
    assert sorted(m.email for m in members) == [f"user{i}@example.com" for i in range(5)]
    assert fake.api_calls - before == 3


async def test_user_found_by_user_principal_name(connector: Built) -> None:
    entra_connector, fake = connector
    user = await entra_connector.find_user("alice_upn@example.com")
    assert user is not None and user.id == fake.alice  # type: ignore[attr-defined]


async def test_email_with_a_quote_is_escaped_not_injected(connector: Built) -> None:
    entra_connector, _ = connector
    assert await entra_connector.find_user("o'brien@example.com") is None


async def test_already_member_is_reported_by_graph_as_not_added(connector: Built) -> None:
    entra_connector, fake = connector
    user = IdpUser(id=fake.alice, email="alice@example.com")  # type: ignore[attr-defined]
    target = Target(TargetKind.GROUP, "jit-admins")
    assert (await entra_connector.grant(user, target, grant_id="a", expires_at=EXPIRES)).added
    assert not (await entra_connector.grant(user, target, grant_id="b", expires_at=EXPIRES)).added


async def test_retry_after_is_passed_on(connector: Built) -> None:
    entra_connector, fake = connector
    fake.rate_limit_next(42)
    with pytest.raises(RateLimited) as info:
        await entra_connector.find_user("alice@example.com")
    assert info.value.retry_after == 42


async def test_missing_permission_check_names_the_graph_permission(entra: tuple[FakeEntra, str]) -> None:
    fake, ca_file = entra
    fake.roles = {"User.Read.All"}
    built = from_settings("entra", _settings(fake, ca_file, "secret"))
    try:
        checks = await built.check()
    finally:
        await built.aclose()
    assert [c.name for c in checks if not c.ok] == ["graph groups"]
    assert "GroupMember.Read.All" in next(c.message for c in checks if not c.ok)


async def test_group_member_readwrite_alone_does_not_read_groups_and_check_says_which(
        entra: tuple[FakeEntra, str]) -> None:
    # Graph's permission table: GET /groups takes GroupMember.Read.All (or Group.*/Directory.*), and
    # GroupMember.ReadWrite.All is not among them.
    fake, ca_file = entra
    fake.roles = {"GroupMember.ReadWrite.All", "User.Read.All"}
    built = from_settings("entra", _settings(fake, ca_file, "secret"))
    try:
        checks = await built.check()
    finally:
        await built.aclose()
    failed = [c for c in checks if not c.ok]
    assert [c.name for c in failed] == ["graph groups"] and "GroupMember.Read.All" in failed[0].message


async def test_membership_is_read_with_the_permissions_the_docs_ask_for_not_directory_read_all(
        entra: tuple[FakeEntra, str]) -> None:
    fake, ca_file = entra
    assert "Directory.Read.All" not in fake.roles
    built = from_settings("entra", _settings(fake, ca_file, "secret"))
    try:
        user = await built.find_user("alice@example.com")
        assert user is not None
        target = Target(TargetKind.GROUP, fake.target)  # type: ignore[attr-defined]
        assert not await built.is_member(user, target)
        assert (await built.grant(user, target, grant_id="g1", expires_at=EXPIRES)).added
        assert await built.is_member(user, target)
    finally:
        await built.aclose()
    assert not any(path.endswith("/memberOf") for _, path in fake.requests)


async def test_members_without_a_user_read_permission_come_back_without_mail(
        entra: tuple[FakeEntra, str]) -> None:
    # "Limited information returned for inaccessible member objects": only @odata.type and id.
    fake, ca_file = entra
    fake.roles = {"GroupMember.Read.All", "GroupMember.ReadWrite.All"}
    built = from_settings("entra", _settings(fake, ca_file, "secret"))
    try:
        members = await built.list_members(fake.paged)  # type: ignore[attr-defined]
    finally:
        await built.aclose()
    assert members and all(m.email == "" for m in members)


async def test_terminate_sessions_calls_revoke_sign_in_sessions(connector: Built) -> None:
    entra_connector, fake = connector
    await entra_connector.terminate_sessions(IdpUser(id=fake.alice, email="alice@example.com"))  # type: ignore[attr-defined]
    assert fake.revoked_sessions == [fake.alice]  # type: ignore[attr-defined]


async def test_an_external_users_sessions_are_not_reported_as_ended(connector: Built) -> None:
    # Graph: revokeSignInSessions "doesn't revoke sign-in sessions for external users".
    entra_connector, fake = connector
    guest = fake.add_user("partner@other.example", guest=True)
    with pytest.raises(ConnectorError) as info:
        await entra_connector.terminate_sessions(IdpUser(id=guest, email="partner@other.example"))
    assert "external (guest) user" in info.value.user_message and guest not in fake.revoked_sessions


async def test_terminate_sessions_needs_user_revoke_sessions_all(entra: tuple[FakeEntra, str]) -> None:
    fake, ca_file = entra
    fake.roles.discard("User.RevokeSessions.All")  # the next token's roles claim lacks it
    built = from_settings("entra", _settings(fake, ca_file, "secret"))
    try:
        with pytest.raises(PermissionDenied):
            await built.terminate_sessions(IdpUser(id=fake.alice, email="alice@example.com"))  # type: ignore[attr-defined]
    finally:
        await built.aclose()


async def test_slow_graph_is_a_transient_timeout(entra: tuple[FakeEntra, str]) -> None:
    fake, ca_file = entra
    built = from_settings("entra", _settings(fake, ca_file, "secret", timeout=0.5))
    try:
        await built.find_user("alice@example.com")  # token first, at normal speed
        fake.slow_next(2)
        with pytest.raises(Transient):
            await built.find_user("alice@example.com")
    finally:
        await built.aclose()


async def test_unreachable_authority_is_transient_and_check_says_so(entra: tuple[FakeEntra, str]) -> None:
    fake, ca_file = entra
    await fake.stop()
    built = from_settings("entra", _settings(fake, ca_file, "secret", timeout=2))
    try:
        with pytest.raises(Transient):
            await built.find_user("alice@example.com")
        checks = await built.check()
    finally:
        await built.aclose()
    assert any(not c.ok and "Cannot get a token" in c.message for c in checks)


async def test_registry_builds_entra_connector(entra: tuple[FakeEntra, str]) -> None:
    fake, ca_file = entra
    built = build_connector("entra", _settings(fake, ca_file, "secret"))
    assert isinstance(built, EntraConnector)
    await built.aclose()


def test_bad_settings_raise_config_error_without_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        from_settings("entra", {"type": "entra", "tenant_id": TENANT, "client_id": CLIENT_ID,
                                "client_secret": SECRET, "certificate_thumbprint": "zz", "extra": True})
    assert SECRET not in str(info.value) and "extra" in str(info.value)


async def test_no_secret_in_errors_or_logs(
    entra: tuple[FakeEntra, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, ca_file = entra
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    texts: list[str] = []
    for mode, extra in (("secret", {}), ("secret", {"client_secret": "wrong-SECRET-2"}), ("certificate", {})):
        built = from_settings("entra", _settings(fake, ca_file, mode, **extra))
        try:
            fake.rate_limit_next(1)
            fake.fail_next(500)
            fake.forbid_next()
            for _ in range(4):
                try:
                    await built.grant(IdpUser(id=fake.alice, email="a"),  # type: ignore[attr-defined]
                                      Target(TargetKind.GROUP, fake.target), grant_id="g",  # type: ignore[attr-defined]
                                      expires_at=EXPIRES)
                except Exception as exc:  # noqa: BLE001 - collecting every error's text
                    errors.append(exc)
            texts += [c.message for c in await built.check()]
        finally:
            await built.aclose()
    texts += [caplog.text, *map(str, errors), *map(repr, errors)]
    texts += [getattr(e, "user_message", "") for e in errors]
    assert len(errors) >= 4
    for secret in (SECRET, "wrong-SECRET-2", _certificate("good")[0].splitlines()[1]):
        assert not any(secret in text for text in texts)


async def test_every_graph_exchange_is_held_to_the_published_description(connector: Built) -> None:
    # the fake checks the connector's requests and its own answers against tests/specs/graph; drift in
    # either lands in spec_violations (on which the ``entra`` fixture fails every test)
    entra_connector, fake = connector
    fake.users[fake.alice]["accountEnabled"] = "yes"  # type: ignore[attr-defined]  # Graph's is a boolean
    assert await entra_connector.find_user("alice@example.com") is not None
    assert "get /users answer['value', 0, 'accountEnabled']: 'yes' is not of type 'boolean', 'null'" in (
        fake.spec_violations)
    fake.users[fake.alice]["accountEnabled"] = True  # type: ignore[attr-defined]
    fake.spec_violations.clear()
    user = await entra_connector.find_user("alice@example.com")
    assert user is not None
    target = Target(TargetKind.GROUP, fake.target)  # type: ignore[attr-defined]
    await entra_connector.grant(user, target, grant_id="g1", expires_at=EXPIRES)
    assert await entra_connector.groups_of(user, [fake.target]) == frozenset({fake.target})  # type: ignore[attr-defined]
    await entra_connector.revoke(user, target, grant_id="g1")
    await entra_connector.terminate_sessions(user)
    called = {(m, p.rsplit("/", 1)[-1]) for m, p in fake.requests}
    assert {("POST", "$ref"), ("DELETE", "$ref"), ("POST", "checkMemberGroups"),
            ("POST", "revokeSignInSessions")} <= called
    assert fake.spec_violations == []
