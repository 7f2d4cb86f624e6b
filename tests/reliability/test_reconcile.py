"""Reconciliation sweep: members without grants, grants without members, standing access, enforce."""

from __future__ import annotations

from datetime import timedelta

import yaml
from sqlalchemy import select

from bot.domain.requests import Decision
from bot.policy_file import parse_policy
from bot.services.access.reconcile import ReconcileService
from bot.services.clock import ManualClock
from connectors.base import IdpUser, Target, TargetKind
from storage.tables import Event
from tests.conftest import POLICY, DbFactory
from tests.services.stack import Stack, make_stack

READONLY = Target(TargetKind.GROUP, "readonly")
PROD = Target(TargetKind.GROUP, "prod-admins")


def _policy(enforce: bool = False):  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(POLICY)
    for e in doc["eligibilities"]:
        e["enforce"] = enforce
    return parse_policy(yaml.safe_dump(doc), source="test", env={})


async def _events(s: Stack, kind: str) -> list[dict[str, object]]:
    async with s.rt.db.sessions() as session:
        rows = (await session.execute(select(Event).where(Event.kind == kind).order_by(Event.id))).scalars()  # type: ignore[arg-type]
        return [dict(r.detail) for r in rows]


def _alerts(s: Stack) -> list[str]:
    return [str(p["text"]) for p in s.notifier.of_kind("alert")]


async def _add(s: Stack, email: str, target: Target) -> None:
    await s.rt.connectors["demo"].grant(IdpUser(id=email, email=email), target, grant_id="manual",
                                        expires_at=s.rt.clock.now())


async def _remove(s: Stack, email: str, target: Target) -> None:
    await s.rt.connectors["demo"].revoke(IdpUser(id=email, email=email), target, grant_id="manual")


async def _active_readonly(s: Stack, email: str = "alice@example.com") -> str:
    req = await s.requests.submit(requester=email, eligibility="readonly", duration=timedelta(hours=2),
                                  justification="look")
    await s.worker.run_until_idle()
    return req.id


async def test_first_sweep_records_standing_access_and_later_sweeps_alert_once(db_factory: DbFactory,
                                                                               clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(), clock)
    rec = ReconcileService(s.rt, interval=timedelta(minutes=15))
    report = await rec.run_if_due()
    assert report is not None and sorted(report.baselined) == ["demo:group:prod-admins", "demo:group:readonly"]
    baselines = {d["target"]: d["standing"] for d in await _events(s, "reconcile_baseline")}
    assert baselines == {"demo:group:prod-admins": ["erin@example.com"], "demo:group:readonly": []}
    assert await rec.run_if_due() is None  # not due yet: the interval is shared through the database

    await _add(s, "bob@example.com", READONLY)  # added at the IdP behind jitbot's back
    await _active_readonly(s)  # alice holds it through a grant: fine
    clock.advance(timedelta(minutes=16))
    report = await rec.run_if_due()
    assert report is not None and report.unmanaged == ["demo:group:readonly bob@example.com"]
    assert report.removed == [] and report.vanished == []
    await s.worker.dispatcher.dispatch_once()
    assert any("bob@example.com is a member of group:readonly without a jitbot grant" in a for a in _alerts(s))
    assert await s.is_member("bob@example.com", "readonly")  # enforce is off: alert only

    clock.advance(timedelta(minutes=16))
    report = await rec.run_if_due()
    assert report is not None and report.unmanaged == []  # alerted once, not every sweep
    assert len(await _events(s, "reconcile_unmanaged")) == 1
    await _remove(s, "bob@example.com", READONLY)
    await rec.sweep()
    await _add(s, "bob@example.com", READONLY)  # comes back: a new finding, a new alert
    assert (await rec.sweep()).unmanaged == ["demo:group:readonly bob@example.com"]


async def test_enforce_removes_unmanaged_members_but_never_standing_or_granted(db_factory: DbFactory,
                                                                              clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(enforce=True), clock)
    rec = ReconcileService(s.rt)
    await rec.sweep()  # baseline: erin is standing in prod-admins
    await _active_readonly(s, "alice@example.com")
    await _add(s, "bob@example.com", READONLY)
    await _add(s, "carol@example.com", PROD)
    clock.advance(timedelta(minutes=10))
    report = await rec.sweep()
    assert sorted(report.removed) == ["demo:group:prod-admins carol@example.com",
                                      "demo:group:readonly bob@example.com"]
    assert not await s.is_member("bob@example.com", "readonly")
    assert not await s.is_member("carol@example.com", "prod-admins")
    assert await s.is_member("alice@example.com", "readonly")  # holds a grant
    assert await s.is_member("erin@example.com", "prod-admins")  # standing access
    removed = await _events(s, "reconcile_removed")
    assert sorted(str(d["user"]) for d in removed) == ["bob@example.com", "carol@example.com"]


async def test_active_grant_whose_membership_vanished_is_alerted(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(), clock)
    rec = ReconcileService(s.rt)
    await rec.sweep()
    rid = await _active_readonly(s)
    await _remove(s, "alice@example.com", READONLY)  # someone removed it at the IdP
    assert (await rec.sweep()).vanished == []  # within the grace period: may be an IdP lag
    clock.advance(timedelta(minutes=6))
    report = await rec.sweep()
    assert len(report.vanished) == 1
    events = await _events(s, "reconcile_vanished")
    assert [d["user"] for d in events] == ["alice@example.com"]
    await s.worker.dispatcher.dispatch_once()
    assert any(rid in a and "no longer a membership" in a for a in _alerts(s))
    assert (await rec.sweep()).vanished == []  # once


