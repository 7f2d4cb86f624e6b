"""Replicas racing on one database (separate engines = separate connection pools, as two processes have)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import func, select

from bot.domain.requests import Decision, PolicyViolation
from bot.services.clock import ManualClock
from connectors.base import GrantResult, IdpUser, Target
from storage.tables import ApprovalVote, Event, Grant
from tests.conftest import DbFactory
from tests.services.stack import make_stack


async def test_two_approvers_clicking_at_once_record_one_decision(db_factory: DbFactory, loaded_policy,  # type: ignore[no-untyped-def]
                                                                  clock: ManualClock) -> None:
    a = await make_stack(db_factory(), loaded_policy, clock)
    b = await make_stack(db_factory(), loaded_policy, clock)
    req = await a.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                  duration=timedelta(hours=1), justification="deploy", ticket="OPS-9")
    results = await asyncio.gather(
        a.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE),
        b.approvals.decide(request_id=req.id, layer=1, approver="carol@example.com", decision=Decision.APPROVE),
        return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, PolicyViolation)]
    assert len(ok) == 1 and len(refused) == 1, results
    assert "Already approved by" in str(refused[0])
    async with a.rt.db.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(ApprovalVote))).scalar() == 1


class CountingConnector:
    """Wraps the memory connector and counts revoke calls per grant id."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.name = inner.name
        self.revokes: dict[str, int] = {}

    async def grant(self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        return await self.inner.grant(user, target, grant_id=grant_id, expires_at=expires_at)  # type: ignore[no-any-return]

    async def find_user(self, email: str) -> IdpUser | None:
        return IdpUser(id=email, email=email)

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        self.revokes[grant_id] = self.revokes.get(grant_id, 0) + 1
        await asyncio.sleep(0)  # let the other worker interleave

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


async def test_two_workers_expiring_the_same_grants_revoke_each_once(db_factory: DbFactory, loaded_policy,  # type: ignore[no-untyped-def]
                                                                     clock: ManualClock) -> None:
    a = await make_stack(db_factory(), loaded_policy, clock)
    b = await make_stack(db_factory(), loaded_policy, clock)
    counting = CountingConnector(a.rt.connectors["demo"])
    a.rt.connectors["demo"] = counting
    b.rt.connectors["demo"] = counting
    users = ["alice@example.com", "bob@example.com", "erin@example.com"]
    n = 60
    now = clock.now()
    async with a.rt.db.transaction() as session:  # many active grants, all owning their membership
        from storage.tables import AccessRequest

        for i in range(n):
            rid = f"R-BULK{i:04d}"
            session.add(AccessRequest(id=rid, eligibility="readonly", requester=users[i % 3], duration_s=600,
                                      justification="bulk", status="active", layers=0, created_at=now,
                                      updated_at=now))
            session.add(Grant(id=f"G-BULK{i:04d}", request_id=rid, connector="demo", target_kind="group",
                              target_id="readonly", user_email=f"bulk{i}@example.com", status="active",
                              owns_membership=True, granted_at=now, expires_at=now + timedelta(seconds=i % 7)))
    clock.advance(timedelta(seconds=10))
    await asyncio.gather(a.worker.run_until_idle(), b.worker.run_until_idle())
    assert len(counting.revokes) == n and set(counting.revokes.values()) == {1}
    async with a.rt.db.sessions() as s:
        expired = (await s.execute(select(func.count()).select_from(Event).where(Event.kind == "expired"))).scalar()
        ended = (await s.execute(select(func.count()).select_from(Grant).where(Grant.status == "ended"))).scalar()
    assert expired == n and ended == n
