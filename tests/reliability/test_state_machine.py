"""A hypothesis state machine drives the services with random actors, actions and clock jumps.

After every step it checks what must always hold: no IdP membership of a JIT target without an
active grant (or standing access declared in the policy); once the worker ran, no membership past
its grant's expiry; the requester never approved their own request; every approved request had, in
each layer, at least ``min_approvals`` distinct approvers from that layer's group; the audit chain
verifies.

CI runs a short search. A longer one (thousands of steps): ``JITBOT_LONG_FUZZ=1 pytest
tests/reliability/test_state_machine.py`` (``JITBOT_LONG_FUZZ=N`` scales it: N × 200 examples of
100 steps).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import select

from bot.domain.requests import Decision, PolicyViolation
from bot.policy_file import parse_policy
from bot.services.admin import AdminService
from bot.services.auditing.audit import verify_chain
from bot.services.clock import ManualClock
from connectors.base import IdpUser, Target, TargetKind
from storage.db import Database
from storage.tables import AccessRequest, ApprovalVote, Grant
from tests.conftest import POLICY
from tests.services.stack import Stack, make_stack

EXTRA = """
  - name: db-admin
    description: Database admin, two approvals
    connector: demo
    target: {group: db-admins}
    requestors: {groups: [engineers, security]}
    max_duration: 2h
    default_duration: 30m
    warn_before: 5m
    approvals:
      - approvers: {groups: [leads, security]}
        min_approvals: 2
        timeout: 1h
