"""The revocation pipeline and whatever else changes the same grant at once on PostgreSQL (row locks):
neither waits for the other while holding what the other waits for, so neither is ended by a deadlock.

The pipeline claims its grants (their rows locked) in a transaction of its own and decides them in the
next, which takes the memberships' locks first, then the grants' rows, then their requests' — the order of
every transaction that locks more than one of them (docs/architecture.md, "Row locks and their order").
Each test pauses the pipeline right after its first claim (``row_locks.race``), lets the other side run until
PostgreSQL reports it waiting on the pipeline, then lets the pipeline go on. Had the pipeline decided in the
claiming transaction, it would hold the grant's row and wait for the membership's lock (or the request's)
that the other side took before waiting for the grant."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.domain.requests import Decision, PolicyViolation
from bot.services.access.revocation import Revoker
from bot.services.clock import ManualClock
from bot.services.requesting.bundles import BundleGuard
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import DbFactory
from tests.services.row_locks import Pause, race
from tests.services.test_bundle_lock_order import ALICE, _member_to_end, _replica, pg_stack
from tests.services.test_bundles import _settle


async def test_the_bundle_guard_ending_a_member_as_it_expires_and_the_revocation_pipeline_do_not_deadlock(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await pg_stack(db_factory, clock)
    member, grant = await _member_to_end(s)
    clock.advance(timedelta(hours=1, minutes=1))  # the member expires: the pipeline's claim makes it revoking
    pipeline = await _replica(db_factory, clock)
    revoker = Revoker(pipeline.rt)
    step = revoker.step(clock.now(), record=[], claim=True, expire_limit=100)
    stepped, guarded = await race(s.rt.db, Pause(pipeline.rt.db), step, BundleGuard(s.rt)._end(member.id))
    assert not isinstance(stepped, BaseException) and guarded == 0, (stepped, guarded)  # no deadlock's victim
    claimed, decided = stepped
    assert claimed == 2 and grant.id in {c.grant.id for c in decided}  # the released bundle request's and the member's
    async with s.rt.db.sessions() as session:
        g = (await session.execute(select(Grant).where(Grant.id == grant.id))).scalar_one()
        kinds = list((await session.execute(select(Event.kind).where(Event.request_id == member.id))).scalars())
    assert (g.status, g.end_reason) == ("revoking", "expired") and "bundle_ended" not in kinds
    calls = [await revoker.call(c) for c in decided]  # the pipeline goes on: its calls, then their record
    await revoker.step(clock.now(), record=calls, claim=False, expire_limit=0)
    async with s.rt.db.sessions() as session:
        assert (await session.execute(select(AccessRequest.status).where(AccessRequest.id == member.id))
                ).scalar_one() == "expired"
    assert not await s.is_member(ALICE, "logs")


async def test_the_requester_releasing_access_as_the_revocation_pipeline_expires_it_is_told_it_has_ended(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await pg_stack(db_factory, clock)
    req = await s.requests.submit(requester=ALICE, eligibility="db", duration=timedelta(hours=1),
                                  justification="incident 42")
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await _settle(s)
    clock.advance(timedelta(hours=1, minutes=1))
    pipeline = await _replica(db_factory, clock)
    step = Revoker(pipeline.rt).step(clock.now(), record=[], claim=True, expire_limit=100)
    stepped, released = await race(s.rt.db, Pause(pipeline.rt.db), step,
                                   s.grants.end_early(request_id=req.id, actor=ALICE, reason="released"))
    assert not isinstance(stepped, BaseException), stepped  # no deadlock's victim
    assert isinstance(released, PolicyViolation) and "already ending" in str(released), released
    assert stepped[0] == 1 and len(stepped[1]) == 1
