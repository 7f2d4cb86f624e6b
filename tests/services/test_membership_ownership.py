"""Who owns a membership, on both databases: a grant that has not started owns and inherits nothing; a
hand-off during a grant's IdP call survives its completion; reconciliation removes what jitbot added and
no live grant holds; an approved grant can be stopped before it starts, and is not carried out when the
policy no longer allows it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from bot.domain.requests import PolicyViolation
from bot.policy_file import LoadedPolicy, parse_policy
from bot.services.access.reconcile import ReconcileService
from bot.services.clock import ManualClock
from connectors.base import IdpUser, Target, TargetKind
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import POLICY, DbFactory
from tests.services.stack import Stack, make_stack

ALICE = "alice@example.com"
READONLY = Target(TargetKind.GROUP, "readonly")


async def _grant_of(s: Stack, request_id: str) -> Grant:
    async with s.rt.db.sessions() as session:
        return (await session.execute(select(Grant).where(Grant.request_id == request_id))).scalar_one()


async def _status(s: Stack, request_id: str) -> str:
    async with s.rt.db.sessions() as session:
        return str((await session.execute(select(AccessRequest.status)  # type: ignore[call-overload]
                                          .where(AccessRequest.id == request_id))).scalar_one())


async def _events(s: Stack, kind: str) -> list[dict[str, Any]]:
    async with s.rt.db.sessions() as session:
        rows = (await session.execute(select(Event).where(Event.kind == kind).order_by(Event.id))).scalars()  # type: ignore[arg-type]
        return [{"request_id": r.request_id, "actor": r.actor, **dict(r.detail)} for r in rows]


@pytest.fixture
def loaded_policy(policy_text: str) -> LoadedPolicy:
    """The suite's policy and a second eligibility of the same target (one open grant per person and
    eligibility: a second grant of the target comes through another eligibility)."""
    doc = yaml.safe_load(policy_text)
    again = dict(next(e for e in doc["eligibilities"] if e["name"] == "readonly"), name="readonly-again")
    doc["eligibilities"].append(again)
    return parse_policy(yaml.safe_dump(doc), source="test", env={})


async def _readonly(s: Stack, *, starts_in: timedelta | None = None, eligibility: str = "readonly") -> str:
    req = await s.requests.submit(requester=ALICE, eligibility=eligibility, duration=timedelta(hours=2),
                                  justification="look", starts_at=s.rt.clock.now() + starts_in if starts_in else None)
    return req.id


async def _active(s: Stack) -> str:
    rid = await _readonly(s)
    await s.worker.run_until_idle()
    await s.worker.grants.settle()
    assert await s.is_member(ALICE, "readonly")
    return rid


async def test_a_scheduled_grant_neither_inherits_the_membership_nor_counts_as_holding_it(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    today = await _active(s)
    later = await _readonly(s, starts_in=timedelta(days=29), eligibility="readonly-again")
    assert await _status(s, later) == "approved"
    await s.grants.end_early(request_id=today, actor=ALICE, reason="released")
    await s.worker.run_until_idle()
    assert not await s.is_member(ALICE, "readonly")
    [revoked] = await _events(s, "revoked")
    assert "membership_kept" not in revoked
    assert (await _grant_of(s, later)).owns_membership is False

    # the membership comes back by hand: the scheduled grant does not make it jitbot's, and the grant that
    # added it has ended, so the sweep removes it (no ``enforce``) and alerts
    await s.rt.connectors["demo"].grant(IdpUser(id=ALICE, email=ALICE), READONLY, grant_id="manual",
                                        expires_at=clock.now())
    clock.advance(timedelta(minutes=6))  # past the sweep's grace for grants that just ended
    report = await ReconcileService(s.rt).sweep()
    assert report.removed == [f"demo:group:readonly {ALICE}"]
    assert not await s.is_member(ALICE, "readonly")
    [removed] = await _events(s, "reconcile_removed")
    assert removed["jitbot_added"] is True
    await s.worker.run_until_idle()  # delivers the alert
    assert any("jitbot added it" in str(p["text"]) for p in s.notifier.of_kind("alert"))

    # at its start the scheduled grant is carried out, and owns what it added
    clock.advance(timedelta(days=29))
    await s.worker.run_until_idle()
    await s.worker.grants.settle()
    assert await _status(s, later) == "active" and (await _grant_of(s, later)).owns_membership is True


async def test_a_hand_off_during_the_grants_idp_call_survives_its_completion(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    first = await _active(s)
    demo = s.rt.connectors["demo"]
    real_is_member, entered, go = demo.is_member, asyncio.Event(), asyncio.Event()

    async def is_member(user: IdpUser, target: Target) -> bool:
        """The grant's own check of the target waits for the test. Only that one: the directory asks the
        connector too (is the requester in the requestor group?), and holding that would hold the submit
        itself, which the test needs to go through."""
        if target == READONLY:
            entered.set()
            await go.wait()
        return await real_is_member(user, target)

    second = await _readonly(s, eligibility="readonly-again")  # auto-approved: due now
    monkeypatch.setattr(demo, "is_member", is_member)
    g2 = await _grant_of(s, second)
    carrying_out = asyncio.create_task(s.grants.carry_out_grant(g2.id))
    await asyncio.wait_for(entered.wait(), timeout=30)
    await s.grants.end_early(request_id=first, actor=ALICE, reason="released")
    await s.grants.run_expiries()  # the first grant hands the membership to the second, in flight
    assert (await _grant_of(s, first)).status == "ended"
    handed = await _grant_of(s, second)
    assert (handed.owns_membership, handed.pre_member) == (True, False)
    monkeypatch.setattr(demo, "is_member", real_is_member)
    go.set()
    await asyncio.wait_for(carrying_out, timeout=30)
    done = await _grant_of(s, second)
    assert (done.status, done.owns_membership, done.pre_member) == ("active", True, False)

    await s.grants.end_early(request_id=second, actor=ALICE, reason="released")
    await s.worker.run_until_idle()
    assert not await s.is_member(ALICE, "readonly")


async def test_an_approved_grant_is_stopped_before_it_starts_by_the_requester_or_an_admin(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    from bot.services.admin import AdminService

    s = await make_stack(db_factory(), loaded_policy, clock)
    cancelled = await _readonly(s, starts_in=timedelta(days=1))
    with pytest.raises(PolicyViolation, match="Only the requester"):
        await s.requests.cancel(request_id=cancelled, by="bob@example.com")
    await s.requests.cancel(request_id=cancelled, by=ALICE)
    released = await _readonly(s, starts_in=timedelta(days=1))
    await s.grants.end_early(request_id=released, actor=ALICE, reason="released")
    revoked = await _readonly(s, starts_in=timedelta(days=1))
    with pytest.raises(PolicyViolation, match="Only JIT administrators"):
        await AdminService(s.rt).revoke(actor=ALICE, request_id=revoked)
    await AdminService(s.rt).revoke(actor="root@example.com", request_id=revoked)
    assert [await _status(s, r) for r in (cancelled, released, revoked)] == ["cancelled", "cancelled", "revoked"]
    for rid in (cancelled, released, revoked):
        g = await _grant_of(s, rid)
        assert (g.status, g.next_attempt_at) == ("ended", None)
    assert [e["actor"] for e in await _events(s, "cancelled")] == [ALICE, ALICE]
    assert [(e["actor"], e["before_start"]) for e in await _events(s, "revoked")] == [("root@example.com", True)]
    await s.worker.run_until_idle()  # delivers the messages
    told = [str(p["text"]) for p in s.notifier.of_kind("requester")]
    assert sum("before it started" in t for t in told) == 3
    clock.advance(timedelta(days=2))
    await s.worker.run_until_idle()
    assert not await s.is_member(ALICE, "readonly")


async def test_a_grant_being_carried_out_cannot_be_cancelled(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    rid = await _readonly(s)  # due now: it has started (the worker may be at the IdP with it)
    with pytest.raises(PolicyViolation, match="being granted right now"):
        await s.requests.cancel(request_id=rid, by=ALICE)
    assert await _status(s, rid) == "approved"


async def test_an_approved_grant_is_not_carried_out_once_its_eligibility_is_gone(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    rid = await _readonly(s, starts_in=timedelta(hours=1))
    doc = yaml.safe_load(POLICY)
    doc["eligibilities"] = [e for e in doc["eligibilities"] if e["name"] != "readonly"]
    s.rt.loaded = parse_policy(yaml.safe_dump(doc), source="test", env={})
    clock.advance(timedelta(hours=1))
    await s.worker.run_until_idle()
    await s.worker.grants.settle()
    assert not await s.is_member(ALICE, "readonly")
    assert await _status(s, rid) == "revoked"
    assert (await _grant_of(s, rid)).status == "ended"
    [refused] = await _events(s, "grant_refused")
    assert refused["reason"] == "readonly is no longer in the access policy"
    assert any("no longer in the access policy" in str(p["text"]) for p in s.notifier.of_kind("requester"))


async def test_a_break_glass_grant_cannot_be_extended(db_factory: DbFactory, clock: ManualClock) -> None:
    from bot.services.breakglass import BreakGlassService

    doc = yaml.safe_load(POLICY)
    for e in doc["eligibilities"]:
        if e["name"] == "readonly":
            e["break_glass"] = {"max_duration": "1h"}
    s = await make_stack(db_factory(), parse_policy(yaml.safe_dump(doc), source="test", env={}), clock)
    req = await BreakGlassService(s.rt).invoke(requester=ALICE, eligibility="readonly", duration=timedelta(hours=1),
                                               justification="the database is down")
    await s.worker.run_until_idle()
    await s.worker.grants.settle()
    with pytest.raises(PolicyViolation, match="cannot be extended"):
        await s.grants.extend(request_id=req.id, actor=ALICE, by=timedelta(hours=1))
    assert await _events(s, "extended") == []


async def test_reconciliation_keeps_a_membership_that_was_there_before_jitbots_first_grant(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    await s.rt.connectors["demo"].grant(IdpUser(id=ALICE, email=ALICE), READONLY, grant_id="by-hand",
                                        expires_at=clock.now())
    rid = await _active(s)
    assert (await _grant_of(s, rid)).pre_member is True
    rec = ReconcileService(s.rt)
    await rec.sweep()  # the baseline is taken while the grant holds the membership: alice is not in it
    await s.grants.end_early(request_id=rid, actor=ALICE, reason="released")
    await s.worker.run_until_idle()
    assert await s.is_member(ALICE, "readonly")  # standing access: kept
    clock.advance(timedelta(minutes=6))
    report = await rec.sweep()
    assert report.removed == [] and report.unmanaged == []  # standing access jitbot recorded (pre_member)
    assert await s.is_member(ALICE, "readonly")
