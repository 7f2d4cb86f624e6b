"""A grant approved in a process with a running worker is claimed by the approving transaction and carried
out by that worker straight after the commit: no wake, no pass, no claim transaction of its own."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from bot.domain.requests import Decision
from bot.policy_file import LoadedPolicy
from bot.services.clock import ManualClock
from storage.tables import AccessRequest, Grant
from tests.conftest import DbFactory
from tests.services.stack import Stack, make_stack


async def _started(s: Stack) -> None:
    s.worker.start(interval=3600)  # no tick during the test: only the start-up pass, and wakes

    async def first_pass() -> None:
        while s.worker.ticks < 1:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(first_pass(), timeout=30)


async def _grants(s: Stack) -> list[Any]:
    async with s.rt.db.sessions() as session:
        return list((await session.execute(select(Grant))).scalars())  # type: ignore[call-overload]


async def _carried_out(s: Stack) -> None:
    running = list(s.worker.grants._running.values())
    if running:
        await asyncio.wait_for(asyncio.gather(*running), timeout=30)


async def test_an_approved_grant_goes_to_the_running_worker_without_a_pass(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    await _started(s)
    try:
        passes = s.worker.ticks
        await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                duration=timedelta(hours=1), justification="deploy", ticket="OPS-1")
        req_id = await _request_id(s)
        await s.approvals.decide(request_id=req_id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
        assert await _grants(s) == []
        await s.approvals.decide(request_id=req_id, layer=2, approver="dave@example.com", decision=Decision.APPROVE)
        [g] = await _grants(s)
        assert g.claimed_by == s.worker.worker_id  # claimed by the approving transaction
        assert not s.rt.wake.is_set()  # nothing woke the worker ...
        await _carried_out(s)
        assert await s.is_member("alice@example.com", "prod-admins")
        [g] = await _grants(s)
        assert g.status == "active" and g.claimed_until is None
        assert s.worker.ticks == passes  # ... and no pass ran for it
        # an auto-approved request (no layers) the same way
        await s.requests.submit(requester="alice@example.com", eligibility="readonly", duration=timedelta(hours=1),
                                justification="read the logs")
        await _carried_out(s)
        assert await s.is_member("alice@example.com", "readonly")
        assert s.worker.ticks == passes
    finally:
        await s.worker.stop()


async def _request_id(s: Stack) -> str:
    async with s.rt.db.sessions() as session:
        return str((await session.execute(select(AccessRequest.id))).scalar_one())  # type: ignore[call-overload]


async def test_without_a_running_worker_the_grant_is_left_for_a_pass(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)  # a worker, not started (a CLI, or `serve` without one)
    await s.requests.submit(requester="alice@example.com", eligibility="readonly", duration=timedelta(hours=1),
                            justification="read the logs")
    [g] = await _grants(s)
    assert g.claimed_by is None and s.rt.wake.is_set()
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "readonly")


async def test_a_grant_handed_to_a_stopping_worker_is_given_back_for_the_next_one(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), loaded_policy, clock)
    await _started(s)
    s.worker.grants.stopping = True  # the approving transaction began before stop(); it commits after
    await s.requests.submit(requester="alice@example.com", eligibility="readonly", duration=timedelta(hours=1),
                            justification="read the logs")
    await s.worker.stop()  # waits for the claim to be given back
    [g] = await _grants(s)
    assert g.status == "granting" and g.claimed_until is None  # free at once, not after the lease
    assert not await s.is_member("alice@example.com", "readonly")
    await s.worker.run_until_idle()  # the next worker's pass takes it
    assert await s.is_member("alice@example.com", "readonly")


class TickingClock(ManualClock):
    """A clock that moves on a microsecond each time it is read, as a real one does between two reads."""

    def now(self) -> Any:
        t = super().now()
        self.advance(timedelta(microseconds=1))
        return t


async def test_with_a_moving_clock_an_approval_is_granted_now_and_says_so(
        db_factory: DbFactory, loaded_policy: LoadedPolicy) -> None:
    """The grant's due time is the approval's own "now": it was read again inside ``new_grant``, a moment
    later, so every immediate grant looked scheduled — "access starts <now>" to the requester, "; starts
    …" in the audit line, and never handed to the worker."""
    s = await make_stack(db_factory(), loaded_policy, TickingClock())
    await _started(s)
    try:
        await s.requests.submit(requester="alice@example.com", eligibility="readonly", duration=timedelta(hours=1),
                                justification="read the logs")
        [g] = await _grants(s)
        assert g.claimed_by == s.worker.worker_id  # handed over: due now
        await _carried_out(s)
        assert await s.is_member("alice@example.com", "readonly")
        told = [p["text"] for p in s.notifier.of_kind("requester") if p["event"] == "approved"]
        assert told and all("granting access now" in t and "starts" not in t for t in told)
        audit = [p["text"] for p in s.notifier.of_kind("audit") if p["event"] == "approved"]
        assert audit and all("starts" not in t for t in audit)
    finally:
        await s.worker.stop()
