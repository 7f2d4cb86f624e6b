"""The worker's production loop: a full pass, then follow-up passes only over the work found due."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import pytest

from bot.policy_file import parse_policy
from bot.services.background import worker as worker_module
from bot.services.background.worker import WAKE_PASS
from bot.services.clock import ManualClock
from tests.conftest import DbFactory
from tests.services.stack import make_stack

USERS = ["a@example.com", "b@example.com"]
POLICY = f"""
audit_channel: "#jit-audit"
connectors:
  demo:
    type: memory
    users: [{", ".join(f"{{email: {u}}}" for u in USERS)}]
    groups: {{everyone: [{", ".join(USERS)}], target: []}}
eligibilities:
  - {{name: access, connector: demo, target: {{group: target}}, requestors: {{groups: [everyone]}},
      max_duration: 4h}}
"""
RUNS = {"grants": ["run_expiries", "run_grants", "run_warnings"], "requests": ["lapse_due"],
        "reminders": ["run_reminders", "run_escalations"], "breakglass": ["run_review_reminders"],
        "calendar": ["run_due"]}


def _record_runs(worker: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    ran: list[str] = []
    for attr, names in RUNS.items():
        service = getattr(worker, attr)
        for name in names:
            real = getattr(service, name)

            async def run(*a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
                ran.append(_name)
                return await _real(*a, **kw)

            monkeypatch.setattr(service, name, run)
    real_heartbeat = worker._heartbeat

    async def heartbeat() -> None:
        ran.append("heartbeat")
        await real_heartbeat()

    monkeypatch.setattr(worker, "_heartbeat", heartbeat)
    real_probe = worker_module.due_kinds

    async def probe(*a: Any) -> frozenset[str]:
        ran.append("probe")
        return await real_probe(*a)

    monkeypatch.setattr(worker_module, "due_kinds", probe)
    return ran


async def _one_grant_per_pass(db_factory: DbFactory, clock: ManualClock,
                              monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[str]]:
    """A stack with every user's grant due, whose grant claims take one grant per pass."""
    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    for user in USERS:
        await s.requests.submit(requester=user, eligibility="access", duration=timedelta(hours=1),
                                justification="work")
    real = s.worker.grants.run_grants
    monkeypatch.setattr(s.worker.grants, "run_grants", lambda: real(limit=1))  # one claim per pass
    return s, _record_runs(s.worker, monkeypatch)


