"""Bundles under attack: what a hostile requester, approver or administrator slip could get through."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from bot.domain.requests import Decision, PolicyViolation
from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from connectors.base import GrantResult, IdpUser, PermissionDenied, Target
from storage.tables import AccessRequest, Grant
from tests.conftest import DbFactory
from tests.services.stack import make_stack
from tests.services.test_bundles import POLICY, _approved_bundle, _rows, _settle, _stack


async def test_admin_retry_of_a_failed_bundle_member_is_refused(db_factory: DbFactory, clock: ManualClock) -> None:
    """docs/policy.md: a bundle is not retried by /jit admin retry (the others have ended: it would be
    granted alone, or granted and revoked again by the guard)."""
    s = await _stack(db_factory, clock)
    conn = s.rt.connectors["demo"]
    real = conn.grant

    async def grant(user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        if target.id == "logs":
            raise PermissionDenied("403 from the fake", user_message="The provider refused it.")
        return await real(user, target, grant_id=grant_id, expires_at=expires_at)

    conn.grant = grant  # type: ignore[method-assign]
    bundle = await _approved_bundle(s)
    await _settle(s)
    conn.grant = real  # type: ignore[method-assign]
    reqs, _ = await _rows(s, bundle)
    failed = next(r for r in reqs if r.status == "failed")
    with pytest.raises(PolicyViolation, match="bundle"):
        await s.grants.retry_failed(request_id=failed.id, actor="admin@example.com")
    await _settle(s)
    reqs, grants = await _rows(s, bundle)
    assert sorted(r.status for r in reqs) == ["failed", "revoked"]
    assert {g.status for g in grants} == {"ended"}
    assert not await s.is_member("alice@example.com", "logs") and not await s.is_member("alice@example.com", "db")


async def test_a_bundle_does_not_extend_a_first_member_that_allows_no_extension(
        db_factory: DbFactory, clock: ManualClock) -> None:
    """The bundle request carries its first member's grant: the member's ``extension: {allowed: false}``
    holds for it, though the bundle entry does not spell out an ``extension`` of its own."""
    policy = POLICY.replace("max_duration: 4h,", "max_duration: 4h, extension: {allowed: false},")
    s = await make_stack(db_factory(), parse_policy(policy, env={}), clock)
    bundle = await _approved_bundle(s)
    await _settle(s)
    with pytest.raises(PolicyViolation, match="does not allow extensions"):
        await s.grants.extend(request_id=bundle, actor="alice@example.com", by=timedelta(minutes=30))
    async with s.rt.db.sessions() as session:
        g = (await session.execute(select(Grant).where(Grant.request_id == bundle))).scalar_one()  # type: ignore[arg-type]
    assert g.expires_at is not None and g.granted_at is not None
    assert g.expires_at - g.granted_at <= timedelta(hours=1)


async def _member(s: object, bundle: str) -> str:
    reqs, _ = await _rows(s, bundle)  # type: ignore[arg-type]
    return next(r.id for r in reqs if r.id != bundle)


async def test_a_member_is_not_extended_past_its_bundles_maximum(db_factory: DbFactory, clock: ManualClock) -> None:
    """The approvers approved the bundle within its maximum (its own ``max_duration: 1h``): a member is not
    held past it by extending it alone under its own eligibility's (logs: 2h)."""
    policy = POLICY.replace("bundle: [db, logs]}", "bundle: [db, logs], max_duration: 1h}")
    s = await make_stack(db_factory(), parse_policy(policy, env={}), clock)
    bundle = await _approved_bundle(s)
    await _settle(s)
    member = await _member(s, bundle)
    with pytest.raises(PolicyViolation, match="at most 1h"):
        await s.grants.extend(request_id=member, actor="alice@example.com", by=timedelta(minutes=30))


async def test_a_member_is_not_extended_when_its_bundle_allows_no_extension(
        db_factory: DbFactory, clock: ManualClock) -> None:
    policy = POLICY.replace("bundle: [db, logs]}", "bundle: [db, logs], extension: {allowed: false}}")
    s = await make_stack(db_factory(), parse_policy(policy, env={}), clock)
    bundle = await _approved_bundle(s)
    await _settle(s)
    member = await _member(s, bundle)
    with pytest.raises(PolicyViolation, match="does not allow extensions"):
        await s.grants.extend(request_id=member, actor="alice@example.com", by=timedelta(minutes=30))
    async with s.rt.db.sessions() as session:
        g = (await session.execute(select(Grant).where(Grant.request_id == member))).scalar_one()  # type: ignore[arg-type]
    assert g.expires_at is not None and g.granted_at is not None
    assert g.expires_at - g.granted_at <= timedelta(hours=1)


async def test_a_bundle_is_refused_while_another_bundle_holding_one_of_its_members_is_open(
        db_factory: DbFactory, clock: ManualClock) -> None:
    """A bundle's first member is carried by the bundle request (eligibility: the bundle's name): the
    'holds none of the members already' check must see it there too, pending or active."""
    policy = POLICY + """
  - {name: more, connector: demo, target: {group: ops}, requestors: {groups: [eng]}, max_duration: 2h,
     approvals: [{approvers: {groups: [sec]}}]}
  - {name: debug2, bundle: [db, more]}
"""
    s = await make_stack(db_factory(), parse_policy(policy, env={}), clock)
    pending = await s.requests.submit(requester="alice@example.com", eligibility="debug",
                                      duration=timedelta(hours=1), justification="incident 42")
    held = f"includes db, which you already have or have asked for \\((?:\\S+: )?{pending.id}"
    with pytest.raises(PolicyViolation, match=held):
        await s.requests.submit(requester="alice@example.com", eligibility="debug2", duration=timedelta(hours=1),
                                justification="incident 43")
    await s.approvals.decide(request_id=pending.id, layer=1, approver="carol@example.com",
                             decision=Decision.APPROVE)
    await _settle(s)
    held = f"includes db, which you already have or have asked for \\((?:\\S+: )?{pending.id}"
    with pytest.raises(PolicyViolation, match=held):
        await s.requests.submit(requester="alice@example.com", eligibility="debug2", duration=timedelta(hours=1),
                                justification="incident 43")
    async with s.rt.db.sessions() as session:
        assert not (await session.execute(select(AccessRequest).where(AccessRequest.eligibility == "debug2"))).all()  # type: ignore[arg-type]