"""
POLICY_TEXT = POLICY.replace("      readonly: []\n",
                             "      readonly: []\n      db-admins: [dave@example.com]\n") + EXTRA
STANDING = {"prod-admins": {"erin@example.com"}, "readonly": set(), "db-admins": {"dave@example.com"}}
LAYER_GROUPS = {"prod-admin": [{"bob@example.com", "carol@example.com"}, {"dave@example.com", "carol@example.com"}],
                "db-admin": [{"bob@example.com", "carol@example.com", "dave@example.com"}]}
MIN_APPROVALS = {"prod-admin": [1, 1], "db-admin": [2]}
PEOPLE = ["alice", "bob", "carol", "dave", "erin", "root"]
ELIGIBILITIES = ["prod-admin", "readonly", "db-admin"]
PASSED = {"approved", "active", "expired", "revoked", "failed"}

LONG = int(os.environ.get("JITBOT_LONG_FUZZ", "0") or 0)
people = st.sampled_from(PEOPLE).map(lambda name: f"{name}@example.com")
actors = st.one_of(people, st.just("<requester>"))  # the request's own requester, often: the riskiest actor
pick = st.integers(min_value=0, max_value=5)  # 0 = the newest request, 1 = the one before, …


_TEMPLATE: list[str] = []


def _template() -> str:
    if not _TEMPLATE:
        path = os.path.join(tempfile.mkdtemp(prefix="jitbot-fsm-template-"), "template.db")

        async def migrate() -> None:
            db = Database(f"sqlite+aiosqlite:///{path}")
            await db.migrate()
            await db.dispose()
        asyncio.run(migrate())
        _TEMPLATE.append(path)
    return _TEMPLATE[0]


class JitMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.mkdtemp(prefix="jitbot-fsm-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.clock = ManualClock()
        shutil.copy(_template(), f"{self.dir}/fsm.db")  # migrated once: Alembic costs more than a step
        self.db = Database(f"sqlite+aiosqlite:///{self.dir}/fsm.db")
        loaded = parse_policy(POLICY_TEXT, source="fsm", env={})
        self.stack: Stack = self.run(make_stack(self.db, loaded, self.clock, migrate=False))
        self.admin = AdminService(self.stack.rt)
        self.ids: list[str] = []
        self.worker_ran = False

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.db.dispose())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _request(self, n: int) -> str:
        return self.ids[-1 - n % len(self.ids)]

    async def _quietly(self, coro: Any) -> None:
        try:
            await coro
        except PolicyViolation:
            pass  # refusals are part of the game; that they change nothing is checked below

    # ---- actions ------------------------------------------------------------------------------
    @rule(who=people, elig=st.sampled_from(ELIGIBILITIES), minutes=st.sampled_from([15, 30, 60, 120]))
    def submit(self, who: str, elig: str, minutes: int) -> None:
        async def go() -> None:
            req = await self.stack.requests.submit(requester=who, eligibility=elig, duration=timedelta(minutes=minutes),
                                                   justification="fuzz", ticket="OPS-1")
            self.ids.append(req.id)
        self.run(self._quietly(go()))
        self.worker_ran = False

    async def _load(self, rid: str) -> AccessRequest:
        async with self.db.sessions() as session:
            return (await session.execute(select(AccessRequest).where(AccessRequest.id == rid))).scalar_one()

    @precondition(lambda self: bool(self.ids))
    @rule(who=actors, n=pick, layer=st.sampled_from([None, None, None, 0, 1, 2, 3]), deny=st.booleans())
    def decide(self, who: str, n: int, layer: int | None, deny: bool) -> None:
        async def go() -> None:
            rid = self._request(n)
            req = await self._load(rid)  # layer None: the open layer, as a real button would carry
            who_ = req.requester if who == "<requester>" else who
            await self.stack.approvals.decide(request_id=rid, layer=req.layer if layer is None else layer,
                                              approver=who_, decision=Decision.DENY if deny else Decision.APPROVE,
                                              reason="no" if deny else None)
        self.run(self._quietly(go()))
        self.worker_ran = False

    @precondition(lambda self: bool(self.ids))
    @rule(who=actors, n=pick, action=st.sampled_from(["cancel", "release", "revoke", "extend"]))
    def act(self, who: str, n: int, action: str) -> None:
        rid, s = self._request(n), self.stack
        if who == "<requester>":
            who = self.run(self._load(rid)).requester
        coro = (s.requests.cancel(request_id=rid, by=who) if action == "cancel"
                else s.grants.end_early(request_id=rid, actor=who, reason="released") if action == "release"
                else self.admin.revoke(actor=who, request_id=rid) if action == "revoke"
                else s.grants.extend(request_id=rid, actor=who, by=timedelta(minutes=30)))
        self.run(self._quietly(coro))
        self.worker_ran = False

    @rule()
    def work(self) -> None:
        self.run(self.stack.worker.run_until_idle())
        self.worker_ran = True

    @rule(minutes=st.integers(min_value=1, max_value=300))
    def advance(self, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))
        self.worker_ran = False

    # ---- invariants ---------------------------------------------------------------------------
    @invariant()
    def memberships_have_grants(self) -> None:
        self.run(self._check_memberships())

    async def _check_memberships(self) -> None:
        now = self.clock.now()
        async with self.db.sessions() as session:
            grants = list((await session.execute(select(Grant))).scalars().all())
        connector = self.stack.rt.connectors["demo"]
        for group, standing in STANDING.items():
            members = {u.email for u in await connector.list_members(group)}
            for email in members - standing:
                mine = [g for g in grants if g.user_email == email and g.target_id == group]
                live = [g for g in mine if g.status in ("active", "revoking")]
                assert live, f"{email} is in {group} without a live grant: {[(g.status, g.end_reason) for g in mine]}"
                if self.worker_ran:
                    assert any(g.status == "active" and g.expires_at and g.expires_at > now for g in live), \
                        f"{email} still in {group} after the worker ran: {[(g.status, g.expires_at) for g in live]}"
            for email in standing:  # standing access survives every grant's end
                assert email in members, f"standing member {email} of {group} was removed"
        for g in grants:
            if g.status == "active":
                user = IdpUser(id=g.user_email, email=g.user_email)
                assert await connector.is_member(user, Target(TargetKind.GROUP, g.target_id)), \
                    f"active grant {g.id} without its membership"

    @invariant()
    def approvals_are_sound(self) -> None:
        self.run(self._check_approvals())

    async def _check_approvals(self) -> None:
        async with self.db.sessions() as session:
            reqs = list((await session.execute(select(AccessRequest))).scalars().all())
            votes = list((await session.execute(select(ApprovalVote))).scalars().all())
        for req in reqs:
            mine = [v for v in votes if v.request_id == req.id]
            assert all(v.approver not in (req.requester, req.submitted_by) for v in mine), \
                f"{req.id}: the requester decided their own request"
            for v in mine:
                groups = LAYER_GROUPS.get(req.eligibility, [])
                assert 1 <= v.layer <= len(groups) and v.approver in groups[v.layer - 1], \
                    f"{req.id}: {v.approver} voted at layer {v.layer} without being an approver there"
            if req.status in PASSED and req.eligibility in MIN_APPROVALS:
                seen: set[str] = set()
                for layer, needed in enumerate(MIN_APPROVALS[req.eligibility], start=1):
                    approvers = [v.approver for v in mine if v.layer == layer and v.decision == "approve"]
                    assert len(approvers) == len(set(approvers)) >= needed, \
                        f"{req.id} {req.status} with layer {layer} approvals {approvers}"
                    assert not seen & set(approvers), f"{req.id}: one person approved two layers"
                    seen |= set(approvers)
            if req.status == "denied":
                assert any(v.decision == "deny" for v in mine), f"{req.id} denied without a deny vote"

    @invariant()
    def audit_chain_verifies(self) -> None:
        result = self.run(verify_chain(self.db))
        assert result.ok, result


JitMachine.TestCase.settings = settings(
    max_examples=200 * LONG if LONG else 15, stateful_step_count=100 if LONG else 30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow], derandomize=not LONG,
    # a step costs milliseconds of SQLite: shrinking a failure in CI would take minutes — the long run shrinks
    phases=list(Phase) if LONG else [Phase.explicit, Phase.reuse, Phase.generate])
test_the_services_hold_their_invariants = JitMachine.TestCase