async def test_a_busy_pass_is_followed_only_by_the_work_it_found_and_revocations(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    ran = _record_runs(s.worker, monkeypatch)
    s.worker._interval = 3600  # no full pass falls due between the passes of this test
    await s.requests.submit(requester=USERS[0], eligibility="access", duration=timedelta(hours=1),
                            justification="work")  # auto-approved: its grant is due now

    await s.worker._safe_tick()

    assert await s.is_member(USERS[0], "target")
    # the full pass: revocations, the probe (a grant is due), the grant, calendar jobs, the heartbeat; the
    # follow-up looked again at grants (and revocations) only, found none: done
    assert ran == ["run_expiries", "probe", "run_grants", "run_due", "heartbeat", "run_expiries", "run_grants"]
    assert s.worker.ticks == 2

    ran.clear()
    await s.worker._safe_tick()  # nothing due: one full pass (no runner the probe found nothing for), no follow-up
    assert ran == ["run_expiries", "probe", "run_due", "heartbeat"]
    await s.worker.sweeps_done()  # the full passes' IdP sweeps end with the test, not with its event loop


async def test_follow_up_passes_go_on_while_the_work_they_look_at_is_found(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s, ran = await _one_grant_per_pass(db_factory, clock, monkeypatch)
    s.worker._interval = 3600  # no full pass falls due between the passes of this test

    await s.worker._safe_tick()

    assert all([await s.is_member(u, "target") for u in USERS])
    assert ran.count("run_grants") == 3  # one grant, the other, then none
    assert ran.count("run_expiries") == 3 and ran.count("heartbeat") == 1
    await s.worker.sweeps_done()  # the full passes' IdP sweeps end with the test, not with its event loop


async def test_a_wake_runs_a_pass_over_grants_and_revocations_only(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    ran = _record_runs(s.worker, monkeypatch)
    s.worker._interval = 3600  # no tick during the test: what runs is the first pass and the wake's
    s.worker._stopping = False
    kicker = asyncio.create_task(s.worker._kick_loop())
    try:
        await asyncio.wait_for(_until(lambda: "heartbeat" in ran), timeout=30)  # the first, full pass
        ran.clear()
        await s.requests.submit(requester=USERS[0], eligibility="access", duration=timedelta(hours=1),
                                justification="work")  # auto-approved: wakes the worker
        await asyncio.wait_for(_until(lambda: ran[-2:] == ["run_expiries", "run_grants"]
                                      and len(ran) == 4), timeout=30)
        assert await s.is_member(USERS[0], "target")
        assert ran == ["run_expiries", "run_grants", "run_expiries", "run_grants"]  # the grant, then none
    finally:
        s.worker._stopping = True
        kicker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await kicker
        if s.worker._dispatching is not None:
            s.worker._dispatching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await s.worker._dispatching
        await s.worker.sweeps_done()


async def _until(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0)


async def test_a_long_run_of_busy_passes_still_makes_a_full_pass_every_interval(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s, ran = await _one_grant_per_pass(db_factory, clock, monkeypatch)
    s.worker._interval = 0  # a full pass is always due: every pass of the run is a full one

    await s.worker._safe_tick()

    # three full passes (each probes and beats); the third's probe found no grant due, so no claim ran
    assert ran.count("heartbeat") == 3 and ran.count("probe") == 3 and ran.count("run_grants") == 2
    await s.worker.sweeps_done()  # the full passes' IdP sweeps end with the test, not with its event loop


async def _stuck_sweep(db_factory: DbFactory, clock: ManualClock,
                       monkeypatch: pytest.MonkeyPatch) -> tuple[Any, asyncio.Event, asyncio.Event]:
    """A stack with an active 1-hour grant whose IdP never answers the reconcile sweep's member list."""
    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    await s.requests.submit(requester=USERS[0], eligibility="access", duration=timedelta(hours=1),
                            justification="work")
    await s.worker.run_until_idle()  # granted; the first reconcile sweep has run
    assert await s.is_member(USERS[0], "target")
    entered, gate = asyncio.Event(), asyncio.Event()
    connector = s.rt.connectors["demo"]
    real = connector.list_members

    async def stuck(group: str) -> Any:  # a 10,000-member group read through a throttled IdP
        entered.set()
        await gate.wait()
        return await real(group)

    monkeypatch.setattr(connector, "list_members", stuck)
    clock.advance(timedelta(minutes=16))  # the next reconcile sweep is due
    return s, entered, gate


async def test_a_slow_reconcile_sweep_does_not_hold_back_a_revocation(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    s, entered, gate = await _stuck_sweep(db_factory, clock, monkeypatch)
    await asyncio.wait_for(s.worker.schedule_tick(), timeout=10)  # the full pass starts the sweep, ends
    await asyncio.wait_for(entered.wait(), timeout=10)  # the sweep waits for the IdP
    clock.advance(timedelta(hours=1))  # the grant expires meanwhile
    report = await asyncio.wait_for(s.worker.schedule_tick(), timeout=10)
    assert report.revoked == 1 and not await s.is_member(USERS[0], "target")
    gate.set()
    await s.worker.sweeps_done()


async def test_stop_waits_for_a_sweep_only_briefly(db_factory: DbFactory, clock: ManualClock,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    s, entered, _gate = await _stuck_sweep(db_factory, clock, monkeypatch)
    monkeypatch.setattr("bot.services.background.worker.SWEEP_GRACE", 0.01)
    s.worker.start(interval=3600)
    await asyncio.wait_for(entered.wait(), timeout=10)  # the start's full pass started the sweep
    await asyncio.wait_for(s.worker.stop(), timeout=10)
    assert "sweep was cut off" in caplog.text
    assert s.worker._sweeps is not None and s.worker._sweeps.cancelled()


class _Timers:
    """The worker's ``call_later``, fired by the test itself."""

    def __init__(self) -> None:
        self.armed: list[tuple[float, Any]] = []
        self.cancelled = 0

    def __call__(self, delay: float, fn: Any) -> Any:
        self.armed.append((delay, fn))
        timers = self

        class Handle:
            def cancel(self) -> None:
                timers.cancelled += 1

        return Handle()


async def _active_grant(db_factory: DbFactory, clock: ManualClock) -> Any:
    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    await s.requests.submit(requester=USERS[0], eligibility="access", duration=timedelta(minutes=30),
                            justification="work")
    await s.worker.run_until_idle()
    assert await s.is_member(USERS[0], "target")
    return s


async def test_after_a_pass_that_found_nothing_the_worker_wakes_when_the_next_grant_expires(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _active_grant(db_factory, clock)
    timers = s.worker.call_later = _Timers()
    s.worker._interval = 3600  # the next tick is an hour away; the grant expires in 30 minutes

    await s.worker._safe_tick()

    assert [(delay, fn) for delay, fn in timers.armed] == [(1800.0, s.rt.wake.set)]
    clock.advance(timedelta(minutes=30))
    timers.armed[0][1]()  # the timer fires: the worker's wake
    assert s.rt.wake.is_set()
    await s.worker._safe_tick(only=WAKE_PASS)  # what the wake runs
    assert not await s.is_member(USERS[0], "target")
    await s.worker.sweeps_done()  # the full passes' IdP sweeps end with the test, not with its event loop


async def test_a_due_time_is_timed_once_and_only_before_the_next_tick(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await _active_grant(db_factory, clock)
    timers = s.worker.call_later = _Timers()
    s.worker._interval = 60  # the tick comes before the expiry: it looks again, no timer
    await s.worker._safe_tick()
    assert timers.armed == []

    s.worker._interval = 3600
    await s.worker._safe_tick()
    await s.worker._safe_tick()  # the same due time (this clock has not moved): not timed again
    assert len(timers.armed) == 1 and timers.cancelled == 0
    await s.worker.stop()  # stopping cancels it
    assert timers.cancelled == 1


async def test_a_grant_claimed_elsewhere_does_not_wake_the_worker(db_factory: DbFactory, clock: ManualClock) -> None:
    """A grant being carried out under a live claim (another replica's, or handed to this worker) is not
    due here: no timer for it, so no pass that would find it claimed. Its lease running out is the
    tick's to find."""
    from sqlalchemy import update

    from storage.tables import Grant

    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    await s.requests.submit(requester=USERS[0], eligibility="access", duration=timedelta(minutes=30),
                            justification="work")
    async with s.rt.db.transaction() as session:  # another replica claimed it and is at the IdP
        await session.execute(update(Grant).values(claimed_by="other",
                                                   claimed_until=clock.now() + timedelta(minutes=5)))
    timers = s.worker.call_later = _Timers()
    s.worker._interval = 3600
    await s.worker._safe_tick(only=WAKE_PASS)
    assert timers.armed == []
    assert not await s.is_member(USERS[0], "target")
    clock.advance(timedelta(minutes=6))  # the other replica died: its lease ran out
    await s.worker._safe_tick()
    assert await s.is_member(USERS[0], "target")
    await s.worker.sweeps_done()
