"""``jitbot connectors check`` against the strict provider fakes: each missing permission, scope, group or
role is one line naming it and where to grant or create it, and any such line makes the exit status 1."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import okta.dpop as okta_dpop
import pytest
from Cryptodome.PublicKey import RSA
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.cli import main
from bot.domain.policy import Policy
from bot.governance.connector_check import Report, check_connectors
from bot.policy_file import parse_policy
from connectors.entra_pim import PIM_WRITE
from connectors.google_expiry import SCOPE_CLOUD_IDENTITY_GROUPS
from tests.conftest import POLICY
from tests.connectors.idp_fixtures import (
    ENTRA_CLIENT,
    as_yaml,
    entra_fake,
    entra_settings,
    isolate_okta_sdk,
    okta_fake,
    okta_settings,
)
from tests.fakes.idp.entra import DEFAULT_ROLES, FakeEntra
from tests.fakes.idp.google import SCOPE_GROUP_MEMBER, SCOPE_USER_READ, SCOPE_USER_SECURITY, FakeGoogleWorkspace
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.onelogin import FakeOneLogin
from tests.fakes.idp.pingone import FakePingOne

RECOVERY = "breakglass@example.com"


def _policy(connector: str, *, target: str = "group: prod-admins", requestors: str = "engineers",
            approvers: str = "leads", sessions: bool = False, recovery: bool = False) -> Policy:
    text = (f'audit_channel: "#jit-audit"\nconnectors:\n{connector}'
            "eligibilities:\n"
            "  - name: prod-admin\n"
            "    connector: idp\n"
            f"    target: {{{target}}}\n"
            f"    requestors: {{groups: [{requestors}]}}\n"
            "    max_duration: 2h\n"
            f"    terminate_sessions: {json.dumps(sessions)}\n"
            f"    approvals:\n      - approvers: {{groups: [{approvers}]}}\n")
    if recovery:
        text += f"recovery_accounts:\n  - {{email: {RECOVERY}, connector: idp}}\n"
    return parse_policy(text, env={}).policy


async def _check(policy: Policy) -> Report:
    return await check_connectors(policy, list(policy.connectors))


def _failures(report: Report) -> list[str]:
    return [line for line in report.lines if line.startswith("  ✗")]


# --- the command line (memory connector) -----------------------------------------------------------


def test_a_fully_configured_memory_connector_passes_with_each_group_listed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    assert main(["connectors", "check", "--policy", str(path)]) == 0
    assert capsys.readouterr().out == (
        "demo (memory)\n"
        "  ✓ directory: 6 users, 5 groups declared\n"
        "  ✓ target group 'prod-admins': exists\n"
        "  ✓ target group 'readonly': exists\n"
        "  ✓ group 'engineers': exists\n"
        "  ✓ group 'leads': exists\n"
        "  ✓ group 'security': exists\n")


def test_a_missing_requestor_group_is_one_line_naming_where_and_exits_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY.replace("requestors: {groups: [engineers]}\n    max_duration: 4h",
                                   "requestors: {groups: [ghosts]}\n    max_duration: 4h"))
    assert main(["connectors", "check", "--policy", str(path)]) == 1
    out = capsys.readouterr().out
    assert _lines(out) == ["  ✗ group 'ghosts': does not exist at demo (named by readonly: requestors): create it "
                           "in the connector's groups or roles in the policy, or correct the name in the policy"]


def test_a_missing_target_and_a_feature_the_connector_type_lacks_are_each_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY.replace("target: {group: readonly}",
                                   "target: {role: superuser}\n    terminate_sessions: true")
                    + f"recovery_accounts:\n  - {{email: {RECOVERY}, connector: demo}}\n")
    assert main(["connectors", "check", "--policy", str(path)]) == 1
    assert _lines(capsys.readouterr().out) == [
        "  ✗ sessions: terminate_sessions on eligibility readonly: this connector type cannot end sessions; "
        "remove it there",
        f"  ✗ sign-ins: watching recovery account {RECOVERY}: this connector type cannot read sign-ins; move it "
        "to an okta or entra connector, or remove it",
        "  ✗ groups: not checked until the lines above pass"]
    path.write_text(POLICY.replace("target: {group: readonly}", "target: {role: superuser}"))
    assert main(["connectors", "check", "--policy", str(path)]) == 1
    assert _lines(capsys.readouterr().out) == [
        "  ✗ target role 'superuser': does not exist at demo (named by readonly: target): create it in the "
        "connector's groups or roles in the policy, or correct the name in the policy"]


def _lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("  ✗")]


# --- Microsoft Entra -----------------------------------------------------------------------------------


@pytest.fixture
async def entra(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeEntra, str]]:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    async with entra_fake() as (fake, ca_file):
        fake.roles = {*DEFAULT_ROLES, "AuditLog.Read.All"}
        for name in ("prod-admins", "engineers", "leads"):
            fake.add_group(name)
        yield fake, ca_file


def _entra_policy(fake: FakeEntra, ca_file: str, **kw: Any) -> Policy:
    return _policy(as_yaml("idp", entra_settings(fake, ca_file)), sessions=True, recovery=True, **kw)


async def test_entra_fully_configured_passes(entra: tuple[FakeEntra, str]) -> None:
    report = await _check(_entra_policy(*entra))
    assert report.ok and _failures(report) == []
    assert [line.split(":")[0] for line in report.lines] == [
        "idp (entra)", "  ✓ config", "  ✓ entra token", "  ✓ graph groups", "  ✓ graph users",
        "  ✓ graph GroupMember.ReadWrite.All", "  ✓ graph User.RevokeSessions.All", "  ✓ graph AuditLog.Read.All",
        "  ✓ expiry backstop", "  ✓ target group 'prod-admins'", "  ✓ group 'engineers'", "  ✓ group 'leads'"]


@pytest.mark.parametrize(("missing", "needed_by"), [
    ("User.RevokeSessions.All", "terminate_sessions on eligibility prod-admin"),
    ("AuditLog.Read.All", f"watching the sign-ins of recovery account {RECOVERY}"),
    ("GroupMember.ReadWrite.All", "granting eligibility prod-admin"),
])
async def test_entra_a_missing_graph_permission_is_one_line_naming_it(
        entra: tuple[FakeEntra, str], missing: str, needed_by: str) -> None:
    fake, ca_file = entra
    fake.roles.discard(missing)
    report = await _check(_entra_policy(fake, ca_file))
    assert not report.ok
    assert _failures(report) == [
        f"  ✗ graph {missing}: {needed_by} needs the Microsoft Graph application permission {missing}, which the "
        f"app's token lacks: in the Entra admin center > App registrations > {ENTRA_CLIENT} > API permissions, "
        f"add {missing} (Application) and grant admin consent.",
        "  ✗ groups: not checked until the lines above pass"]


async def test_entra_a_missing_approver_group_is_one_line(entra: tuple[FakeEntra, str]) -> None:
    report = await _check(_entra_policy(*entra, approvers="prod-approvers"))
    assert _failures(report) == [
        "  ✗ group 'prod-approvers': does not exist at idp (named by prod-admin: approvals[1]): create it in the "
        "Microsoft Entra admin center > Groups > All groups, or correct the name in the policy"]
    assert not report.ok


# --- Okta ----------------------------------------------------------------------------------------------


@pytest.fixture
def okta_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    isolate_okta_sdk(monkeypatch, tmp_path)
    key = RSA.generate(2048)  # the SDK's DPoP key is RSA-3072 (seconds of CPU); any RSA key serves here
    monkeypatch.setattr(okta_dpop, "RSA", SimpleNamespace(RsaKey=RSA.RsaKey, generate=lambda bits: key))


@pytest.fixture
async def okta(okta_isolated: None) -> AsyncIterator[tuple[FakeOkta, str, str]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    async with okta_fake() as (fake, ca_file):
        fake.client_id = "0oa1jitbotservice"
        fake.public_key_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        fake.granted_scopes = {"okta.groups.manage", "okta.users.read", "okta.users.manage", "okta.logs.read"}
        for name in ("prod-admins", "engineers", "leads"):
            fake.add_group(name)
        yield fake, ca_file, private


def _okta_oauth(fake: FakeOkta, ca_file: str, private: str, scopes: list[str]) -> dict[str, Any]:
    return {"type": "okta", "org_url": fake.base_url, "client_id": fake.client_id, "private_key": private,
            "scopes": scopes, "ca_file": ca_file, "timeout": 5}


ALL_SCOPES = ["okta.groups.manage", "okta.users.read", "okta.users.manage", "okta.logs.read"]


async def test_okta_oauth_with_dpop_fully_configured_passes(okta: tuple[FakeOkta, str, str]) -> None:
    fake, ca_file, private = okta
    report = await _check(_policy(as_yaml("idp", _okta_oauth(fake, ca_file, private, ALL_SCOPES)),
                                  sessions=True, recovery=True))
    assert report.ok, report.lines
    assert [line.split(":")[0] for line in report.lines] == [
        "idp (okta)", "  ✓ config", "  ✓ okta groups", "  ✓ okta users", "  ✓ okta system log",
        "  ✓ expiry backstop", "  ✓ target group 'prod-admins'", "  ✓ group 'engineers'", "  ✓ group 'leads'"]


async def test_okta_a_scope_the_connector_does_not_ask_for_is_one_line(okta: tuple[FakeOkta, str, str]) -> None:
    fake, ca_file, private = okta
    scopes = ["okta.groups.manage", "okta.users.read", "okta.logs.read"]
    report = await _check(_policy(as_yaml("idp", _okta_oauth(fake, ca_file, private, scopes)),
                                  sessions=True, recovery=True))
    assert _failures(report) == [
        "  ✗ okta scope okta.users.manage: terminate_sessions on eligibility prod-admin needs the scope "
        "okta.users.manage, which the connector does not ask for: add it to the connector's scopes and grant it "
        "to app 0oa1jitbotservice (Okta Admin Console > Applications > the app > Okta API Scopes).",
        "  ✗ groups: not checked until the lines above pass"]
    assert not report.ok


async def test_okta_a_scope_okta_does_not_grant_is_named(okta: tuple[FakeOkta, str, str]) -> None:
    fake, ca_file, private = okta
    fake.granted_scopes.discard("okta.logs.read")
    report = await _check(_policy(as_yaml("idp", _okta_oauth(fake, ca_file, private, ALL_SCOPES)),
                                  sessions=True, recovery=True))
    assert _failures(report) == [
        "  ✗ okta scope okta.logs.read: Okta does not grant the scope okta.logs.read: grant it to app "
        "0oa1jitbotservice in the Okta Admin Console > Applications > the app > Okta API Scopes, or remove it "
        "from the connector's scopes.",
        "  ✗ groups: not checked until the lines above pass"]


async def test_okta_api_token_a_missing_target_group_is_one_line(okta: tuple[FakeOkta, str, str]) -> None:
    fake, ca_file, _ = okta
    report = await _check(_policy(as_yaml("idp", okta_settings(fake, ca_file)), target="group: prod-dba"))
    assert _failures(report) == [
        "  ✗ target group 'prod-dba': does not exist at idp (named by prod-admin: target): create it in the "
        "Okta Admin Console > Directory > Groups, or correct the name in the policy"]
    assert not report.ok


# --- Google Workspace ----------------------------------------------------------------------------------

GOOGLE_ADMIN = "admin@example.com"
GOOGLE_SA = "jitbot@jit-project.iam.gserviceaccount.com"


@pytest.fixture
async def google() -> AsyncIterator[tuple[FakeGoogleWorkspace, str]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fake = FakeGoogleWorkspace(public_key_pem=public, client_email=GOOGLE_SA, subject=GOOGLE_ADMIN)
    fake.add_user(GOOGLE_ADMIN, "Admin")
    for group in ("prod-admins@example.com", "engineers@example.com", "leads@example.com"):
        fake.add_group(group)
    await fake.start()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    key_json = json.dumps({"type": "service_account", "private_key": private, "client_email": GOOGLE_SA,
                           "client_id": "1234567890", "token_uri": fake.token_uri})
    yield fake, key_json
    await fake.stop()


def _google_policy(fake: FakeGoogleWorkspace, key_json: str, *, terminate_sessions: bool) -> Policy:
    settings = {"type": "google", "service_account_json": key_json, "subject": GOOGLE_ADMIN,
                "api_base_url": fake.url, "timeout": 5, "terminate_sessions": terminate_sessions}
    return _policy(as_yaml("idp", settings), target="group: prod-admins@example.com",
                   requestors="engineers@example.com", approvers="leads@example.com", sessions=True)


async def test_google_fully_configured_passes(google: tuple[FakeGoogleWorkspace, str]) -> None:
    report = await _check(_google_policy(*google, terminate_sessions=True))
    assert report.ok, report.lines


async def test_google_says_the_backstop_is_off_then_on_with_the_cloud_identity_scope(
        google: tuple[FakeGoogleWorkspace, str]) -> None:
    fake, key_json = google
    off = await _check(_google_policy(fake, key_json, terminate_sessions=True))
    assert any(line.startswith("  ✓ expiry backstop: off: with expiry_backstop: true") for line in off.lines)
    policy = _google_policy(fake, key_json, terminate_sessions=True)
    policy.connectors["idp"] |= {"expiry_backstop": True, "cloud_identity_base_url": fake.url}
    missing = await _check(policy)  # the Cloud Identity scope is not delegated yet
    assert _failures(missing)[0].startswith(f"  ✗ google scope {SCOPE_CLOUD_IDENTITY_GROUPS}")
    fake.authorized_scopes.add(SCOPE_CLOUD_IDENTITY_GROUPS)
    on = await _check(policy)
    assert on.ok, on.lines
    assert any(line.startswith("  ✓ google expiry backstop: memberships granted for eligibility prod-admin")
               for line in on.lines)


async def test_entra_with_the_backstop_probes_pim(entra: tuple[FakeEntra, str]) -> None:
    fake, ca_file = entra
    policy = _policy(as_yaml("idp", {**entra_settings(fake, ca_file), "expiry_backstop": True}))
    denied = await _check(policy)
    assert [line.split(":")[0] for line in _failures(denied)][:1] == ["  ✗ entra expiry backstop"]
    fake.roles |= {PIM_WRITE}
    ok = await _check(policy)
    assert ok.ok, ok.lines
    assert any(line.startswith("  ✓ entra expiry backstop") for line in ok.lines)


async def test_google_a_scope_not_delegated_is_named(google: tuple[FakeGoogleWorkspace, str]) -> None:
    fake, key_json = google
    fake.authorized_scopes = {SCOPE_USER_READ, SCOPE_GROUP_MEMBER}
    report = await _check(_google_policy(fake, key_json, terminate_sessions=True))
    assert _failures(report) == [
        f"  ✗ google scope {SCOPE_USER_SECURITY}: Google refuses a token with the scope {SCOPE_USER_SECURITY}: in "
        "the Admin console > Security > Access and data control > API controls > Domain-wide delegation, add it "
        "to client ID 1234567890.",
        "  ✗ groups: not checked until the lines above pass"]


async def test_google_sessions_not_enabled_on_the_connector_is_one_line(
        google: tuple[FakeGoogleWorkspace, str]) -> None:
    report = await _check(_google_policy(*google, terminate_sessions=False))
    assert _failures(report) == [
        "  ✗ google sessions: terminate_sessions on eligibility prod-admin needs terminate_sessions: true on the "
        f"connector: set it, and delegate the scope {SCOPE_USER_SECURITY} to client ID 1234567890 (Admin console "
        "> Security > Access and data control > API controls > Domain-wide delegation).",
        "  ✗ groups: not checked until the lines above pass"]


async def test_google_a_missing_group_is_one_line(google: tuple[FakeGoogleWorkspace, str]) -> None:
    fake, key_json = google
    del fake.groups["leads@example.com"]
    report = await _check(_google_policy(fake, key_json, terminate_sessions=True))
    assert _failures(report) == [
        "  ✗ group 'leads@example.com': does not exist at idp (named by prod-admin: approvals[1]): create it in "
        "the Google Admin console > Directory > Groups, or correct the name in the policy"]


# --- OneLogin and PingOne --------------------------------------------------------------------------------


async def test_onelogin_a_missing_role_is_one_line() -> None:
    fake = FakeOneLogin(client_id="ol-client", client_secret="ol-SECRET")
    prod, eng, leads = (fake.add_role(name) for name in ("Prod Admin", "Engineering", "Leads"))
    await fake.start()
    try:
        settings = {"type": "onelogin", "base_url": fake.url, "client_id": "ol-client", "client_secret": "ol-SECRET",
                    "timeout": 5}
        ok = await _check(_policy(as_yaml("idp", settings), target=f"role: '{prod}'",
                                  requestors=f"'role:{eng}'", approvers=f"'role:{leads}'", sessions=True))
        assert ok.ok, ok.lines
        assert "  ✓ expiry backstop: none: OneLogin role assignments have no expiry in the API; jitbot's own " \
               "revocation is the only end." in ok.lines
        missing = await _check(_policy(as_yaml("idp", settings), target=f"role: '{prod}'",
                                       requestors=f"'role:{eng}'", approvers="'role:999'"))
    finally:
        await fake.stop()
    assert _failures(missing) == [
        "  ✗ role '999': does not exist at idp (named by prod-admin: approvals[1]): create it in OneLogin > "
        "Users > Roles, or correct the name in the policy"]


async def test_pingone_a_missing_group_and_sessions_it_cannot_end_are_lines() -> None:
    fake = FakePingOne(environment_id="env-1", client_id="p1-client", client_secret="p1-SECRET")
    prod, eng, leads = fake.add_group(), fake.add_group(), fake.add_group()
    await fake.start()
    try:
        settings = {"type": "pingone", "environment_id": "env-1", "client_id": "p1-client",
                    "client_secret": "p1-SECRET", "region": "eu", "auth_base_url": fake.auth_base_url,
                    "api_base_url": fake.api_base_url, "timeout": 5}
        ok = await _check(_policy(as_yaml("idp", settings), target=f"group: {prod}", requestors=eng,
                                  approvers=leads))
        assert ok.ok, ok.lines
        assert any(line.startswith("  ✓ expiry backstop: none: PingOne") for line in ok.lines)
        gone = "0b4e9a1c-0000-4000-8000-000000000000"
        missing = await _check(_policy(as_yaml("idp", settings), target=f"group: {prod}", requestors=eng,
                                       approvers=gone))
        sessions = await _check(_policy(as_yaml("idp", settings), target=f"group: {prod}", requestors=eng,
                                        approvers=leads, sessions=True))
    finally:
        await fake.stop()
    assert _failures(missing) == [
        f"  ✗ group '{gone}': does not exist at idp (named by prod-admin: approvals[1]): create it in the PingOne "
        "admin console > Directory > Groups, or correct the name in the policy"]
    assert _failures(sessions)[0] == ("  ✗ sessions: terminate_sessions on eligibility prod-admin: this connector "
                                      "type cannot end sessions; remove it there")