async def test_a_grant_just_ended_or_in_flight_is_not_unmanaged(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(enforce=True), clock)
    rec = ReconcileService(s.rt)
    await rec.sweep()
    req = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                  duration=timedelta(hours=1), justification="deploy", ticket="OPS-1")
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.approvals.decide(request_id=req.id, layer=2, approver="dave@example.com", decision=Decision.APPROVE)
    # approved, grant row 'granting', and the IdP already has the member (the worker crashed mid-way)
    await _add(s, "alice@example.com", PROD)
    report = await rec.sweep()
    assert report.unmanaged == [] and report.removed == []
    assert await s.is_member("alice@example.com", "prod-admins")


async def test_worker_tick_runs_the_sweep_on_its_interval(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), _policy(), clock)
    await s.worker.tick()
    assert len(await _events(s, "reconcile_baseline")) == 2
    await _add(s, "bob@example.com", READONLY)
    await s.worker.tick()
    assert await _events(s, "reconcile_unmanaged") == []  # not due yet
    clock.advance(timedelta(minutes=15))
    await s.worker.run_until_idle()
    assert [d["user"] for d in await _events(s, "reconcile_unmanaged")] == ["bob@example.com"]


async def test_a_member_through_a_nested_group_is_reported_not_removed(db_factory: DbFactory,
                                                                       clock: ManualClock) -> None:
    # At Google a group's members include nested groups' users; removing them from this group (a direct
    # membership's delete) cannot end that access, so enforce must not claim it did.
    s = await make_stack(db_factory(), _policy(enforce=True), clock)
    rec = ReconcileService(s.rt)
    await rec.sweep()  # baseline
    rid = await _active_readonly(s, "alice@example.com")
    demo = s.rt.connectors["demo"]
    direct_members, revoked = demo.list_members, []

    async def with_nested(group: str) -> list[IdpUser]:
        members = await direct_members(group)
        if group == "readonly":  # alice's direct membership went; she and frank hold it through a nested group
            members = [u for u in members if u.email != "alice@example.com"]
            members += [IdpUser(id="frank@example.com", email="frank@example.com", direct=False),
                        IdpUser(id="alice@example.com", email="alice@example.com", direct=False)]
        return members

    async def spy_revoke(user: IdpUser, target: Target, *, grant_id: str) -> None:
        revoked.append(user.email)

    demo.list_members, demo.revoke = with_nested, spy_revoke  # type: ignore[method-assign]
    clock.advance(timedelta(minutes=10))
    report = await rec.sweep()
    assert report.removed == [] and revoked == []
    assert report.unmanaged == ["demo:group:readonly frank@example.com"]
    assert [d["nested"] for d in await _events(s, "reconcile_unmanaged")] == [True]
    assert len(report.vanished) == 1  # the grant's direct membership is gone: nested access is not it
    await s.worker.dispatcher.dispatch_once()
    assert any("frank@example.com" in a and "through a nested group" in a for a in _alerts(s))
    assert any(rid in a and "no longer a membership" in a for a in _alerts(s))


async def test_a_member_listed_under_another_address_is_the_same_person_by_idp_id(db_factory: DbFactory,
                                                                                   clock: ManualClock) -> None:
    # The IdP lists members by their primary email (Google primaryEmail, Entra mail, Okta profile.email),
    # while the grant was made for the address in Slack (an alias): the IdP's user id is what matches.
    s = await make_stack(db_factory(), _policy(enforce=True), clock)
    rec = ReconcileService(s.rt)
    demo = s.rt.connectors["demo"]
    listed, revoked = demo.list_members, []

    async def by_primary_email(group: str) -> list[IdpUser]:
        members = await listed(group)
        if group not in ("readonly", "prod-admins"):  # only the JIT targets: requestor groups as they were
            return members
        return [IdpUser(id=u.id, email=u.email.replace("erin@", "erin.primary@").replace("alice@", "a.smith@"))
                for u in members]

    async def spy_revoke(user: IdpUser, target: Target, *, grant_id: str) -> None:
        revoked.append(user.email)

    demo.list_members, demo.revoke = by_primary_email, spy_revoke  # type: ignore[method-assign]
    await rec.sweep()  # baseline: erin (as erin.primary@, id erin@example.com) is standing in prod-admins
    await _active_readonly(s, "alice@example.com")
    clock.advance(timedelta(minutes=10))
    report = await rec.sweep()
    assert report.unmanaged == [] and report.removed == [] and report.vanished == [] and revoked == []


async def test_enforce_keeps_standing_access_jitbot_recorded_at_a_grant(db_factory: DbFactory,
                                                                       clock: ManualClock) -> None:
    """A standing member asks once (``pre_member`` recorded); the baseline taken during that grant omits
    him; once the grant ends, enforcement must not remove the access he had before it."""
    s = await make_stack(db_factory(), _policy(enforce=True), clock)
    await _add(s, "bob@example.com", READONLY)  # standing access, before jitbot's first sweep
    await _active_readonly(s, "bob@example.com")
    rec = ReconcileService(s.rt, interval=timedelta(minutes=15))
    report = await rec.sweep()  # a baseline taken now leaves bob out (he holds a grant)
    assert report.removed == []
    assert (await _events(s, "reconcile_baseline"))[-1]["standing"] == []
    clock.advance(timedelta(hours=2, minutes=1))
    await s.worker.run_until_idle()  # the grant ends; the membership stays (it was there before)
    assert await s.is_member("bob@example.com", "readonly")
    clock.advance(timedelta(minutes=16))
    report = await rec.sweep()
    assert report.removed == [] and report.unmanaged == []
    assert await s.is_member("bob@example.com", "readonly")
    # someone added behind jitbot's back is still removed
    await _add(s, "carol@example.com", READONLY)
    report = await rec.sweep()
    assert report.removed == ["demo:group:readonly carol@example.com"]
