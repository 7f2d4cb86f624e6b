"""A hypothesis state machine for approval context: on-call approval (the fake PagerDuty) and Jira tickets
(the fake Jira), with random requests, approvals, extensions, shift handovers, tickets closing and
reopening, vendor outages and clock jumps.

What must always hold:
- a grant approved for an on-call shift (``end_with_shift``) never expires after the shift's end, and,
  once the worker ran, nobody holds access past it;
- an oncall request that got anywhere was approved by PagerDuty saying "on call" or by a person: never by
  PagerDuty failing;
- a ticket closed (with Jira answering) is never granted afterwards, and once a poll interval has passed
  and the worker ran, nobody holds access on it (``end_with_ticket``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import select

from bot.domain.requests import Decision, PolicyViolation
from bot.services.clock import ManualClock
from storage.db import Database
from storage.tables import AccessRequest, ApprovalVote, Event, Grant
from tests.reliability.test_state_machine import _template
from tests.services.context_world import Vendors, context_policy, start_vendors
from tests.services.stack import Stack, make_stack

LONG = int(os.environ.get("JITBOT_LONG_FUZZ", "0") or 0)
POLL = timedelta(minutes=1)  # the jira connector's poll_every in context_world
ONCALL = ("oncall-db", "oncall-two")
TICKETS = ("OPS-1", "OPS-2", "DEV-1", "OPS-404")
PASSED = {"approved", "active", "expired", "revoked", "failed"}


class ContextMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.mkdtemp(prefix="jitbot-ctx-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.clock = ManualClock()
        shutil.copy(_template(), f"{self.dir}/ctx.db")
        self.db = Database(f"sqlite+aiosqlite:///{self.dir}/ctx.db")
        self.vendors: Vendors = self.run(start_vendors(self.clock))
        loaded = context_policy(self.vendors.pd.url, self.vendors.jira.url)
        self.stack: Stack = self.run(make_stack(self.db, loaded, self.clock, migrate=False))
        self.ids: list[str] = []
        self.worker_ran = False
        # a ticket's close time, when Jira answered every call since (no fault queued or injected after it)
        self.closed_clean: dict[str, datetime | None] = {"OPS-1": None, "OPS-2": self.clock.now()}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.stack.rt.context.aclose())
        self.run(self.vendors.pd.stop())
        self.run(self.vendors.jira.stop())
        self.run(self.db.dispose())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _quietly(self, coro: Any) -> None:
        try:
            await coro
        except PolicyViolation:
            pass

    # ---- actions ------------------------------------------------------------------------------
    @rule(who=st.sampled_from(["alice", "bob", "erin"]), elig=st.sampled_from([*ONCALL, "ticketed"]),
          ticket=st.sampled_from(TICKETS), minutes=st.sampled_from([30, 120, 480]))
    def submit(self, who: str, elig: str, ticket: str, minutes: int) -> None:
        async def go() -> None:
            req = await self.stack.requests.submit(requester=f"{who}@example.com", eligibility=elig,
                                                   duration=timedelta(minutes=minutes), justification="fuzz",
                                                   ticket=ticket if elig == "ticketed" else None)
            self.ids.append(req.id)
        self.run(self._quietly(go()))
        self.worker_ran = False

    @initialize()
    def active_incident(self) -> None:
        """Every run starts with alice holding access on OPS-1 (requested, approved, granted)."""
        self.incident("OPS-1")
        self.work()

    @rule(ticket=st.sampled_from(["OPS-1", "OPS-2"]))
    def incident(self, ticket: str) -> None:
        """The common path in one step: alice requests with a ticket, bob approves."""
        async def go() -> None:
            req = await self.stack.requests.submit(requester="alice@example.com", eligibility="ticketed",
                                                   duration=timedelta(hours=4), justification="fuzz", ticket=ticket)
            self.ids.append(req.id)
            await self.stack.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com",
                                              decision=Decision.APPROVE)
        self.run(self._quietly(go()))
        self.worker_ran = False

    @precondition(lambda self: bool(self.ids))
    @rule(who=st.sampled_from(["bob", "carol", "dave"]), n=st.integers(0, 5))
    def approve(self, who: str, n: int) -> None:
        async def go() -> None:
            rid = self.ids[-1 - n % len(self.ids)]
            async with self.db.sessions() as session:
                layer = (await session.execute(select(AccessRequest.layer).where(AccessRequest.id == rid))).scalar_one()
            await self.stack.approvals.decide(request_id=rid, layer=layer, approver=f"{who}@example.com",
                                              decision=Decision.APPROVE)
        self.run(self._quietly(go()))
        self.worker_ran = False

    @precondition(lambda self: bool(self.ids))
    @rule(n=st.integers(0, 5), hours=st.sampled_from([1, 4]))
    def extend(self, n: int, hours: int) -> None:
        rid = self.ids[-1 - n % len(self.ids)]
        self.run(self._quietly(self.stack.grants.extend(request_id=rid, actor="alice@example.com",
                                                        by=timedelta(hours=hours))))

    @rule(hours=st.sampled_from([1, 3, 8]))
    def handover(self, hours: int) -> None:
        """alice takes (another) shift from now: it must never lengthen access approved for an earlier one."""
        now = self.clock.now()
        self.vendors.pd.put_on_call(self.vendors.alice_pd, policy_id="PPOL1", schedule_id="PSCHED1", level=1,
                                    start=now, end=now + timedelta(hours=hours))

    @rule(key=st.sampled_from(["OPS-1", "OPS-2"]), open_=st.booleans())
    def ticket_moves(self, key: str, open_: bool) -> None:
        if open_:
            self.vendors.jira.set_status(key, "In Progress", "indeterminate")
            self.closed_clean[key] = None
        else:
            self.vendors.jira.set_status(key, "Done", "done")
            clean = not self.vendors.jira._faults  # nothing queued that a later call could meet
            self.closed_clean[key] = self.clock.now() if clean else None

    @rule(key=st.sampled_from(["OPS-1", "OPS-2"]), minutes=st.sampled_from([1, 2, 30]))
    def ticket_closes_then_time_passes(self, key: str, minutes: int) -> None:
        """An incident resolved, then the worker's next turns: the sequence end_with_ticket is about."""
        self.ticket_moves(key, False)
        self.advance(minutes)
        self.work()

    @rule(which=st.sampled_from(["pagerduty", "jira"]), status=st.sampled_from([429, 503]))
    def outage(self, which: str, status: int) -> None:
        if which == "pagerduty":
            self.vendors.pd.fail_next(status)
        else:
            self.vendors.jira.fail_next(status)
            self.closed_clean = {k: None for k in self.closed_clean}  # a poll may miss: no promise now

    @rule()
    def work(self) -> None:
        self.run(self.stack.worker.run_until_idle())
        self.worker_ran = True

    @rule(minutes=st.sampled_from([1, 5, 30, 90]))
    def advance(self, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))
        self.worker_ran = False

    # ---- invariants ---------------------------------------------------------------------------
    async def _rows(self) -> tuple[list[AccessRequest], list[Grant], list[ApprovalVote], set[str]]:
        async with self.db.sessions() as session:
            reqs = list((await session.execute(select(AccessRequest))).scalars())
            grants = list((await session.execute(select(Grant))).scalars())
            votes = list((await session.execute(select(ApprovalVote))).scalars())
            on_call = {e.request_id for e in (await session.execute(
                select(Event).where(Event.kind == "on_call_approved"))).scalars() if e.request_id}
        return reqs, grants, votes, on_call

    @invariant()
    def access_never_outlives_the_shift(self) -> None:
        reqs, grants, votes, on_call = self.run(self._rows())
        by_id = {r.id: r for r in reqs}
        now = self.clock.now()
        for g in grants:
            req = by_id[g.request_id]
            if req.ends_by is None:
                continue
            assert g.expires_at is None or g.expires_at <= req.ends_by, f"{g.id} expires after its shift"
            assert g.granted_at is None or g.granted_at < req.ends_by, f"{g.id} granted after its shift ended"
            if self.worker_ran and g.status == "active":
                assert now < req.ends_by, f"{g.id} still active after its shift ended"
        for req in reqs:
            if req.eligibility in ONCALL and req.status in PASSED:
                human = [v for v in votes if v.request_id == req.id and v.decision == "approve"]
                assert req.id in on_call or human, f"{req.id} {req.status} without on-call or a person"

    @invariant()
    def access_never_outlives_the_ticket(self) -> None:
        reqs, grants, _, _ = self.run(self._rows())
        by_id = {r.id: r for r in reqs}
        now = self.clock.now()
        for g in grants:
            req = by_id[g.request_id]
            closed = self.closed_clean.get((req.ticket or "").upper()) if req.eligibility == "ticketed" else None
            if closed is None or g.status != "active":
                continue
            assert g.granted_at is not None and g.granted_at <= closed, \
                f"{g.id} granted at {g.granted_at} on a ticket closed at {closed}"
            if self.worker_ran:
                assert now - closed < POLL, f"{g.id} still active {now - closed} after its ticket closed"


ContextMachine.TestCase.settings = settings(
    max_examples=100 * LONG if LONG else 12, stateful_step_count=100 if LONG else 30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow], derandomize=not LONG,
    phases=list(Phase) if LONG else [Phase.explicit, Phase.reuse, Phase.generate])
test_access_never_outlives_its_shift_or_ticket = ContextMachine.TestCase
