"""Approvers may approve for less: the shortest duration any layer approved wins, never longer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.domain.requests import Decision, PolicyViolation
from bot.policy_file import LoadedPolicy
from bot.services.clock import ManualClock
from storage.tables import AccessRequest, ApprovalVote, Event, Grant
from tests.conftest import DbFactory
from tests.services.stack import Stack, make_stack

HOUR = timedelta(hours=1)


async def _row(s: Stack, model: type, **where: object) -> list:  # type: ignore[type-arg]
    async with s.rt.db.sessions() as session:
        q = select(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return list((await session.execute(q)).scalars())


async def _submit(s: Stack, hours: int = 4) -> str:
    req = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                  duration=timedelta(hours=hours), justification="deploy", ticket="OPS-1")
    return req.id


async def test_shortest_approved_duration_wins_and_everyone_is_told(db_factory: DbFactory,
                                                                    loaded_policy: LoadedPolicy,
                                                                    clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    rid = await _submit(s)
    first = await s.approvals.decide(request_id=rid, layer=1, approver="bob@example.com",
                                     decision=Decision.APPROVE, duration=2 * HOUR)
    assert first.layer == 2 and "2h" in first.message
    assert (await _row(s, AccessRequest, id=rid))[0].duration_s == 2 * 3600
    # layer 2 may not approve longer than what stands (the menu it is shown offers at most 2h)
    with pytest.raises(PolicyViolation, match="at most 2h"):
        await s.approvals.decide(request_id=rid, layer=2, approver="dave@example.com",
                                 decision=Decision.APPROVE, duration=3 * HOUR)
    assert not await _row(s, ApprovalVote, request_id=rid, layer=2)  # nothing recorded
    done = await s.approvals.decide(request_id=rid, layer=2, approver="dave@example.com",
                                    decision=Decision.APPROVE)
    assert done.status.value == "approved"
    await s.worker.run_until_idle()
    g = (await _row(s, Grant, request_id=rid))[0]
    assert g.expires_at - g.granted_at == 2 * HOUR
    shortened = [e for e in await _row(s, Event, request_id=rid) if (e.detail or {}).get("approved_for")]
    assert len(shortened) == 1 and shortened[0].actor == "bob@example.com"
    assert shortened[0].detail["shortened_from"] == "4h" and shortened[0].detail["approved_for"] == "2h"
    told = [m["text"] for m in s.notifier.of_kind("requester")]
    assert any("bob@example.com approved it for 2h" in t for t in told), told
    audit = [m["text"] for m in s.notifier.of_kind("audit")]
    assert any("for 2h (asked 4h)" in t for t in audit), audit


async def test_a_forged_longer_or_empty_duration_is_refused_and_changes_nothing(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    rid = await _submit(s)
    for bad in (5 * HOUR, 4 * HOUR + timedelta(seconds=1), timedelta(0), -HOUR, timedelta(days=9999)):
        with pytest.raises(PolicyViolation):
            await s.approvals.decide(request_id=rid, layer=1, approver="bob@example.com",
                                     decision=Decision.APPROVE, duration=bad)
    req = (await _row(s, AccessRequest, id=rid))[0]
    assert req.duration_s == 4 * 3600 and req.layer == 1 and req.status == "pending"
    assert not await _row(s, ApprovalVote, request_id=rid)
    # the same duration as asked is an ordinary approval (nothing shortened)
    await s.approvals.decide(request_id=rid, layer=1, approver="bob@example.com", decision=Decision.APPROVE,
                             duration=4 * HOUR)
    assert not [e for e in await _row(s, Event, request_id=rid) if (e.detail or {}).get("approved_for")]


async def test_a_non_approver_cannot_shorten(db_factory: DbFactory, loaded_policy: LoadedPolicy,
                                             clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    rid = await _submit(s)
    for who in ("erin@example.com", "alice@example.com", "dave@example.com"):  # nobody, requester, layer 2
        with pytest.raises(PolicyViolation):
            await s.approvals.decide(request_id=rid, layer=1, approver=who, decision=Decision.APPROVE,
                                     duration=HOUR)
    assert (await _row(s, AccessRequest, id=rid))[0].duration_s == 4 * 3600


async def test_access_approved_for_less_cannot_be_extended_by_the_requester(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    rid = await _submit(s)
    await s.approvals.decide(request_id=rid, layer=1, approver="bob@example.com", decision=Decision.APPROVE,
                             duration=HOUR)
    await s.approvals.decide(request_id=rid, layer=2, approver="dave@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    before = (await _row(s, Grant, request_id=rid))[0].expires_at
    with pytest.raises(PolicyViolation, match="approved it for 1h"):
        await s.grants.extend(request_id=rid, actor="alice@example.com", by=HOUR)
    assert (await _row(s, Grant, request_id=rid))[0].expires_at == before
