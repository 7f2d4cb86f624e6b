"""``extension.reapproval: true``: an extension beyond ``max_duration`` goes through the approval layers
again (bot/services/extensions.py, bot/services/requesting/extension_apply.py), on both databases.

prod-admin: at most 8h, Extend adds 2h; layer 1 = leads (bob, carol), layer 2 = security (dave, carol).
Alice holds it for 8h, so every Extend is beyond the maximum."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from bot.domain.requests import Decision, PolicyViolation
from bot.policy_file import LoadedPolicy, PolicyError, parse_policy
from bot.services import queries
from bot.services.admin import AdminService
from bot.services.clock import ManualClock
from bot.services.extensions import ExtensionService
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import POLICY, DbFactory
from tests.services.stack import Stack, make_stack

ALICE, BOB, CAROL, DAVE = "alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"


def _policy(**extension: Any) -> LoadedPolicy:
    doc = yaml.safe_load(POLICY)
    prod = next(e for e in doc["eligibilities"] if e["name"] == "prod-admin")
    prod["extension"] = {"reapproval": True, **extension}
    prod["break_glass"] = {"max_duration": "1h"}
    return parse_policy(yaml.safe_dump(doc), source="test", env={})


@pytest.fixture
def loaded_policy() -> LoadedPolicy:
    return _policy()


async def _active(s: Stack, hours: int = 8) -> str:
    req = await s.requests.submit(requester=ALICE, eligibility="prod-admin", duration=timedelta(hours=hours),
                                  justification="deploy", ticket="OPS-1")
    await s.approvals.decide(request_id=req.id, layer=1, approver=BOB, decision=Decision.APPROVE)
    await s.approvals.decide(request_id=req.id, layer=2, approver=DAVE, decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    assert await s.is_member(ALICE, "prod-admins")
    return req.id


async def _grant(s: Stack, rid: str) -> Grant:
    async with s.rt.db.sessions() as session:
        return (await session.execute(select(Grant).where(Grant.request_id == rid))).scalar_one()  # type: ignore[arg-type]


async def _req(s: Stack, rid: str) -> AccessRequest:
    async with s.rt.db.sessions() as session:
        return (await session.execute(select(AccessRequest).where(AccessRequest.id == rid))).scalar_one()  # type: ignore[arg-type]


async def _requests(s: Stack) -> int:
    async with s.rt.db.sessions() as session:
        return len((await session.execute(select(AccessRequest))).scalars().all())


async def _events(s: Stack, rid: str) -> list[str]:
    async with s.rt.db.sessions() as session:
        rows = (await session.execute(select(Event).where(Event.request_id == rid).order_by(Event.id))).scalars()  # type: ignore[arg-type]
        return [r.kind for r in rows]


def _asked(s: Stack, rid: str) -> list[tuple[int, str]]:
    return sorted((p["layer"], p["approver"]) for p in s.notifier.of_kind("approval_request")
                  if p["request"]["id"] == rid)


async def _expires(s: Stack, rid: str) -> datetime:
    g = await _grant(s, rid)
    assert g.expires_at is not None
    return g.expires_at


async def test_beyond_the_maximum_the_extension_goes_through_every_layer_with_the_usual_rules(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    rid = await _active(s)
    ends = await _expires(s, rid)
    ext = ExtensionService(s.rt)
    out = await ext.extend(request_id=rid, actor=ALICE)
    assert out.request is not None and out.expires_at is None
    xid = out.request.id
    assert "needs approval again" in out.message and xid in out.message
    x = await _req(s, xid)
    assert (x.kind, x.parent_id, x.status, x.duration_s, x.layer) == ("extension", rid, "pending", 7200, 1)
    assert x.layer_deadline == clock.now() + timedelta(hours=4)  # the layer's timeout (the access ends later)
    assert await _expires(s, rid) == ends  # nothing moves before approval
    await s.worker.run_until_idle()
    assert _asked(s, xid) == [(1, BOB), (1, CAROL)]
    ask = next(p for p in s.notifier.of_kind("approval_request") if p["request"]["id"] == xid)
    assert ask["request"]["kind"] == "extension" and ask["request"]["parent_id"] == rid
    with pytest.raises(PolicyViolation):  # never your own
        await s.approvals.decide(request_id=xid, layer=1, approver=ALICE, decision=Decision.APPROVE)
    with pytest.raises(PolicyViolation):  # layer 2 is not open yet
        await s.approvals.decide(request_id=xid, layer=2, approver=DAVE, decision=Decision.APPROVE)
    await s.approvals.decide(request_id=xid, layer=1, approver=CAROL, decision=Decision.APPROVE)
    with pytest.raises(PolicyViolation):  # carol is in security too: one person, one layer
        await s.approvals.decide(request_id=xid, layer=2, approver=CAROL, decision=Decision.APPROVE)
    assert await _expires(s, rid) == ends
    await s.approvals.decide(request_id=xid, layer=2, approver=DAVE, decision=Decision.APPROVE)
    assert await _expires(s, rid) == ends + timedelta(hours=2)
    assert (await _grant(s, rid)).warn_at == ends + timedelta(hours=2) - timedelta(minutes=15)
    assert (await _req(s, xid)).status == "approved"
    assert "extension_requested" in await _events(s, xid) and "extension_approved" in await _events(s, xid)
    assert "extended" in await _events(s, rid)
    async with s.rt.db.sessions() as session:  # no second grant: the one grant's expiry moved
        assert len((await session.execute(select(Grant))).scalars().all()) == 1
    _, pending = await queries.my_requests(s.rt, ALICE)  # an applied extension waits for nothing
    assert [p["id"] for p in pending] == []
    assert [i.request.id for i in await AdminService(s.rt).pending(actor="root@example.com")] == []
    clock.set(ends + timedelta(minutes=1))  # the old expiry passes: still there
    await s.worker.run_until_idle()
    assert await s.is_member(ALICE, "prod-admins")
    clock.set(ends + timedelta(hours=2, seconds=1))  # the new one: revoked, durably from the row
    await s.worker.run_until_idle()
    assert not await s.is_member(ALICE, "prod-admins")
    assert (await _req(s, rid)).status == "expired"


async def test_denied_or_lapsed_the_grant_still_ends_at_its_original_expiry(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    rid = await _active(s)
    ends = await _expires(s, rid)
    ext = ExtensionService(s.rt)
    denied = await ext.ask(request_id=rid, actor=ALICE, by=timedelta(hours=2))
    await s.approvals.decide(request_id=denied.id, layer=1, approver=BOB, decision=Decision.DENY, reason="no")
    assert (await _req(s, denied.id)).status == "denied" and await _expires(s, rid) == ends
    clock.set(ends - timedelta(hours=1))  # the layers' 4h timeout would outlive the access
    lapsing = await ext.ask(request_id=rid, actor=ALICE, by=timedelta(hours=2))  # one at a time: the first ended
    assert (await _req(s, lapsing.id)).layer_deadline == ends  # decided before the access ends, or it lapses then
    await s.approvals.decide(request_id=lapsing.id, layer=1, approver=BOB, decision=Decision.APPROVE)
    clock.set(ends)  # layer 2 undecided at the expiry
    with pytest.raises(PolicyViolation, match="approval time"):
        await s.approvals.decide(request_id=lapsing.id, layer=2, approver=DAVE, decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    assert (await _req(s, lapsing.id)).status == "lapsed"
    assert (await _grant(s, rid)).status == "ended" and (await _grant(s, rid)).expires_at == ends
    assert not await s.is_member(ALICE, "prod-admins")


async def test_an_extension_approved_after_the_access_ended_changes_nothing_and_grants_nothing(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    rid = await _active(s)
    x = await ExtensionService(s.rt).ask(request_id=rid, actor=ALICE, by=timedelta(hours=2))
    await s.approvals.decide(request_id=x.id, layer=1, approver=BOB, decision=Decision.APPROVE)
    await s.grants.end_early(request_id=rid, actor=ALICE, reason="released")
    await s.worker.run_until_idle()
    assert not await s.is_member(ALICE, "prod-admins")
    ended = await _grant(s, rid)
    await s.approvals.decide(request_id=x.id, layer=2, approver=DAVE, decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    assert (await _req(s, x.id)).status == "lapsed"
    assert "extension_void" in await _events(s, x.id)
    after = await _grant(s, rid)
    assert (after.status, after.expires_at) == (ended.status, ended.expires_at)
    assert not await s.is_member(ALICE, "prod-admins")
    async with s.rt.db.sessions() as session:
        assert len((await session.execute(select(Grant))).scalars().all()) == 1


async def test_an_extension_racing_with_the_expiry_claim_loses_cleanly(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    """The expiry is claimed (active → revoking) while the last approval is being decided: the
    compare-and-set finds the grant no longer active; nothing is extended, the revocation completes."""
    s = await make_stack(db_factory(), loaded_policy, clock)
    rid = await _active(s)
    ends = await _expires(s, rid)
    clock.set(ends - timedelta(hours=1))
    x = await ExtensionService(s.rt).ask(request_id=rid, actor=ALICE, by=timedelta(hours=2))
    await s.approvals.decide(request_id=x.id, layer=1, approver=BOB, decision=Decision.APPROVE)
    clock.set(ends - timedelta(seconds=1))
    async with s.rt.db.transaction() as session:  # what the expiry claim does, a second early (skewed)
        g = (await session.execute(select(Grant).where(Grant.request_id == rid))).scalar_one()  # type: ignore[arg-type]
        g.status, g.end_reason, g.next_attempt_at = "revoking", "expired", clock.now()
    await s.approvals.decide(request_id=x.id, layer=2, approver=DAVE, decision=Decision.APPROVE)
    assert (await _req(s, x.id)).status == "lapsed"
    await s.worker.run_until_idle()
    g = await _grant(s, rid)
    assert g.status == "ended" and g.expires_at == ends
    assert not await s.is_member(ALICE, "prod-admins")


async def test_attacks_on_the_extension_are_refused_and_change_nothing(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    rid = await _active(s)
    ext, before = ExtensionService(s.rt), await _requests(s)
    with pytest.raises(PolicyViolation, match="Only the requester"):  # someone else's access
        await ext.extend(request_id=rid, actor=BOB)
    for forged in (timedelta(0), timedelta(seconds=-60), timedelta(hours=8, seconds=1)):
        with pytest.raises(PolicyViolation, match="longer than zero and at most 8h"):
            await ext.ask(request_id=rid, actor=ALICE, by=forged)
    assert await _requests(s) == before
    # two at once: exactly one extension request waits
    results = await asyncio.gather(*(ext.extend(request_id=rid, actor=ALICE) for _ in range(2)),
                                   return_exceptions=True)
    assert sum(isinstance(r, PolicyViolation) for r in results) == 1, results
    assert await _requests(s) == before + 1
    [x] = [r.request for r in results if not isinstance(r, BaseException)]
    assert x is not None
    with pytest.raises(PolicyViolation, match="already waiting"):
        await ext.extend(request_id=rid, actor=ALICE)
    with pytest.raises(PolicyViolation, match="extension request"):  # extending the extension itself
        await ext.ask(request_id=x.id, actor=ALICE, by=timedelta(hours=2))
    # the approver of layer 1 cannot decide layer 2 as well, even when they are in both groups
    await s.approvals.decide(request_id=x.id, layer=1, approver=CAROL, decision=Decision.APPROVE)
    with pytest.raises(PolicyViolation):
        await s.approvals.decide(request_id=x.id, layer=2, approver=CAROL, decision=Decision.APPROVE)
    assert await _requests(s) == before + 1


async def test_break_glass_access_is_never_extended(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    from bot.services.breakglass import BreakGlassService

    s = await make_stack(db_factory(), loaded_policy, clock)
    bg = await BreakGlassService(s.rt).invoke(requester=ALICE, eligibility="prod-admin", duration=timedelta(hours=1),
                                           justification="db down")
    await s.worker.run_until_idle()
    ext, before = ExtensionService(s.rt), await _requests(s)
    with pytest.raises(PolicyViolation, match="Break-glass access cannot be extended"):
        await ext.extend(request_id=bg.id, actor=ALICE)
    with pytest.raises(PolicyViolation, match="Break-glass access cannot be extended"):
        await ext.ask(request_id=bg.id, actor=ALICE, by=timedelta(hours=2))
    assert await _requests(s) == before


async def test_within_the_maximum_extend_is_immediate_and_without_reapproval_beyond_it_is_refused(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(reapproval=False), clock)
    rid = await _active(s, hours=4)
    ends = await _expires(s, rid)
    out = await ExtensionService(s.rt).extend(request_id=rid, actor=ALICE)  # 4h + 2h ≤ 8h
    assert out.request is None and out.expires_at == ends + timedelta(hours=2)
    assert out.message == f"Extended {rid} until {out.expires_at:%Y-%m-%d %H:%M} UTC."
    await ExtensionService(s.rt).extend(request_id=rid, actor=ALICE)  # 8h
    before = await _requests(s)
    with pytest.raises(PolicyViolation, match="allows at most 8h in total"):
        await ExtensionService(s.rt).extend(request_id=rid, actor=ALICE)
    with pytest.raises(PolicyViolation, match="no extension beyond 8h"):
        await ExtensionService(s.rt).ask(request_id=rid, actor=ALICE, by=timedelta(hours=2))
    assert await _requests(s) == before


def test_reapproval_needs_approval_layers() -> None:
    doc = yaml.safe_load(POLICY)
    ro = next(e for e in doc["eligibilities"] if e["name"] == "readonly")
    ro["extension"] = {"reapproval": True}
    with pytest.raises(PolicyError, match="reapproval: true needs approval layers"):
        parse_policy(yaml.safe_dump(doc), source="test", env={})


async def test_an_extension_approved_after_the_policy_stopped_allowing_it_changes_nothing(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    rid = await _active(s)
    ends = await _expires(s, rid)
    x = await ExtensionService(s.rt).ask(request_id=rid, actor=ALICE, by=timedelta(hours=2))
    await s.approvals.decide(request_id=x.id, layer=1, approver=BOB, decision=Decision.APPROVE)
    s.rt.loaded = _policy(reapproval=False)  # the policy reloaded meanwhile
    await s.approvals.decide(request_id=x.id, layer=2, approver=DAVE, decision=Decision.APPROVE)
    assert (await _req(s, x.id)).status == "lapsed"
    assert await _expires(s, rid) == ends


async def test_a_layer_that_needs_step_up_needs_it_for_the_extension_too(
        db_factory: DbFactory, clock: ManualClock) -> None:
    from bot.domain.step_up_proof import StepUpRequired

    doc = yaml.safe_load(POLICY)
    prod = next(e for e in doc["eligibilities"] if e["name"] == "prod-admin")
    prod["extension"] = {"reapproval": True}
    prod["approvals"][1]["step_up"] = {"provider": "corp", "max_age": "5m"}
    doc["public_url"] = "https://jit.example.com"
    doc["oidc_providers"] = {"corp": {"issuer": "https://idp.example.com", "client_id": "0oajitbot",
                                      "client_secret": "fake-client-secret-000000000000"}}
    loaded = parse_policy(yaml.safe_dump(doc), source="test", env={})
    s = await make_stack(db_factory(), loaded, clock)
    rid = await _active_with_step_up(s)
    ends = await _expires(s, rid)
    x = await ExtensionService(s.rt).ask(request_id=rid, actor=ALICE, by=timedelta(hours=2))
    await s.approvals.decide(request_id=x.id, layer=1, approver=BOB, decision=Decision.APPROVE)
    with pytest.raises(StepUpRequired):
        await s.approvals.decide(request_id=x.id, layer=2, approver=DAVE, decision=Decision.APPROVE)
    assert (await _req(s, x.id)).status == "pending" and await _expires(s, rid) == ends


async def _active_with_step_up(s: Stack) -> str:
    """Alice's prod-admin, active: its own layer 2 approved with a step-up proof."""
    from bot.domain.step_up_proof import StepUpProof, StepUpRequired

    req = await s.requests.submit(requester=ALICE, eligibility="prod-admin", duration=timedelta(hours=8),
                                  justification="deploy", ticket="OPS-1")
    await s.approvals.decide(request_id=req.id, layer=1, approver=BOB, decision=Decision.APPROVE)
    with pytest.raises(StepUpRequired):
        await s.approvals.decide(request_id=req.id, layer=2, approver=DAVE, decision=Decision.APPROVE)
    proof = StepUpProof(request_id=req.id, layer=2, approver=DAVE, subject="dave", auth_time=s.rt.clock.now(),
                        ticket="t")
    await s.approvals.decide(request_id=req.id, layer=2, approver=DAVE, decision=Decision.APPROVE, step_up=proof)
    await s.worker.run_until_idle()
    return req.id
