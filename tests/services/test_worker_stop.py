"""Stopping the worker lets a pass in progress finish, and says nothing alarming about it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.policy_file import LoadedPolicy
from bot.services.clock import ManualClock
from tests.conftest import DbFactory
from tests.services.stack import make_stack


async def test_stop_waits_for_a_scheduled_pass_in_progress(db_factory: DbFactory, loaded_policy: LoadedPolicy,
                                                           clock: ManualClock,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    stack = await make_stack(db_factory(), loaded_policy, clock)
    worker = stack.worker
    calls, started, gate, finished = 0, asyncio.Event(), asyncio.Event(), []

    async def slow_expiries() -> int:
        nonlocal calls
        calls += 1
        if calls != 2:  # the first pass is the start-up one; the second comes from the scheduler
            return 0
        started.set()
        await gate.wait()  # as if the IdP call of a revocation were under way
        finished.append(True)
        return 0

    worker.grants.run_expiries = slow_expiries  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING)
    worker.start(interval=0.05)
    await asyncio.wait_for(started.wait(), timeout=30)
    stopping = asyncio.create_task(worker.stop())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not stopping.done()  # stop waits for the pass ...
    gate.set()
    await asyncio.wait_for(stopping, timeout=30)
    assert finished == [True]  # ... which ran to its end instead of being cancelled
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert calls == 2  # and no pass started after stop()
