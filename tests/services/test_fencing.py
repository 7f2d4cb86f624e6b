"""Fencing: a worker whose claim on a grant passed to another worker (it was paused past its lease) acts
no more on it. Its late IdP outcome is not recorded, what it added is undone unless a live grant needs
it or it was there before, and that is audited (docs/reliability.md, "Fencing")."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from bot.bootstrap import build_connectors
from bot.policy_file import LoadedPolicy
from bot.services.access.grants import GrantService
from bot.services.claims import LEASE
from bot.services.clock import ManualClock
from bot.services.directory import Directory
from bot.services.runtime import Runtime
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import DbFactory
from tests.services.stack import make_stack


class _Paused:
    """Wraps a connector: its next ``grant`` call waits until ``go`` is set (a replica paused mid-call)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.go, self.entered = inner, asyncio.Event(), asyncio.Event()
        self.pause_next = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def grant(self, *args: Any, **kwargs: Any) -> Any:
        if self.pause_next:
            self.pause_next = False
            self.entered.set()
            await self.go.wait()
        return await self.inner.grant(*args, **kwargs)


async def _replica(db: Any, loaded: LoadedPolicy, clock: ManualClock, name: str) -> tuple[Runtime, GrantService]:
    connectors = build_connectors(loaded, db)
    rt = Runtime(db=db, clock=clock, loaded=loaded, connectors=connectors, directory=Directory(connectors, clock))
    rt.instance_id = name
    return rt, GrantService(rt)


async def _grant(db: Any) -> Any:
    async with db.sessions() as session:
        return (await session.execute(select(Grant))).scalar_one()  # type: ignore[call-overload]


async def _request_status(db: Any) -> str:
    async with db.sessions() as session:
        return str((await session.execute(select(AccessRequest.status))).scalar_one())  # type: ignore[call-overload]


async def _events(db: Any) -> list[str]:
    async with db.sessions() as session:
        return [str(k) for k in (await session.execute(select(Event.kind).order_by(  # type: ignore[call-overload]
            Event.id))).scalars()]


async def test_a_replica_paused_past_its_lease_does_not_leave_a_membership_behind(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    """A claims the grant and pauses in its IdP call; after the lease B takes over, grants, the requester
    releases, B revokes; A resumes and its call adds the membership again. A's claim is stale: it records
    nothing as its own, removes the membership it added (no live grant needs it, it was not standing) and
    audits that. Without fencing the person stayed a member of an ended grant, silently."""
    s = await make_stack(db_factory(), loaded_policy, clock)  # the requests side, no worker
    rt_a, a = await _replica(s.rt.db, loaded_policy, clock, "replica-a")
    rt_b, b = await _replica(s.rt.db, loaded_policy, clock, "replica-b")
    paused = _Paused(rt_a.connectors["demo"])
    rt_a.connectors["demo"] = paused
    a.budget_s = 0.0
    req = await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                  duration=timedelta(hours=1), justification="read the logs")
    assert await a.run_grants() == 1
    await asyncio.wait_for(paused.entered.wait(), timeout=30)  # A is inside its IdP call
    [a_task] = a._running.values()

    clock.advance(LEASE + timedelta(seconds=1))  # A's lease runs out; B takes the grant over
    assert await b.run_grants() == 1
    await asyncio.wait_for(asyncio.gather(*b._running.values()), timeout=30)
    assert (await _grant(s.rt.db)).status == "active"
    await b.end_early(request_id=req.id, actor="alice@example.com", reason="released")
    await b.run_expiries()
    assert (await _grant(s.rt.db)).status == "ended"
    assert not await s.is_member("alice@example.com", "readonly")

    paused.go.set()  # A resumes: its call adds the membership again
    await asyncio.wait_for(a_task, timeout=30)
    await a.run_expiries()  # whatever A scheduled to undo is carried out

    assert not await s.is_member("alice@example.com", "readonly"), "a stale claim left a membership behind"
    g = await _grant(s.rt.db)
    assert g.status == "ended" and g.end_reason == "released"
    assert await _request_status(s.rt.db) == "revoked"
    events = await _events(s.rt.db)
    assert "stale_claim" in events
    assert events.count("granted") == 1 and events.count("revoked") == 1


