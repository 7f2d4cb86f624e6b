"""The bundle guard and whatever else changes the same member at once on PostgreSQL (row locks): neither
waits for the other while holding what the other waits for, so neither is ended by a deadlock, and the one
that comes second sees what the first did.

The guard takes the membership's lock, the grant's row, then the request's (the order of every transaction
that locks more than one of them: docs/architecture.md, "Row locks and their order"). Each test pauses the
other side holding its first row lock (``row_locks.race``), lets the guard run until PostgreSQL reports it
waiting, then lets the other go on. Had the other side locked the request first, the guard would hold the
grant and wait for the request while the other, holding the request, waited for the grant."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.domain.requests import Decision
from bot.policy_file import parse_policy
from bot.services.background.ticket_watch import TicketWatch
from bot.services.clock import ManualClock
from bot.services.requesting.bundles import BundleGuard
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import DbFactory
from tests.services.row_locks import Pause, race
from tests.services.stack import Stack, make_stack
from tests.services.test_bundles import POLICY, _approved_bundle, _rows, _settle, _stack

ALICE = "alice@example.com"


async def pg_stack(db_factory: DbFactory, clock: ManualClock) -> Stack:
    """The bundles' stack, on PostgreSQL only: SQLite has one writer and no row locks."""
    s = await _stack(db_factory, clock)
    if s.rt.db.is_sqlite:
        pytest.skip("row locks: PostgreSQL")
    return s


async def _replica(db_factory: DbFactory, clock: ManualClock) -> Stack:
    return await make_stack(db_factory(), parse_policy(POLICY, env={}), clock, migrate=False)


async def _member_to_end(s: Stack) -> tuple[AccessRequest, Grant]:
    """An active bundle whose bundle request was released (not yet revoked: no worker pass): the guard is
    due to end its other member, returned with its grant."""
    bundle = await _approved_bundle(s)
    await _settle(s)
    reqs, grants = await _rows(s, bundle)
    member = next(r for r in reqs if r.id != bundle)
    await s.grants.end_early(request_id=bundle, actor=ALICE, reason="released")
    return member, next(g for g in grants if g.request_id == member.id)


async def _grant_and_kinds(s: Stack, grant_id: str, request_id: str) -> tuple[Grant, list[str]]:
    async with s.rt.db.sessions() as session:
        g = (await session.execute(select(Grant).where(Grant.id == grant_id))).scalar_one()
        kinds = list((await session.execute(select(Event.kind).where(Event.request_id == request_id))).scalars())
    return g, kinds


async def test_the_ticket_watch_and_the_bundle_guard_ending_one_member_at_once_do_not_deadlock(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await pg_stack(db_factory, clock)
    member, grant = await _member_to_end(s)
    watch = TicketWatch((await _replica(db_factory, clock)).rt)
    ended, guarded = await race(s.rt.db, Pause(watch.rt.db),
                                watch._end(grant.id, member.id, "OPS-1", "its ticket is now 'Done'", by="webhook"),
                                BundleGuard(s.rt)._end(member.id))
    assert ended is True and guarded == 0, (ended, guarded)  # neither was chosen as a deadlock's victim
    g, kinds = await _grant_and_kinds(s, grant.id, member.id)
    assert (g.status, g.end_reason) == ("revoking", "ticket")
    assert "ticket_ended" in kinds and "bundle_ended" not in kinds


async def test_the_requester_releasing_a_member_while_the_bundle_guard_ends_it_gets_their_release(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await pg_stack(db_factory, clock)
    member, grant = await _member_to_end(s)
    person = await _replica(db_factory, clock)
    released, guarded = await race(s.rt.db, Pause(person.rt.db),
                                   person.grants.end_early(request_id=member.id, actor=ALICE, reason="released"),
                                   BundleGuard(s.rt)._end(member.id))
    assert isinstance(released, Grant) and guarded == 0, (released, guarded)  # no deadlock's victim
    g, kinds = await _grant_and_kinds(s, grant.id, member.id)
    assert (g.status, g.end_reason) == ("revoking", "released")
    assert "released_requested" in kinds and "bundle_ended" not in kinds


async def test_the_requester_extending_a_member_while_the_bundle_guard_ends_it_is_extended_then_ended(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await pg_stack(db_factory, clock)
    member, grant = await _member_to_end(s)
    person = await _replica(db_factory, clock)
    extended, guarded = await race(s.rt.db, Pause(person.rt.db),
                                   person.grants.extend(request_id=member.id, actor=ALICE, by=timedelta(minutes=30)),
                                   BundleGuard(s.rt)._end(member.id))
    assert extended == grant.expires_at + timedelta(minutes=30) and guarded == 1, (extended, guarded)
    g, kinds = await _grant_and_kinds(s, grant.id, member.id)
    assert (g.status, g.end_reason, g.expires_at) == ("revoking", "released", extended)
    assert kinds.index("extended") < kinds.index("bundle_ended")


async def test_the_requester_cancelling_a_scheduled_member_while_the_bundle_guard_stops_it_gets_their_cancel(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await pg_stack(db_factory, clock)
    req = await s.requests.submit(requester=ALICE, eligibility="debug", duration=timedelta(hours=1),
                                  justification="incident 42", starts_at=clock.now() + timedelta(hours=1))
    await s.approvals.decide(request_id=req.id, layer=1, approver="carol@example.com", decision=Decision.APPROVE)
    await s.requests.cancel(request_id=req.id, by=ALICE)  # the guard is due to stop the other member
    reqs, grants = await _rows(s, req.id)
    member = next(r for r in reqs if r.id != req.id)
    grant = next(g for g in grants if g.request_id == member.id)
    person = await _replica(db_factory, clock)
    cancelled, guarded = await race(s.rt.db, Pause(person.rt.db),
                                    person.requests.cancel(request_id=member.id, by=ALICE),
                                    BundleGuard(s.rt)._end(member.id))
    assert isinstance(cancelled, AccessRequest) and guarded == 0, (cancelled, guarded)  # no deadlock's victim
    g, kinds = await _grant_and_kinds(s, grant.id, member.id)
    assert (g.status, g.end_reason) == ("ended", "cancelled")
    assert "cancelled" in kinds and "bundle_ended" not in kinds
