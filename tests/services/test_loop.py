"""The whole loop through the services, with an injected clock, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from bot.domain.requests import Decision, PolicyViolation, Status
from bot.services.auditing.audit import verify_chain
from bot.services.clock import ManualClock
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import DbFactory
from tests.services.stack import make_stack


async def _status(db_factory: DbFactory, stack_db, request_id: str) -> str:  # type: ignore[no-untyped-def]
    async with stack_db.sessions() as s:
        return (await s.execute(select(AccessRequest.status).where(AccessRequest.id == request_id))).scalar_one()


async def test_full_loop_survives_a_restart_between_every_step(db_factory: DbFactory, loaded_policy,  # type: ignore[no-untyped-def]
                                                               clock: ManualClock) -> None:
    async def restart():  # type: ignore[no-untyped-def]
        return await make_stack(db_factory(), loaded_policy, clock)

    s = await restart()
    req = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                  duration=timedelta(hours=1), justification="fix the outage", ticket="OPS-1")
    assert req.status == "pending" and req.layer == 1
    await s.worker.run_until_idle()
    asks = s.notifier.of_kind("approval_request")
    assert sorted(a["approver"] for a in asks) == ["bob@example.com", "carol@example.com"]

    s = await restart()
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    layer2 = [a for a in s.notifier.of_kind("approval_request") if a["layer"] == 2]
    # carol and dave are in security; nobody who approved layer 1 is asked again
    assert sorted(a["approver"] for a in layer2) == ["carol@example.com", "dave@example.com"]

    s = await restart()
    result = await s.approvals.decide(request_id=req.id, layer=2, approver="dave@example.com",
                                      decision=Decision.APPROVE)
    assert result.status is Status.APPROVED
    assert not await s.is_member("alice@example.com", "prod-admins")

    s = await restart()
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "prod-admins")
    assert await _status(db_factory, s.rt.db, req.id) == "active"
    assert [p["event"] for p in s.notifier.of_kind("requester")] == ["approved", "active"]

    s = await restart()
    clock.advance(timedelta(minutes=44))
    await s.worker.run_until_idle()
    assert s.notifier.of_kind("requester") == []
    clock.advance(timedelta(minutes=2))
    await s.worker.run_until_idle()
    assert [p["event"] for p in s.notifier.of_kind("requester")] == ["warning"]

    s = await restart()
    clock.advance(timedelta(minutes=13, seconds=59))
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "prod-admins")  # not a second early
    clock.advance(timedelta(seconds=1))
    await s.worker.run_until_idle()
    assert not await s.is_member("alice@example.com", "prod-admins")
    assert await _status(db_factory, s.rt.db, req.id) == "expired"
    assert (await verify_chain(s.rt.db)).ok

    async with s.rt.db.sessions() as session:
        kinds = [e.kind for e in (await session.execute(select(Event).order_by(Event.id))).scalars()
                 if not e.kind.startswith("reconcile_")]  # the reconciliation sweep's own bookkeeping
    assert kinds == ["requested", "layer_approved", "layer_approved", "approved", "granted", "warned", "expired"]


async def test_audit_verify_detects_a_row_edited_by_hand(db_factory: DbFactory, loaded_policy,  # type: ignore[no-untyped-def]
                                                         clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    for who in ("alice@example.com", "bob@example.com"):
        await s.requests.submit(requester=who, eligibility="readonly", duration=timedelta(hours=1),
                                justification="look at logs")
    assert (await verify_chain(s.rt.db)).ok
    async with s.rt.db.transaction() as session:
        second = (await session.execute(select(Event.id).order_by(Event.id).offset(1).limit(1))).scalar_one()
        await session.execute(text("UPDATE event SET actor = 'mallory@example.com' WHERE id = :i"), {"i": second})
    result = await verify_chain(s.rt.db)
    assert not result.ok and result.first_bad_id == second


async def test_audit_verify_detects_a_deleted_row(db_factory: DbFactory, loaded_policy,  # type: ignore[no-untyped-def]
                                                  clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    await s.requests.submit(requester="alice@example.com", eligibility="readonly", duration=timedelta(hours=1),
                            justification="look at logs")
    await s.worker.run_until_idle()
    async with s.rt.db.transaction() as session:
        first = (await session.execute(select(Event.id).order_by(Event.id).limit(1))).scalar_one()
        await session.execute(text("DELETE FROM event WHERE id = :i"), {"i": first})
    assert not (await verify_chain(s.rt.db)).ok


async def test_requester_cannot_approve_own_request(db_factory: DbFactory, loaded_policy,  # type: ignore[no-untyped-def]
                                                    clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    req = await s.requests.submit(requester="bob@example.com", eligibility="prod-admin",
                                  duration=timedelta(hours=1), justification="deploy", ticket="OPS-2")
    with pytest.raises(PolicyViolation, match="own request"):
        await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    # and bob was never asked
    assert [a["approver"] for a in s.notifier.of_kind("approval_request")] == ["carol@example.com"]


async def test_a_decision_on_an_unknown_request_or_a_removed_eligibility_is_refused(  # type: ignore[no-untyped-def]
        db_factory: DbFactory, loaded_policy, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    with pytest.raises(PolicyViolation, match=r"^There is no request R-FORGED\.$"):
        await s.approvals.decide(request_id="R-FORGED", layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    req = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                  duration=timedelta(hours=1), justification="deploy", ticket="OPS-2")
    monkeypatch.setattr(s.rt, "eligibility", lambda name: None)  # the policy no longer has it
    with pytest.raises(PolicyViolation, match=r"^prod-admin is no longer in the policy; nobody can approve it\.$"):
        await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    async with s.rt.db.sessions() as session:
        assert (await session.execute(text("SELECT count(*) FROM approval_vote"))).scalar_one() == 0
    assert await _status(db_factory, s.rt.db, req.id) == "pending"


async def test_second_concurrent_approval_is_told_who_decided(db_factory: DbFactory, loaded_policy,  # type: ignore[no-untyped-def]
                                                              clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    req = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                  duration=timedelta(hours=1), justification="deploy", ticket="OPS-2")
    await s.approvals.decide(request_id=req.id, layer=1, approver="carol@example.com", decision=Decision.APPROVE)
    with pytest.raises(PolicyViolation, match="Already approved by carol@example.com"):
        await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)


async def test_deny_ends_the_request_and_grants_nothing(db_factory: DbFactory, loaded_policy,  # type: ignore[no-untyped-def]
                                                        clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    req = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                  duration=timedelta(hours=1), justification="deploy", ticket="OPS-2")
    r = await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.DENY,
                                 reason="not during the freeze")
    assert r.status is Status.DENIED
    await s.worker.run_until_idle()
    assert not await s.is_member("alice@example.com", "prod-admins")
    updates = s.notifier.of_kind("approval_update")
    assert updates[-1]["outcome"] == "Denied by bob@example.com"
    with pytest.raises(PolicyViolation, match="Already denied"):
        await s.approvals.decide(request_id=req.id, layer=1, approver="carol@example.com", decision=Decision.APPROVE)


async def test_pending_request_lapses_at_the_layer_timeout(db_factory: DbFactory, loaded_policy,  # type: ignore[no-untyped-def]
                                                           clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    req = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                  duration=timedelta(hours=1), justification="deploy", ticket="OPS-2")
    clock.advance(timedelta(hours=3, minutes=59))
    await s.worker.run_until_idle()
    assert await _status(db_factory, s.rt.db, req.id) == "pending"
    clock.advance(timedelta(minutes=1))
    await s.worker.run_until_idle()
    assert await _status(db_factory, s.rt.db, req.id) == "lapsed"
    assert s.notifier.of_kind("requester")[-1]["event"] == "lapsed"


async def test_standing_membership_survives_the_end_of_a_grant(db_factory: DbFactory, loaded_policy,  # type: ignore[no-untyped-def]
                                                               clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    # erin is a standing member of prod-admins (declared in the policy)
    assert await s.is_member("erin@example.com", "prod-admins")
    req = await s.requests.submit(requester="erin@example.com", eligibility="prod-admin",
                                  duration=timedelta(hours=1), justification="deploy", ticket="OPS-3")
    await s.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.approvals.decide(request_id=req.id, layer=2, approver="dave@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    clock.advance(timedelta(hours=2))
    await s.worker.run_until_idle()
    assert await _status(db_factory, s.rt.db, req.id) == "expired"
    assert await s.is_member("erin@example.com", "prod-admins")


async def test_overlapping_grants_keep_access_until_the_last_one_ends(db_factory: DbFactory, loaded_policy,  # type: ignore[no-untyped-def]
                                                                     clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    first = await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                    duration=timedelta(hours=1), justification="logs")
    await s.worker.run_until_idle()
    clock.advance(timedelta(minutes=30))
    # a second, overlapping grant of the same target (e.g. another request path) — same user
    async with s.rt.db.transaction() as session:
        req = (await session.execute(select(AccessRequest).where(AccessRequest.id == first.id))).scalar_one()
        req.status = "expired"  # let a second request be submitted while the grant is live
    second = await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                     duration=timedelta(hours=2), justification="more logs")
    async with s.rt.db.transaction() as session:
        req = (await session.execute(select(AccessRequest).where(AccessRequest.id == first.id))).scalar_one()
        req.status = "active"
    await s.worker.run_until_idle()
    clock.advance(timedelta(minutes=31))  # first ends
    await s.worker.run_until_idle()
    assert await _status(db_factory, s.rt.db, first.id) == "expired"
    assert await s.is_member("alice@example.com", "readonly")
    clock.advance(timedelta(hours=2))  # second ends
    await s.worker.run_until_idle()
    assert await _status(db_factory, s.rt.db, second.id) == "expired"
    assert not await s.is_member("alice@example.com", "readonly")
    async with s.rt.db.sessions() as session:
        grants = (await session.execute(select(Grant))).scalars().all()
    assert all(g.status == "ended" for g in grants)


async def test_revocation_reaches_the_account_whose_email_changed_during_the_grant(  # type: ignore[no-untyped-def]
        db_factory: DbFactory, loaded_policy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    req = await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                  duration=timedelta(hours=1), justification="logs")
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "readonly")
    # At the IdP the account is renamed: same account (id), new primary email; the old address finds nobody.
    demo = s.rt.connectors["demo"]
    users = demo._users  # type: ignore[attr-defined]
    account = users.pop("alice@example.com")
    users["alice.smith@example.com"] = type(account)(id=account.id, email="alice.smith@example.com")
    clock.advance(timedelta(hours=2))  # past the expiry and the directory's lookup cache
    await s.worker.run_until_idle()
    assert await _status(db_factory, s.rt.db, req.id) == "expired"
    # the membership the grant added is gone from the account it was added to
    assert not await s.is_member(account.id, "readonly")


async def test_only_a_submission_with_work_due_now_wakes_the_worker(db_factory: DbFactory, loaded_policy,  # type: ignore[no-untyped-def]
                                                                    clock: ManualClock) -> None:
    """A worker pass is a dozen claims and checks; a request waiting for approval has nothing due, so
    waking the worker for it only cost a pass (with two replicas, three times as many passes per flow)."""
    s = await make_stack(db_factory(), loaded_policy, clock)
    s.rt.wake.clear()
    await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                            duration=timedelta(hours=1), justification="fix the outage", ticket="OPS-1")
    assert not s.rt.wake.is_set()
    req = await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                  duration=timedelta(hours=1), justification="look at the logs")
    assert req.status == "approved"  # no approval layers: its grant is due now
    assert s.rt.wake.is_set()