async def test_a_stale_replica_leaves_the_grant_its_successor_carried_out_alone(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    """A resumes while B's grant is active: A's late outcome is not recorded (the grant was not stopped, it
    was carried out by B) and the membership stays, for the live grant needs it. Without fencing A took the
    active grant for one stopped in flight and scheduled its membership's removal."""
    s = await make_stack(db_factory(), loaded_policy, clock)
    rt_a, a = await _replica(s.rt.db, loaded_policy, clock, "replica-a")
    rt_b, b = await _replica(s.rt.db, loaded_policy, clock, "replica-b")
    paused = _Paused(rt_a.connectors["demo"])
    rt_a.connectors["demo"] = paused
    a.budget_s = 0.0
    await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                            duration=timedelta(hours=1), justification="read the logs")
    assert await a.run_grants() == 1
    await asyncio.wait_for(paused.entered.wait(), timeout=30)
    [a_task] = a._running.values()
    clock.advance(LEASE + timedelta(seconds=1))
    assert await b.run_grants() == 1
    await asyncio.wait_for(asyncio.gather(*b._running.values()), timeout=30)

    paused.go.set()
    await asyncio.wait_for(a_task, timeout=30)
    await a.run_expiries()
    await b.run_expiries()

    assert await s.is_member("alice@example.com", "readonly")
    g = await _grant(s.rt.db)
    assert g.status == "active" and g.owns_membership
    assert await _request_status(s.rt.db) == "active"
    events = await _events(s.rt.db)
    assert "granted_after_stop" not in events and events.count("granted") == 1
    assert "stale_claim" in events


class _PausedRevoke(_Paused):
    async def revoke(self, *args: Any, **kwargs: Any) -> Any:
        if self.pause_next:
            self.pause_next = False
            self.entered.set()
            await self.go.wait()
        return await self.inner.revoke(*args, **kwargs)

    async def grant(self, *args: Any, **kwargs: Any) -> Any:
        return await self.inner.grant(*args, **kwargs)


async def test_a_stale_revocation_gives_back_the_membership_a_live_grant_needs(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    """A claims a revocation and pauses in its IdP call; after the lease B takes the revocation over and
    carries it out, then the person's new request for the same access is granted. A resumes and its call
    removes the new grant's membership: fenced, A sees its claim is stale and adds the membership back for
    the live grant, audited. Without fencing the new grant was active without access, silently."""
    s = await make_stack(db_factory(), loaded_policy, clock)
    rt_a, a = await _replica(s.rt.db, loaded_policy, clock, "replica-a")
    rt_b, b = await _replica(s.rt.db, loaded_policy, clock, "replica-b")
    first = await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                    duration=timedelta(hours=1), justification="read the logs")
    await b.run_grants()
    await asyncio.wait_for(asyncio.gather(*b._running.values()), timeout=30)
    await b.end_early(request_id=first.id, actor="alice@example.com", reason="released")
    paused = _PausedRevoke(rt_a.connectors["demo"])
    rt_a.connectors["demo"] = paused
    a_task = asyncio.create_task(a.run_expiries())
    await asyncio.wait_for(paused.entered.wait(), timeout=30)  # A is inside its revoke call

    clock.advance(LEASE + timedelta(seconds=1))
    await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                            duration=timedelta(hours=1), justification="again")
    await b.run_grants()
    await asyncio.wait_for(asyncio.gather(*b._running.values()), timeout=30)
    await b.run_expiries()  # takes the revocation over (the new grant waits for it), removes the membership
    clock.advance(timedelta(seconds=3))
    await b.run_grants()  # the new grant adds it again
    await asyncio.wait_for(asyncio.gather(*b._running.values()), timeout=30)
    assert await s.is_member("alice@example.com", "readonly")

    paused.go.set()  # A's revoke goes through
    await asyncio.wait_for(a_task, timeout=30)

    assert await s.is_member("alice@example.com", "readonly"), "a stale revocation took a live grant's access"
    async with s.rt.db.sessions() as session:
        grants = list((await session.execute(select(Grant).order_by(Grant.granted_at))).scalars())  # type: ignore[call-overload]
    assert [g.status for g in grants] == ["ended", "active"] and grants[1].owns_membership
    events = await _events(s.rt.db)
    assert "stale_claim" in events and events.count("released") == 0 and events.count("revoked") == 1
