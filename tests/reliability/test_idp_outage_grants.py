"""Grants approved while the IdP is down wait for it (backoff until a deadline), then go through.

Okta (the fake org, TLS, through the real connector and SDK) answers every call 503 for 10 minutes of
the services' ManualClock; the connector's own retries run on a virtual clock. Checked by counts: every
grant ends up active, none failed, each requester told once that the grant waits on the IdP; and a
grant still failing at its deadline fails once, with its technical cause in the audit and the alert.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.domain.requests import Decision, Status
from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from connectors.resilience import ResilientConnector
from storage.tables import AccessRequest, Event, Grant, OutboxMessage
from tests.conftest import DbFactory
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.tls import localhost_tls
from tests.services.stack import Stack, make_stack

TOKEN = "00outage-okta-token"
USERS = [f"user{i}@example.com" for i in range(20)]
LEAD = "lead@example.com"


class VirtualTime:
    """The connector's monotonic clock: only its own sleeps move it."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
async def okta() -> AsyncIterator[tuple[FakeOkta, str]]:
    context, ca_file = localhost_tls()
    fake = FakeOkta(api_token=TOKEN, page_size=50)
    await fake.start(context)
    yield fake, ca_file
    await fake.stop()


async def _stack(db_factory: DbFactory, clock: ManualClock, fake: FakeOkta, ca_file: str,
                 retry_for: str | None = None) -> tuple[Stack, str]:
    for email in [*USERS, LEAD]:
        fake.add_user(email)
    gid = fake.add_group("jit-ops")
    settings = f"settings: {{grant_retry_for: {retry_for}}}" if retry_for else ""
    loaded = parse_policy(f"""
audit_channel: "#jit-audit"
{settings}
connectors:
  okta: {{type: okta, org_url: "{fake.base_url}", api_token: "{TOKEN}", ca_file: "{ca_file}", timeout: 10}}
eligibilities:
  - name: ops
    connector: okta
    target: {{group: {gid}}}
    requestors: {{users: [{", ".join(USERS)}]}}
    approvals: [{{approvers: {{users: [{LEAD}]}}}}]
    max_duration: 1h
""", source="outage.yml", env={})
    s = await make_stack(db_factory(), loaded, clock)
    inner = s.rt.connectors["okta"]
    assert isinstance(inner, ResilientConnector)
    vt = VirtualTime()
    s.rt.connectors["okta"] = ResilientConnector(inner.inner, timeout=10, max_concurrency=4, max_attempts=2,
                                                 sleep=vt.sleep, monotonic=vt.now, jitter=lambda: 1.0)
    return s, gid


async def _submit_and_approve_during_outage(s: Stack, fake: FakeOkta, users: list[str]) -> list[str]:
    reqs = [await s.requests.submit(requester=u, eligibility="ops", duration=timedelta(hours=1),
                                    justification="incident") for u in users]
    fake.go_down(503)
    for r in reqs:
        await s.approvals.decide(request_id=r.id, layer=1, approver=LEAD, decision=Decision.APPROVE)
    return [r.id for r in reqs]


async def _statuses(s: Stack) -> Counter[str]:
    async with s.rt.db.sessions() as session:
        return Counter((await session.execute(select(AccessRequest.status))).scalars())


async def _events(s: Stack, kind: str) -> list[Event]:
    async with s.rt.db.sessions() as session:
        return list((await session.execute(select(Event).where(Event.kind == kind))).scalars())


async def _tick_for(s: Stack, clock: ManualClock, span: timedelta, step: timedelta) -> None:
    end = clock.now() + span
    while clock.now() < end:
        await s.worker.tick()
        clock.advance(step)


async def test_twenty_grants_approved_in_a_ten_minute_idp_outage_are_all_granted_when_it_ends(
        db_factory: DbFactory, clock: ManualClock, okta: tuple[FakeOkta, str]) -> None:
    fake, ca_file = okta
    s, gid = await _stack(db_factory, clock, fake, ca_file)
    ids = await _submit_and_approve_during_outage(s, fake, USERS)

    await _tick_for(s, clock, timedelta(minutes=10), timedelta(seconds=10))
    assert await _statuses(s) == Counter({Status.APPROVED.value: 20})  # waiting, none failed
    waiting = await _events(s, "grant_waiting")
    assert sorted(str(e.request_id) for e in waiting) == sorted(ids)  # audited once each, with the cause
    assert all("503" in str(e.detail) for e in waiting)
    async with s.rt.db.sessions() as session:
        told = [m for m in (await session.execute(select(OutboxMessage))).scalars()
                if m.kind == "requester" and m.payload.get("event") == "waiting"]
    assert len(told) == 20 and "not answering" in told[0].payload["text"]

    fake.come_back()
    await _tick_for(s, clock, timedelta(minutes=2), timedelta(seconds=10))
    assert await _statuses(s) == Counter({Status.ACTIVE.value: 20})
    assert len(fake.members[gid]) == 20
    assert await _events(s, "grant_failed") == []
    async with s.rt.db.sessions() as session:  # the revocation's own "failing" alert is still to come
        assert not any((await session.execute(select(Grant.alerted))).scalars())
    await s.rt.connectors["okta"].aclose()


async def test_a_grant_still_failing_at_its_deadline_fails_once_with_its_cause(
        db_factory: DbFactory, clock: ManualClock, okta: tuple[FakeOkta, str],
        caplog: pytest.LogCaptureFixture) -> None:
    fake, ca_file = okta
    s, gid = await _stack(db_factory, clock, fake, ca_file, retry_for="15m")
    [rid] = await _submit_and_approve_during_outage(s, fake, USERS[:1])
    with caplog.at_level(logging.WARNING, logger="bot.services.access.grants"):
        await _tick_for(s, clock, timedelta(minutes=14), timedelta(seconds=30))
        assert await _statuses(s) == Counter({Status.APPROVED.value: 1})
        await _tick_for(s, clock, timedelta(minutes=3), timedelta(seconds=30))
    assert await _statuses(s) == Counter({Status.FAILED.value: 1})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "503" in errors[0].getMessage() and rid in errors[0].getMessage()
    [failed] = await _events(s, "grant_failed")
    assert failed.detail is not None and "503" in str(failed.detail["cause"])
    async with s.rt.db.sessions() as session:
        alerts = [m for m in (await session.execute(select(OutboxMessage))).scalars() if m.kind == "alert"]
        grant = (await session.execute(select(Grant))).scalar_one()
    assert len(alerts) == 1 and "503" in alerts[0].payload["text"]
    assert "will try again" not in alerts[0].payload["text"]
    # the membership check never answered, so grant() was never called: nothing to clean up, nothing
    # said about a membership the user never had
    assert (grant.status, grant.end_reason) == ("ended", "failed")
    assert await _events(s, "cleanup_done") == []
    await s.rt.connectors["okta"].aclose()
