"""``JITBOT_INSTANCE_ID``: the owner of a process's claims, stable across restarts.

A restarted worker frees its own claims at once (``Worker.recover``); it must never free the claims
of another live worker — which is what would happen if two processes shared an id.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.bootstrap import build_runtime, close_runtime
from bot.policy_file import LoadedPolicy
from bot.services.background.worker import Worker
from bot.services.clock import ManualClock
from bot.services.outbox.dispatcher import OutboxDispatcher, RecordingNotifier
from bot.settings import Settings
from storage.db import Database
from storage.tables import Grant
from tests.conftest import DbFactory
from tests.services.stack import make_stack


def test_the_default_is_the_host_name_and_the_variable_overrides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JITBOT_INSTANCE_ID", raising=False)
    assert Settings().JITBOT_INSTANCE_ID == socket.gethostname()  # not host:pid — it must survive a restart
    monkeypatch.setenv("JITBOT_INSTANCE_ID", "web-1")
    assert Settings().JITBOT_INSTANCE_ID == "web-1"


async def test_build_runtime_takes_the_instance_id(loaded_policy: LoadedPolicy, tmp_path: object) -> None:
    rt = await build_runtime(loaded_policy, f"sqlite+aiosqlite:///{tmp_path}/rt.db", instance_id="worker-7")
    try:
        assert rt.instance_id == "worker-7"
        assert Worker(rt, OutboxDispatcher(rt.db, RecordingNotifier(), rt.clock)).worker_id == "worker-7"
    finally:
        await close_runtime(rt)


async def _claims(db: Database) -> dict[str, str | None]:
    async with db.sessions() as s:
        return {g.id: g.claimed_by for g in (await s.execute(select(Grant))).scalars()}


async def test_two_workers_with_different_ids_do_not_free_each_others_claims(
        db_factory: DbFactory, loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    a = await make_stack(db_factory(), loaded_policy, clock)
    b = await make_stack(db_factory(), loaded_policy, clock)  # a second process on the same database
    worker_a = Worker(a.rt, OutboxDispatcher(a.rt.db, RecordingNotifier(), clock), worker_id="host-1:a")
    worker_b = Worker(b.rt, OutboxDispatcher(b.rt.db, RecordingNotifier(), clock), worker_id="host-1:b")
    for who in ("alice@example.com", "erin@example.com"):
        await a.requests.submit(requester=who, eligibility="readonly", duration=timedelta(hours=1),
                                justification="read the logs")
    await worker_a.run_until_idle()
    # Both grants are due for revocation; each worker claims one (as if mid-revoke when it stalled).
    clock.advance(timedelta(hours=2))
    async with a.rt.db.transaction() as s:
        ids = sorted((await s.execute(select(Grant.id))).scalars())
        await s.execute(update(Grant).values(status="revoking", end_reason="expired", next_attempt_at=clock.now(),
                                             claimed_until=clock.now() + timedelta(minutes=5)))
        await s.execute(update(Grant).where(Grant.id == ids[0]).values(claimed_by="host-1:a"))
        await s.execute(update(Grant).where(Grant.id == ids[1]).values(claimed_by="host-1:b"))
    await worker_a.run_until_idle()
    await worker_b.run_until_idle()  # both heartbeat: both alive

    # b restarts (same id): it frees its own claim at once, and leaves a's alone
    restarted_b = Worker(b.rt, OutboxDispatcher(b.rt.db, RecordingNotifier(), clock), worker_id="host-1:b")
    await restarted_b.recover()
    claims = await _claims(a.rt.db)
    assert claims == {ids[0]: "host-1:a", ids[1]: None}
    await restarted_b.run_until_idle()  # b revokes its own grant now; a's stays claimed by a
    async with a.rt.db.sessions() as s:
        status = {g.id: g.status for g in (await s.execute(select(Grant))).scalars()}
    assert status == {ids[0]: "revoking", ids[1]: "ended"}

    # a restarts: frees its claim and finishes the job
    restarted_a = Worker(a.rt, OutboxDispatcher(a.rt.db, RecordingNotifier(), clock), worker_id="host-1:a")
    await restarted_a.recover()
    await restarted_a.run_until_idle()
    assert not await a.is_member("alice@example.com", "readonly")
    assert not await a.is_member("erin@example.com", "readonly")
