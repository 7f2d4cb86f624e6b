"""The optional ``sign_ins`` capability (recovery-account monitoring) against the strict fakes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base import PermissionDenied, sign_in_log
from connectors.okta import OktaConnector, from_settings
from connectors.resilience import ResilientConnector
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
