"""A person's action on a request while the request is being approved, on PostgreSQL (row locks): the action
reads the request's grant before it locks the request, so a grant that the approving transaction inserted
(under the request's lock) and had not committed yet was not there to read. Once the approval commits, the
action holds an APPROVED request and no grant; it runs once more, in a new transaction that sees the grant,
and does what was asked.

Each test pauses the approval right after it inserted the grant (``row_locks.race``; it has locked the
request before), lets the action run until PostgreSQL reports it waiting for the request, then lets the
approval commit. Without the second run, the action would refuse: "is being granted right now", for a
grant that starts next week."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.domain.requests import Decision
from bot.services.clock import ManualClock
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import DbFactory
from tests.services.row_locks import Pause, inserts_into, race
from tests.services.stack import Stack
from tests.services.test_bundle_lock_order import ALICE, _replica, pg_stack


async def _scheduled_and_its_approver(db_factory: DbFactory, clock: ManualClock) -> tuple[Stack, Stack, str]:
    """Alice's request for db starting next week, waiting for its approval; the stack of a replica whose
    approval transaction pauses once it has inserted the grant."""
    s = await pg_stack(db_factory, clock)
    req = await s.requests.submit(requester=ALICE, eligibility="db", duration=timedelta(hours=1),
                                  justification="incident 42", starts_at=clock.now() + timedelta(days=7))
    return s, await _replica(db_factory, clock), req.id


async def _ended_before_start(s: Stack, request_id: str) -> tuple[str, str, list[str]]:
    async with s.rt.db.sessions() as session:
        status = (await session.execute(select(AccessRequest.status).where(AccessRequest.id == request_id))
                  ).scalar_one()
        grant = (await session.execute(select(Grant).where(Grant.request_id == request_id))).scalar_one()
        kinds = list((await session.execute(select(Event.kind).where(Event.request_id == request_id)
                                            .order_by(Event.id))).scalars())  # type: ignore[arg-type]
    return status, f"{grant.status}/{grant.end_reason}", kinds


async def test_the_requester_cancelling_as_the_request_is_approved_gets_their_cancel(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s, approver, request_id = await _scheduled_and_its_approver(db_factory, clock)
    approval = approver.approvals.decide(request_id=request_id, layer=1, approver="bob@example.com",
                                         decision=Decision.APPROVE)
    decided, cancelled = await race(s.rt.db, Pause(approver.rt.db, after=inserts_into("grant")), approval,
                                    s.requests.cancel(request_id=request_id, by=ALICE))
    assert not isinstance(decided, BaseException), decided
    assert isinstance(cancelled, AccessRequest), cancelled
    status, grant, kinds = await _ended_before_start(s, request_id)
    assert (status, grant) == ("cancelled", "ended/cancelled")
    assert kinds == ["requested", "layer_approved", "approved", "cancelled"]


async def test_the_requester_releasing_as_the_request_is_approved_stops_it_before_it_starts(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s, approver, request_id = await _scheduled_and_its_approver(db_factory, clock)
    approval = approver.approvals.decide(request_id=request_id, layer=1, approver="bob@example.com",
                                         decision=Decision.APPROVE)
    decided, released = await race(s.rt.db, Pause(approver.rt.db, after=inserts_into("grant")), approval,
                                   s.grants.end_early(request_id=request_id, actor=ALICE, reason="released"))
    assert not isinstance(decided, BaseException), decided
    assert isinstance(released, Grant), released
    status, grant, kinds = await _ended_before_start(s, request_id)
    assert (status, grant) == ("cancelled", "ended/cancelled")
    assert kinds == ["requested", "layer_approved", "approved", "cancelled"]
