"""End to end: the services, the Google connector with ``expiry_backstop: true`` and the fake Google (Directory
and Cloud Identity Groups APIs) on the same manual clock. jitbot grants, extends, is stopped past the expiry
(the fake ends the membership itself), and records the end when it runs again."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from connectors.base import Target, TargetKind
from connectors.google_expiry import SCOPE_CLOUD_IDENTITY_GROUPS
from storage.tables import Grant
from tests.conftest import POLICY, DbFactory
from tests.fakes.idp.google import SCOPE_GROUP_MEMBER, SCOPE_USER_READ, FakeGoogleWorkspace
from tests.services.stack import Stack, make_stack

SA, ADMIN = "jitbot@p.iam.gserviceaccount.com", "admin@example.com"
ALICE, GROUP = "alice@example.com", "ops@example.com"


@pytest.fixture
async def google(clock: ManualClock) -> AsyncIterator[tuple[FakeGoogleWorkspace, str]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fake = FakeGoogleWorkspace(public_key_pem=public, client_email=SA, subject=ADMIN, clock=clock.now,
                               authorized_scopes=(SCOPE_USER_READ, SCOPE_GROUP_MEMBER, SCOPE_CLOUD_IDENTITY_GROUPS))
    fake.add_user(ADMIN)
    fake.alice = fake.add_user(ALICE)  # type: ignore[attr-defined]
    fake.add_group(GROUP)
    await fake.start()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    yield fake, json.dumps({"type": "service_account", "private_key": private, "client_email": SA,
                            "token_uri": fake.token_uri})
    assert fake.spec_violations == []
    await fake.stop()


async def _stack(db_factory: DbFactory, clock: ManualClock, fake: FakeGoogleWorkspace, key_json: str) -> Stack:
    doc = yaml.safe_load(POLICY)
    doc["connectors"]["gw"] = {"type": "google", "service_account_json": key_json, "subject": ADMIN,
                               "api_base_url": fake.url, "cloud_identity_base_url": fake.url, "timeout": 5,
                               "expiry_backstop": True}
    doc["eligibilities"].append({"name": "ops", "description": "Ops", "connector": "gw",
                                 "target": {"group": GROUP}, "requestors": {"groups": ["engineers"]},
                                 "max_duration": "4h", "default_duration": "1h"})
    return await make_stack(db_factory(), parse_policy(yaml.safe_dump(doc), source="test", env={}), clock)


async def _grant(s: Stack, rid: str) -> Grant:
    async with s.rt.db.sessions() as session:
        return (await session.execute(select(Grant).where(Grant.request_id == rid))).scalar_one()  # type: ignore[arg-type]


async def test_grant_extend_and_the_idp_ending_access_while_jitbot_is_stopped(
        db_factory: DbFactory, clock: ManualClock, google: tuple[FakeGoogleWorkspace, str]) -> None:
    fake, key_json = google
    s = await _stack(db_factory, clock, fake, key_json)
    req = await s.requests.submit(requester=ALICE, eligibility="ops", duration=timedelta(hours=1), justification="fix")
    await s.worker.run_until_idle()
    g = await _grant(s, req.id)
    key = (GROUP, fake.alice)  # type: ignore[attr-defined]
    assert g.status == "active" and fake.expiries[key] == g.expires_at  # the grant's end, set at the add
    new = await s.grants.extend(request_id=req.id, actor=ALICE, by=timedelta(hours=1))
    assert fake.expiries[key] == new  # moved with the extension
    target = Target(TargetKind.GROUP, GROUP)
    clock.advance(timedelta(hours=2, minutes=1))  # jitbot is stopped: no worker runs
    assert fake.expire_due() == [key]  # Google ends it on its own
    assert not fake.is_member(target, fake.alice)  # type: ignore[attr-defined]
    await s.worker.run_until_idle()  # jitbot is back: it records the end (the removal finds nothing)
    ended = await _grant(s, req.id)
    assert ended.status == "ended" and ended.end_reason == "expired"
    assert not fake.is_member(target, fake.alice)  # type: ignore[attr-defined]