SINGLE_DEBUG = POLICY.replace("  - {name: debug, description: Debugging, bundle: [db, logs]}\n", """\
  - {name: debug, connector: demo, target: {group: logs}, requestors: {groups: [eng]}, max_duration: 2h,
     approvals: [{approvers: {groups: [sec]}}]}
""")


@pytest.mark.parametrize(("before", "after"), [(SINGLE_DEBUG, POLICY), (POLICY, SINGLE_DEBUG)],
                         ids=["single-became-bundle", "bundle-became-single"])
async def test_a_request_whose_eligibility_became_or_stopped_being_a_bundle_while_pending_is_not_approved(
        db_factory: DbFactory, clock: ManualClock, before: str, after: str) -> None:
    """The approvers saw the items as requested (one, or the bundle's list): what is granted is that."""
    s = await make_stack(db_factory(), parse_policy(before, env={}), clock)
    req = await s.requests.submit(requester="alice@example.com", eligibility="debug", duration=timedelta(hours=1),
                                  justification="incident 42")
    s.rt.loaded = parse_policy(after, env={})
    with pytest.raises(PolicyViolation, match="cannot be approved"):
        await s.approvals.decide(request_id=req.id, layer=1, approver="carol@example.com", decision=Decision.APPROVE)
    await _settle(s)
    async with s.rt.db.sessions() as session:
        assert not (await session.execute(select(Grant))).scalars().all()
        assert (await session.get(AccessRequest, req.id)).status == "pending"  # type: ignore[union-attr]


async def test_a_member_whose_grant_call_is_in_flight_when_another_fails_is_removed_after_it(
        db_factory: DbFactory, clock: ManualClock) -> None:
    """logs fails for good while db's IdP call is in flight; another worker's guard ends db meanwhile:
    the membership the call then adds is removed, and nothing stays active."""
    import asyncio

    from bot.services.requesting.bundles import BundleGuard

    s = await _stack(db_factory, clock)
    conn = s.rt.connectors["demo"]
    real = conn.grant
    logs_failed = asyncio.Event()
    grants_service = s.worker.grants
    real_failed = grants_service._grant_failed

    async def failed(*args: object, **kwargs: object) -> None:
        await real_failed(*args, **kwargs)  # type: ignore[arg-type]
        logs_failed.set()

    grants_service._grant_failed = failed  # type: ignore[method-assign]
    ended_meanwhile: list[int] = []

    async def grant(user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        if target.id == "logs":
            raise PermissionDenied("403 from the fake", user_message="The provider refused it.")
        await asyncio.wait_for(logs_failed.wait(), 30)
        ended_meanwhile.append(await BundleGuard(s.rt).run())  # another replica's pass, mid-call
        return await real(user, target, grant_id=grant_id, expires_at=expires_at)

    conn.grant = grant  # type: ignore[method-assign]
    bundle = await _approved_bundle(s)
    await _settle(s)
    assert ended_meanwhile == [1]
    reqs, grants = await _rows(s, bundle)
    assert sorted(r.status for r in reqs) == ["failed", "revoked"]
    assert {g.status for g in grants} == {"ended"}
    assert not await s.is_member("alice@example.com", "db") and not await s.is_member("alice@example.com", "logs")


async def test_a_single_request_is_refused_while_an_open_bundle_holds_it(db_factory: DbFactory,
                                                                          clock: ManualClock) -> None:
    """One of each item at a time, as for single requests: pending, the bundle request asks for every
    member; approved, it carries the first and each other member is a request of its own."""
    s = await _stack(db_factory, clock)
    bundle = await s.requests.submit(requester="alice@example.com", eligibility="debug", duration=timedelta(hours=1),
                                     justification="incident 42")
    for item in ("db", "logs"):
        with pytest.raises(PolicyViolation, match=f"{item} within the bundle debug \\({bundle.id}\\)"):
            await s.requests.submit(requester="alice@example.com", eligibility=item, duration=timedelta(hours=1),
                                    justification="incident 43")
    await s.approvals.decide(request_id=bundle.id, layer=1, approver="carol@example.com", decision=Decision.APPROVE)
    await _settle(s)
    with pytest.raises(PolicyViolation, match=f"db within the bundle debug \\({bundle.id}\\)"):
        await s.requests.submit(requester="alice@example.com", eligibility="db", duration=timedelta(hours=1),
                                justification="incident 43")
    member = f"You already have logs \\(R\\S+, granted with the bundle {bundle.id}\\)"
    with pytest.raises(PolicyViolation, match=member):
        await s.requests.submit(requester="alice@example.com", eligibility="logs", duration=timedelta(hours=1),
                                justification="incident 43")
    async with s.rt.db.sessions() as session:
        assert not (await session.execute(select(AccessRequest).where(AccessRequest.bundle_id.is_(None)))).all()  # type: ignore[union-attr]
