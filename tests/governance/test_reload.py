"""``serve`` applies a valid changed policy on start and on SIGHUP; an invalid one is refused and reported."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from sqlalchemy import select

from bot.governance.reload import PolicyReloader, startup_policy
from bot.policy_file import load_policy
from bot.services.clock import ManualClock
from storage.tables import Event
from tests.conftest import POLICY, DbFactory
from tests.governance.test_policy_plan import CHANGED
from tests.services.stack import Stack, make_stack


async def _stack(db_factory: DbFactory, path: Path) -> Stack:
    path.write_text(POLICY)
    return await make_stack(db_factory(), load_policy(path), ManualClock())


async def test_a_valid_changed_file_is_applied_and_swapped_in(db_factory: DbFactory, tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    s = await _stack(db_factory, path)
    reloader = PolicyReloader(s.rt, str(path))
    assert await reloader.reload()  # on start: applied to the database
    path.write_text(CHANGED)
    assert await reloader.reload()
    assert s.rt.eligibility("db-read") is not None and s.rt.eligibility("readonly") is None
    assert s.rt.loaded.sha256 == load_policy(path).sha256
    async with s.rt.db.sessions() as session:
        events = (await session.execute(select(Event).where(Event.kind == "policy_applied"))).scalars().all()
    assert [e.actor for e in events] == ["jitbot serve", "jitbot serve"]
    assert "demo" in s.rt.connectors and s.rt.directory.connectors is s.rt.connectors


async def test_an_invalid_file_is_refused_and_the_audit_channel_is_told_why(db_factory: DbFactory,
                                                                           tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    s = await _stack(db_factory, path)
    before = s.rt.loaded
    path.write_text(POLICY.replace("max_duration: 8h", "max_duration: forever"))
    assert not await PolicyReloader(s.rt, str(path)).reload()
    assert s.rt.loaded is before
    await s.worker.run_until_idle()
    (alert,) = s.notifier.of_kind("alert")
    assert "NOT applied" in alert["text"] and "max_duration" in alert["text"]
    assert before.sha256[:12] in alert["text"]


async def test_sighup_reloads_the_policy(db_factory: DbFactory, tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    s = await _stack(db_factory, path)
    loop = asyncio.get_running_loop()
    PolicyReloader(s.rt, str(path)).install(loop)
    try:
        path.write_text(CHANGED)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):
            if s.rt.eligibility("db-read") is not None:
                break
            await asyncio.sleep(0.02)
        assert s.rt.eligibility("db-read") is not None
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


async def test_start_with_an_invalid_file_falls_back_to_the_last_applied_policy(tmp_path: Path) -> None:
    path, url = tmp_path / "policy.yml", f"sqlite+aiosqlite:///{tmp_path / 'jitbot.db'}"
    path.write_text(POLICY)
    loaded, problems = await startup_policy(url, str(path))
    assert loaded is not None and problems == []
    from storage.db import Database
    db = Database(url)
    s = await make_stack(db, loaded, ManualClock())
    assert await PolicyReloader(s.rt, str(path)).reload()
    await db.dispose()
    path.write_text("audit_channel: [")
    fallback, problems = await startup_policy(url, str(path))
    assert fallback is not None and fallback.sha256 == loaded.sha256
    assert problems and "not valid YAML" in problems[0]
    empty, _ = await startup_policy(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}", str(path))
    assert empty is None
