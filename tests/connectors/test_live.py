"""Smoke tests against real tenants: marked ``live`` and skipped unless their credentials are set.

Each provider needs its credentials plus a known user (``..._USER``, an email) and a group or role
that exists (``..._GROUP``) in environment variables named below. The tests only read (check, find
user, unknown user, list members); setting ``..._WRITE_GROUP`` (a sandbox group the user is not in)
adds a grant → is_member → revoke round trip that leaves the group as it found it. Any other
connector setting (a national cloud's ``graph_url``, a private ``ca_file``, ...) can be given as a
JSON object in ``..._SETTINGS``.

Run only these: ``pytest -m live tests/connectors/test_live.py``.

==========  =================================================================================
provider    variables (JITBOT_LIVE_ prefix)
==========  =================================================================================
okta        OKTA_ORG_URL, OKTA_TOKEN, OKTA_USER, OKTA_GROUP [OKTA_WRITE_GROUP]
entra       ENTRA_TENANT_ID, ENTRA_CLIENT_ID, ENTRA_CLIENT_SECRET, ENTRA_USER, ENTRA_GROUP
google      GOOGLE_SERVICE_ACCOUNT_FILE, GOOGLE_SUBJECT, GOOGLE_USER, GOOGLE_GROUP
onelogin    ONELOGIN_BASE_URL, ONELOGIN_CLIENT_ID, ONELOGIN_CLIENT_SECRET, ONELOGIN_USER,
            ONELOGIN_GROUP (``role:<id>``)
pingone     PINGONE_ENVIRONMENT_ID, PINGONE_CLIENT_ID, PINGONE_CLIENT_SECRET, PINGONE_USER,
            PINGONE_GROUP [PINGONE_REGION: com|eu|asia|ca]
==========  =================================================================================
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.base import Connector, parse_target_ref
from connectors.registry import build_connector

pytestmark = pytest.mark.live
PREFIX = "JITBOT_LIVE_"


@dataclass(frozen=True)
class Provider:
    type: str
    required: tuple[str, ...]  # variable names without the prefix, besides _USER and _GROUP
    settings: Callable[[Callable[[str], str]], dict[str, Any]]


PROVIDERS = {
    "okta": Provider("okta", ("ORG_URL", "TOKEN"), lambda v: {
        "org_url": v("ORG_URL"), "api_token": v("TOKEN")}),
    "entra": Provider("entra", ("TENANT_ID", "CLIENT_ID", "CLIENT_SECRET"), lambda v: {
        "tenant_id": v("TENANT_ID"), "client_id": v("CLIENT_ID"), "client_secret": v("CLIENT_SECRET")}),
    "google": Provider("google", ("SERVICE_ACCOUNT_FILE", "SUBJECT"), lambda v: {
        "service_account_file": v("SERVICE_ACCOUNT_FILE"), "subject": v("SUBJECT")}),
    "onelogin": Provider("onelogin", ("BASE_URL", "CLIENT_ID", "CLIENT_SECRET"), lambda v: {
        "base_url": v("BASE_URL"), "client_id": v("CLIENT_ID"), "client_secret": v("CLIENT_SECRET")}),
    "pingone": Provider("pingone", ("ENVIRONMENT_ID", "CLIENT_ID", "CLIENT_SECRET"), lambda v: (
        {"environment_id": v("ENVIRONMENT_ID"), "client_id": v("CLIENT_ID"), "client_secret": v("CLIENT_SECRET")}
        | ({"region": v("REGION")} if v("REGION") else {}))),
}


@dataclass
class Live:
    connector: Connector
    user: str
    group: str
    write_group: str


def _var(provider: str, name: str) -> str:
    return os.environ.get(f"{PREFIX}{provider.upper()}_{name}", "").strip()


@pytest.fixture(params=sorted(PROVIDERS))
async def live(request: pytest.FixtureRequest) -> AsyncIterator[Live]:
    name: str = request.param
    provider = PROVIDERS[name]
    missing = [f"{PREFIX}{name.upper()}_{v}" for v in (*provider.required, "USER", "GROUP") if not _var(name, v)]
    if missing:
        pytest.skip(f"no live {name} tenant configured: set {', '.join(missing)}")
    extra = json.loads(_var(name, "SETTINGS") or "{}")
    settings = {"type": provider.type, **provider.settings(lambda v: _var(name, v)), **extra}
    connector = build_connector(f"live-{name}", settings)
    try:
        yield Live(connector, _var(name, "USER"), _var(name, "GROUP"), _var(name, "WRITE_GROUP"))
    finally:
        await connector.aclose()


async def test_check_passes(live: Live) -> None:
    failed = [c for c in await live.connector.check() if not c.ok]
    assert not failed, "; ".join(f"{c.name}: {c.message}" for c in failed)


async def test_known_user_is_found_and_an_unknown_one_is_not(live: Live) -> None:
    user = await live.connector.find_user(live.user)
    assert user is not None and user.id and user.email.lower() == live.user.lower()
    assert await live.connector.find_user(f"jitbot-nobody-{secrets.token_hex(6)}@example.invalid") is None


async def test_group_members_are_listed(live: Live) -> None:
    members = await live.connector.list_members(live.group)
    assert all(m.id for m in members)
    assert len({m.id for m in members}) == len(members)  # paging returned no duplicates


async def test_grant_and_revoke_round_trip_in_a_sandbox_group(live: Live) -> None:
    if not live.write_group:
        pytest.skip("read-only run: set JITBOT_LIVE_<PROVIDER>_WRITE_GROUP to a sandbox group to test changes")
    user = await live.connector.find_user(live.user)
    assert user is not None
    target = parse_target_ref(live.write_group)
    if await live.connector.is_member(user, target):
        pytest.skip(f"{live.user} already is a member of {live.write_group}: pick a group they are not in")
    expires = datetime.now(UTC) + timedelta(minutes=5)
    try:
        assert (await live.connector.grant(user, target, grant_id="live-smoke", expires_at=expires)).added
        assert await live.connector.is_member(user, target)
        assert not (await live.connector.grant(user, target, grant_id="live-smoke-2", expires_at=expires)).added
    finally:
        await live.connector.revoke(user, target, grant_id="live-smoke")
    assert not await live.connector.is_member(user, target)
    await live.connector.revoke(user, target, grant_id="live-smoke-again")  # idempotent
