"""The optional ``sign_ins`` capability (recovery-account monitoring) against the strict fakes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base import PermissionDenied, sign_in_log
from connectors.entra import EntraConnector
from connectors.entra import from_settings as entra_settings
from connectors.okta import OktaConnector, from_settings
from connectors.resilience import ResilientConnector
from tests.fakes.idp.entra import DEFAULT_ROLES, FakeEntra
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.tls import localhost_tls

TOKEN = "00okta-log-reader-token"
ROOT = "breakglass@example.com"


@pytest.fixture
async def okta(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> AsyncIterator[
        tuple[OktaConnector, FakeOkta]]:
    for name in list(os.environ):
        if name.startswith("OKTA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    context, ca_file = localhost_tls()
    fake = FakeOkta(api_token=TOKEN, page_size=2)
    await fake.start(context)
    connector = from_settings("okta", {"type": "okta", "org_url": fake.base_url, "api_token": TOKEN,
                                       "ca_file": ca_file, "timeout": 5})
    yield connector, fake
    await connector.aclose()
    await fake.stop()


async def test_okta_sign_ins_are_read_incrementally_across_pages(okta: tuple[OktaConnector, FakeOkta]) -> None:
    connector, fake = okta
    log = fake.system_log
    now = datetime.now(UTC)
    start = now - timedelta(hours=1)
    log.add_sign_in(ROOT, at=now - timedelta(hours=2))  # before the start: never reported
    first = [log.add_sign_in(ROOT, at=now - timedelta(minutes=50 - i), ip=f"198.51.100.{i}") for i in range(5)]
    log.add_sign_in("someone@example.com", at=now - timedelta(minutes=30))
    log.add_sign_in(ROOT, at=now - timedelta(minutes=20), event_type="user.authentication.sso")

    events, cursor = await connector.sign_ins(ROOT, None, start=start)
    assert [e.id for e in events] == first  # five events in pages of two
    assert events[0].ip == "198.51.100.0" and events[0].client and events[0].outcome == "SUCCESS"
    assert events[0].account == ROOT and events[0].at.tzinfo is not None and "Berlin" in events[0].detail
    assert len([r for r in log.requests if "after" in r]) >= 3
    assert all(r["filter"] == f'eventType eq "user.session.start" and actor.alternateId eq "{ROOT}"'
               for r in log.requests)

    again, cursor = await connector.sign_ins(ROOT, cursor, start=start)
    assert again == []
    later = log.add_sign_in(ROOT, at=now)
    newer, _ = await connector.sign_ins(ROOT, cursor, start=start)
    assert [e.id for e in newer] == [later]


async def test_okta_sign_ins_capability_and_errors(okta: tuple[OktaConnector, FakeOkta]) -> None:
    connector, fake = okta
    wrapped = ResilientConnector(connector)
    assert sign_in_log(wrapped) is connector
    fake.forbid_next()
    with pytest.raises(PermissionDenied):
        await connector.sign_ins(ROOT, None, start=datetime.now(UTC))


TENANT, CLIENT, SECRET = "11111111-2222-3333-4444-555555555555", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "s3cr3t~v"


@pytest.fixture
async def entra(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[EntraConnector, FakeEntra]]:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    context, ca_file = localhost_tls()
    fake = FakeEntra(tenant_id=TENANT, client_id=CLIENT, client_secret=SECRET, page_size=2,
                     roles=(*DEFAULT_ROLES, "AuditLog.Read.All"))
    await fake.start(context)
    connector = entra_settings("entra", {"type": "entra", "tenant_id": TENANT, "client_id": CLIENT,
                                         "client_secret": SECRET, "authority_url": fake.authority_url,
                                         "graph_url": fake.graph_url, "ca_file": ca_file, "timeout": 5})
    yield connector, fake
    await connector.aclose()
    await fake.stop()


async def test_entra_sign_ins_page_overlap_and_no_repeats(entra: tuple[EntraConnector, FakeEntra]) -> None:
    connector, fake = entra
    log = fake.sign_in_log
    now = datetime.now(UTC).replace(microsecond=0)
    log.add_sign_in(ROOT, at=now - timedelta(hours=2))  # before the start
    first = [log.add_sign_in(ROOT, at=now - timedelta(minutes=50 - i), ip=f"198.51.100.{i}") for i in range(5)]
    log.add_sign_in("someone@example.com", at=now - timedelta(minutes=30))
    events, cursor = await connector.sign_ins(ROOT, None, start=now - timedelta(hours=1))
    assert [e.id for e in events] == first  # oldest first, read in pages of two (newest first at Graph)
    assert events[0].ip == "198.51.100.0" and events[0].outcome == "SUCCESS" and "Amsterdam" in events[0].detail
    assert len([r for r in log.requests if "$skiptoken" in r]) == 2
    assert (await connector.sign_ins(ROOT, cursor, start=now))[0] == []
    late = log.add_sign_in(ROOT, at=now - timedelta(minutes=47), error_code=50126)  # arrived late, in the overlap
    newer, cursor = await connector.sign_ins(ROOT, cursor, start=now)
    assert [e.id for e in newer] == [late] and newer[0].outcome == "FAILURE 50126"
    assert (await connector.sign_ins(ROOT, cursor, start=now))[0] == []


async def test_entra_sign_ins_need_the_audit_log_permission(entra: tuple[EntraConnector, FakeEntra]) -> None:
    connector, fake = entra
    fake.roles.discard("AuditLog.Read.All")
    with pytest.raises(PermissionDenied):
        await connector.sign_ins(ROOT, None, start=datetime.now(UTC))
