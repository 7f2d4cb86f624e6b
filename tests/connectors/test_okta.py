"""The Okta connector against a strict fake Okta org served over TLS (throwaway CA)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator
from email.utils import formatdate
from functools import lru_cache
from types import SimpleNamespace

import okta.dpop as okta_dpop
import pytest
from Cryptodome.PublicKey import RSA
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.base import (
    RATE_BUDGET,
    AccountInactive,
    Budget,
    ConfigError,
    IdpUser,
    NotFound,
    PermissionDenied,
    RateLimited,
    Target,
    TargetKind,
    Transient,
)
from connectors.okta import OktaConnector, from_settings
from connectors.okta_limits import retry_after as _retry_after
from connectors.registry import build_connector
from tests.connectors.conformance import *  # noqa: F403
from tests.connectors.conformance import EXPIRES, Harness
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.tls import localhost_tls

API_TOKEN = "00SECRET-okta-api-token-value"
CLIENT_ID = "0oa1jitbotservice"


@lru_cache(maxsize=2)
def _key_pair(which: str) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@lru_cache(maxsize=1)
def _dpop_key() -> RSA.RsaKey:
    return RSA.generate(2048)


DPOP_KEYS_MADE_ON: list[str] = []  # the thread each DPoP key was made on


def _made_key(bits: int) -> RSA.RsaKey:
    DPOP_KEYS_MADE_ON.append(threading.current_thread().name)
    return _dpop_key()


@pytest.fixture(autouse=True)
def _isolated_from_okta_config(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    # The SDK reads every OKTA_CLIENT_* variable and ./okta.yaml.
    for name in list(os.environ):
        if name.startswith("OKTA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    # Each DPoP client makes a 3072-bit RSA key (about 3 s here): the tests share one, which is all they change.
    monkeypatch.setattr(okta_dpop, "RSA", SimpleNamespace(RsaKey=RSA.RsaKey, generate=_made_key))


@pytest.fixture
async def okta() -> AsyncIterator[tuple[FakeOkta, str]]:
    context, ca_file = localhost_tls()
    fake = FakeOkta(api_token=API_TOKEN, client_id=CLIENT_ID, public_key_pem=_key_pair("good")[1],
                    page_size=2)
    await fake.start(context)
    fake.alice = fake.add_user("alice@example.com", "Alice", "Adams")  # type: ignore[attr-defined]
    staff = [fake.add_user(f"user{i}@example.com") for i in range(5)]
    fake.target = fake.add_group("jit-admins")  # type: ignore[attr-defined]
    fake.paged = fake.add_group("engineering", staff)  # type: ignore[attr-defined]
    yield fake, ca_file
    await fake.stop()


def _settings(fake: FakeOkta, ca_file: str, mode: str, **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"type": "okta", "org_url": fake.base_url, "ca_file": ca_file, "timeout": 5}
    if mode == "ssws":
        base["api_token"] = API_TOKEN
    else:
        base |= {"client_id": CLIENT_ID, "private_key": _key_pair("good")[0]}
    return base | overrides


@pytest.fixture(params=["ssws", "private_key"])
async def harness(request: pytest.FixtureRequest, okta: tuple[FakeOkta, str]) -> AsyncIterator[Harness]:
    fake, ca_file = okta
    mode = request.param
    connector = from_settings("okta", _settings(fake, ca_file, mode))

    async def bad() -> OktaConnector:
        wrong = {"api_token": "00wrong-token"} if mode == "ssws" else {"private_key": _key_pair("other")[0]}
        return from_settings("okta-bad", _settings(fake, ca_file, mode, **wrong))

    yield Harness(connector=connector, controls=fake, existing_email="alice@example.com",
                  unknown_email="nobody@example.com", target=Target(TargetKind.GROUP, fake.target),  # type: ignore[attr-defined]
                  paged_group=fake.paged, paged_group_size=5, bad_credentials=bad)  # type: ignore[attr-defined]
    await connector.aclose()


@pytest.fixture
async def ssws(okta: tuple[FakeOkta, str]) -> AsyncIterator[tuple[OktaConnector, FakeOkta]]:
    fake, ca_file = okta
    connector = from_settings("okta", _settings(fake, ca_file, "ssws"))
    yield connector, fake
    await connector.aclose()


async def test_api_token_is_sent_as_documented_ssws_header_with_a_space(
    ssws: tuple[OktaConnector, FakeOkta],
) -> None:
    connector, fake = ssws
    await connector.find_user("alice@example.com")
    await connector.list_members("engineering")
    assert fake.auth_headers and set(fake.auth_headers) == {f"SSWS {API_TOKEN}"}


async def test_private_key_jwt_token_is_fetched_once_and_reused(okta: tuple[FakeOkta, str]) -> None:
    fake, ca_file = okta
    connector = from_settings("okta", _settings(fake, ca_file, "private_key"))
    try:
        user = await connector.find_user("alice@example.com")
        assert user is not None
        await connector.grant(user, Target(TargetKind.GROUP, fake.target), grant_id="g", expires_at=EXPIRES)  # type: ignore[attr-defined]
        await connector.list_members("engineering")
    finally:
        await connector.aclose()
    assert fake.token_requests == 2  # the first answer is the use_dpop_nonce challenge
    assert all(h.startswith("DPoP ") for h in fake.auth_headers)


async def test_oauth_mode_uses_dpop_by_default_with_the_nonce_and_bound_proofs(
        okta: tuple[FakeOkta, str]) -> None:
    fake, ca_file = okta  # requires DPoP, as new API Services apps do by default
    connector = from_settings("okta", _settings(fake, ca_file, "private_key"))
    try:
        assert await connector.find_user("alice@example.com") is not None
        await connector.list_members("engineering")
    finally:
        await connector.aclose()
    token_proof, *api_proofs = fake.dpop.proofs
    assert token_proof["htm"] == "POST" and token_proof["htu"] == fake.base_url + "/oauth2/v1/token"
    assert token_proof["nonce"] == fake.dpop.nonce and "ath" not in token_proof
    assert api_proofs and all("ath" in p for p in api_proofs)
    assert {p["htu"].removeprefix(fake.base_url) for p in api_proofs} >= {"/api/v1/users", "/api/v1/groups"}
    assert len({p["jti"] for p in fake.dpop.proofs}) == len(fake.dpop.proofs)


async def test_the_dpop_key_is_made_off_the_event_loop(okta: tuple[FakeOkta, str]) -> None:
    # The SDK makes an RSA-3072 key for DPoP (seconds of CPU): building the connector (startup, a policy
    # reload) must not stall the event loop for it.
    fake, ca_file = okta
    DPOP_KEYS_MADE_ON.clear()
    connector = from_settings("okta", _settings(fake, ca_file, "private_key"))
    try:
        assert DPOP_KEYS_MADE_ON == []
        assert await connector.find_user("alice@example.com") is not None
    finally:
        await connector.aclose()
    assert len(DPOP_KEYS_MADE_ON) == 1 and DPOP_KEYS_MADE_ON[0] != threading.main_thread().name


async def test_dpop_off_against_an_app_that_requires_it_fails_check_naming_dpop(
        okta: tuple[FakeOkta, str]) -> None:
    fake, ca_file = okta
    connector = from_settings("okta", _settings(fake, ca_file, "private_key", dpop=False))
    try:
        checks = await connector.check()
    finally:
        await connector.aclose()
    failed = [c for c in checks if not c.ok]
    assert len(failed) == 1 and "DPoP" in failed[0].message and "dpop: false" in failed[0].message


async def test_dpop_can_be_turned_off_for_an_app_that_does_not_require_it(okta: tuple[FakeOkta, str]) -> None:
    fake, ca_file = okta
    fake.require_dpop = False
    connector = from_settings("okta", _settings(fake, ca_file, "private_key", dpop=False))
    try:
        assert await connector.find_user("alice@example.com") is not None
    finally:
        await connector.aclose()
    assert fake.token_requests == 1 and all(h.startswith("Bearer ") for h in fake.auth_headers)


async def test_private_key_without_a_granted_scope_is_refused_with_scope_advice(
    okta: tuple[FakeOkta, str],
) -> None:
    fake, ca_file = okta
    connector = from_settings("okta", _settings(fake, ca_file, "private_key", scopes=["okta.users.read"]))
    try:
        checks = await connector.check()
    finally:
        await connector.aclose()
    failed = [c for c in checks if not c.ok]
    assert failed and "okta.groups.manage" in failed[0].message


async def test_wrong_api_token_check_says_how_to_fix_it(okta: tuple[FakeOkta, str]) -> None:
    fake, ca_file = okta
    connector = from_settings("okta", _settings(fake, ca_file, "ssws", api_token="00nope"))
    try:
        checks = await connector.check()
    finally:
        await connector.aclose()
    assert any(not c.ok and "Admin > Security > API" in c.message for c in checks)


async def test_list_members_follows_link_next_pages(ssws: tuple[OktaConnector, FakeOkta]) -> None:
    connector, fake = ssws
    before = fake.api_calls
    members = await connector.list_members(fake.paged)  # type: ignore[attr-defined]
    assert len(members) == 5 and fake.api_calls - before == 3


async def test_group_can_be_named_instead_of_id(ssws: tuple[OktaConnector, FakeOkta]) -> None:
    connector, _ = ssws
    assert len(await connector.list_members("engineering")) == 5
    with pytest.raises(NotFound):
        await connector.list_members("no-such-group")


async def test_rate_limit_reset_is_read_against_okta_date(ssws: tuple[OktaConnector, FakeOkta]) -> None:
    connector, fake = ssws
    fake.rate_limit_next(30)
    with pytest.raises(RateLimited) as info:
        await connector.find_user("alice@example.com")
    assert 29 <= info.value.retry_after <= 31


async def test_a_standing_budget_answers_429_with_okta_headers_once_spent(
        ssws: tuple[OktaConnector, FakeOkta]) -> None:
    connector, fake = ssws
    budget = fake.limit_rate(3, window=60, clock=lambda: 1_000_000_000.3)  # the window ends at …020
    for _ in range(3):
        assert await connector.find_user("alice@example.com") is not None
    with pytest.raises(RateLimited) as info:
        await connector.find_user("alice@example.com")
    assert info.value.retry_after == 20.0  # Reset …020 against Okta's Date …000 (our clock is not Okta's)
    assert budget.windows == [(999_999_960, 3)] and budget.refused == 1


async def test_every_answer_passes_the_budget_okta_states_on(ssws: tuple[OktaConnector, FakeOkta]) -> None:
    connector, fake = ssws
    fake.limit_rate(10, window=60)
    box = Budget()
    token = RATE_BUDGET.set(box)  # as ResilientConnector does around each call
    try:
        await connector.find_user("alice@example.com")
        assert box.remaining == 9 and 0 < box.reset_in <= 60
        await connector.grant(IdpUser(fake.alice, "alice@example.com"), Target(TargetKind.GROUP, fake.target),  # type: ignore[attr-defined]
                              grant_id="g1", expires_at=EXPIRES)
        assert box.remaining is not None and box.remaining <= 8  # the membership check and the PUT
    finally:
        RATE_BUDGET.reset(token)


def test_rate_limit_reset_is_placed_to_the_sub_second_by_a_clock_in_step_with_date() -> None:
    headers = {"X-Rate-Limit-Reset": "1000", "Date": formatdate(999, usegmt=True)}
    assert _retry_after(headers, clock=lambda: 999.4) == pytest.approx(0.6)  # Okta answered within 999
    assert _retry_after(headers, clock=lambda: 1000.2) == 0.0  # the answer took a while: the reset is past
    assert _retry_after(headers, clock=lambda: 1003.0) == 1.0  # our clock is out of step: Date decides
    assert _retry_after(headers, clock=lambda: 990.0) == 1.0
    assert _retry_after({"X-Rate-Limit-Reset": "1000"}, clock=lambda: 999.25) == 0.75  # no Date: ours
    assert _retry_after({}, clock=lambda: 999.0) == 60.0  # no reset: Okta's limits reset each minute


async def test_missing_membership_target_on_grant_is_not_found(ssws: tuple[OktaConnector, FakeOkta]) -> None:
    connector, fake = ssws
    user = IdpUser(id="00u00000000000000000", email="ghost@example.com")
    with pytest.raises(NotFound):
        await connector.grant(user, Target(TargetKind.GROUP, fake.target), grant_id="g", expires_at=EXPIRES)  # type: ignore[attr-defined]
    await connector.revoke(user, Target(TargetKind.GROUP, fake.target), grant_id="g")  # gone = revoked


async def test_slow_okta_is_a_transient_timeout(okta: tuple[FakeOkta, str]) -> None:
    fake, ca_file = okta
    connector = from_settings("okta", _settings(fake, ca_file, "ssws", timeout=0.3))
    fake.slow_next(2)
    try:
        with pytest.raises(Transient):
            await connector.find_user("alice@example.com")
    finally:
        await connector.aclose()


async def test_connection_refused_is_transient(okta: tuple[FakeOkta, str]) -> None:
    fake, ca_file = okta
    await fake.stop()
    connector = from_settings("okta", _settings(fake, ca_file, "ssws"))
    try:
        with pytest.raises(Transient):
            await connector.find_user("alice@example.com")
        checks = await connector.check()
    finally:
        await connector.aclose()
    assert any(not c.ok and "Cannot reach Okta" in c.message for c in checks)


async def test_terminate_sessions_revokes_at_okta(ssws: tuple[OktaConnector, FakeOkta]) -> None:
    connector, fake = ssws
    user = await connector.find_user("alice@example.com")
    assert user is not None
    await connector.terminate_sessions(user)
    assert fake.revoked_sessions == [user.id]
    # without oauthTokens=true Okta leaves the OAuth / OIDC tokens it issued to the user alive
    assert fake.revoked_oauth_tokens == [user.id]


@pytest.mark.parametrize("status", ["SUSPENDED", "DEPROVISIONED"])
async def test_a_suspended_or_deprovisioned_account_is_never_granted(
        ssws: tuple[OktaConnector, FakeOkta], status: str) -> None:
    connector, fake = ssws
    user = await connector.find_user("alice@example.com")  # search finds users in every status
    assert user is not None
    fake.set_status(user.id, status)  # e.g. deactivated after the directory cached the lookup
    with pytest.raises(AccountInactive) as info:
        await connector.grant(user, Target(TargetKind.GROUP, fake.target), grant_id="g1",  # type: ignore[attr-defined]
                              expires_at=EXPIRES)
    assert not fake.is_member(Target(TargetKind.GROUP, fake.target), user.id)  # type: ignore[attr-defined]
    assert not info.value.retryable and "Okta account is" in info.value.user_message


async def test_find_user_prefers_the_current_account_over_a_deprovisioned_one(
        ssws: tuple[OktaConnector, FakeOkta]) -> None:
    connector, fake = ssws
    old = fake.add_user("bob@example.com", "Bob", "Old")
    fake.set_status(old, "DEPROVISIONED")
    fake.users[old]["profile"]["login"] = "bob.old@example.com"
    current = fake.add_user("bob@example.com", "Bob", "New")
    user = await connector.find_user("bob@example.com")
    assert user is not None and user.id == current


async def test_terminate_sessions_needs_users_manage_scope(okta: tuple[FakeOkta, str]) -> None:
    fake, ca_file = okta
    connector = from_settings("okta", _settings(fake, ca_file, "private_key"))
    try:
        with pytest.raises(PermissionDenied):
            await connector.terminate_sessions(IdpUser(id=fake.alice, email="alice@example.com"))  # type: ignore[attr-defined]
    finally:
        await connector.aclose()


async def test_registry_builds_okta_connector(okta: tuple[FakeOkta, str]) -> None:
    fake, ca_file = okta
    connector = build_connector("okta", _settings(fake, ca_file, "ssws"))
    assert isinstance(connector, OktaConnector)
    await connector.aclose()


def test_bad_settings_raise_config_error_without_the_secret() -> None:
    with pytest.raises(ConfigError) as info:
        from_settings("okta", {"type": "okta", "org_url": "http://x.okta.com", "api_token": API_TOKEN,
                               "client_id": "c", "private_key": "k", "surprise": 1})
    assert API_TOKEN not in str(info.value)
    assert "surprise" in str(info.value)


async def test_no_secret_in_errors_or_logs(
    okta: tuple[FakeOkta, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, ca_file = okta
    caplog.set_level(logging.DEBUG)
    private_key = _key_pair("good")[0]
    secrets = [API_TOKEN, "00nope-secret", private_key.splitlines()[1]]
    errors: list[BaseException] = []
    for mode, extra in (("ssws", {}), ("ssws", {"api_token": "00nope-secret"}), ("private_key", {})):
        connector = from_settings("okta", _settings(fake, ca_file, mode, **extra))
        try:
            fake.rate_limit_next(1)
            fake.fail_next(500)
            fake.forbid_next()
            for _ in range(4):
                try:
                    await connector.grant(IdpUser(id=fake.alice, email="a"),  # type: ignore[attr-defined]
                                          Target(TargetKind.GROUP, fake.target), grant_id="g",  # type: ignore[attr-defined]
                                          expires_at=EXPIRES)
                except Exception as exc:  # noqa: BLE001 - collecting every error's text
                    errors.append(exc)
            checks = await connector.check()
        finally:
            await connector.aclose()
    texts = [caplog.text, *map(str, errors), *map(repr, errors), *(c.message for c in checks)]
    texts += [getattr(e, "user_message", "") for e in errors]
    assert len(errors) >= 4
    for secret in secrets:
        assert not any(secret in text for text in texts)
