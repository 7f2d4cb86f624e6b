"""``TicketWatch.check_now`` (what a verified Jira webhook triggers): the REST API's answer decides, only the
grants that end with the named ticket are looked at, and a key nobody's grant ends with costs no call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.domain.requests import Decision
from bot.services.background.ticket_watch import TicketWatch
from bot.services.clock import ManualClock
from storage.tables import Event
from tests.conftest import DbFactory
from tests.services.context_world import Vendors, context_policy, start_vendors
from tests.services.stack import Stack, make_stack


@pytest.fixture
async def vendors(clock: ManualClock) -> AsyncIterator[Vendors]:
    v = await start_vendors(clock)
    v.jira.add_issue("OPS-2", "Another incident", "In Progress")
    yield v
    await v.pd.stop()
    await v.jira.stop()


@pytest.fixture
async def s(db_factory: DbFactory, clock: ManualClock, vendors: Vendors) -> AsyncIterator[Stack]:
    stack = await make_stack(db_factory(), context_policy(vendors.pd.url, vendors.jira.url), clock)
    yield stack
    await stack.rt.context.aclose()


async def _granted(s: Stack, ticket: str, requester: str) -> str:
    req = await s.requests.submit(requester=requester, eligibility="ticketed", duration=timedelta(hours=4),
                                  justification="incident", ticket=ticket)
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    return req.id


def _asked(vendors: Vendors) -> list[str]:
    return [p.rsplit("/", 1)[1] for p, _ in vendors.jira.requests if p.startswith("/rest/api/3/issue/")]


async def test_check_now_asks_jira_about_that_ticket_only_and_trusts_its_answer(s: Stack, vendors: Vendors) -> None:
    await _granted(s, "OPS-1", "alice@example.com")
    await _granted(s, "OPS-2", "erin@example.com")
    watch = TicketWatch(s.rt)
    before = len(_asked(vendors))
    assert await watch.check_now("ops-1") == 0  # still In Progress at Jira: nothing ends
    assert _asked(vendors)[before:] == ["OPS-1"]
    for key in ("OPS-999", "HR-5", "not a key", ""):  # no grant ends with them: not even asked
        assert await watch.check_now(key) == 0
    assert _asked(vendors)[before:] == ["OPS-1"]
    vendors.jira.set_status("OPS-1", "Done")
    assert await watch.check_now("OPS-1") == 1
    assert await watch.check_now("OPS-1") == 0  # a replay: that grant is ending already
    await s.worker.run_until_idle()
    assert not await s.is_member("alice@example.com", "ops-console")
    assert await s.is_member("erin@example.com", "ops-console")  # OPS-2's grant stays
    async with s.rt.db.sessions() as session:
        ended = list((await session.execute(select(Event).where(Event.kind == "ticket_ended"))).scalars())
    assert [(e.detail["ticket"], e.detail["noticed_by"]) for e in ended] == [("OPS-1", "webhook")]
