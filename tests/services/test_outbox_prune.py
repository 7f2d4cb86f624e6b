"""Delivered outbox messages are deleted once older than the retention; nothing pending or dead ever is."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from bot.services.outbox import prune as outbox_prune
from bot.services.outbox.prune import OutboxPrune
from storage.tables import OutboxMessage
from tests.conftest import DbFactory
from tests.services.stack import Stack, make_stack

POLICY = """
audit_channel: "#jit-audit"
connectors:
  demo: {type: memory, users: [{email: a@example.com}], groups: {everyone: [a@example.com], target: []}}
eligibilities:
  - {name: access, connector: demo, target: {group: target}, requestors: {groups: [everyone]}, max_duration: 4h}
"""


async def _add(s: Stack, *rows: tuple[str, str, timedelta]) -> None:
    """Outbox rows (name, status, age): ``name`` is the order key; a sent one was sent at its age."""
    now = s.rt.clock.now()
    async with s.rt.db.transaction() as session:
        for name, status, age in rows:
            at = now - age
            session.add(OutboxMessage(created_at=at, order_key=name, kind="dm", payload={"text": name},
                                      status=status, next_attempt_at=at, sent_at=at if status == "sent" else None))


async def _left(s: Stack) -> list[str]:
    async with s.rt.db.sessions() as session:
        return sorted((await session.execute(select(OutboxMessage.order_key))).scalars())


async def test_only_sent_messages_older_than_the_retention_go(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    day = timedelta(days=1)
    await _add(s, ("old-sent", "sent", 15 * day), ("new-sent", "sent", 13 * day),
               ("old-pending", "pending", 15 * day), ("old-dead", "dead", 15 * day))
    assert await OutboxPrune(s.rt).run_if_due() == 1
    assert await _left(s) == ["new-sent", "old-dead", "old-pending"]


async def test_in_batches_and_a_backlog_over_several_runs(db_factory: DbFactory, clock: ManualClock,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_prune, "BATCH", 3)
    monkeypatch.setattr(outbox_prune, "MAX_BATCHES", 2)
    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    await _add(s, *((f"m{i}", "sent", timedelta(days=20, minutes=i)) for i in range(8)))
    prune = OutboxPrune(s.rt)
    assert await prune.run_if_due() == 6  # two batches of three, then the run stops
    assert await _left(s) == ["m0", "m1"]  # the oldest went first
    assert await prune.run_if_due() is None  # not an hour yet (across replicas: the turn is in the database)
    clock.advance(timedelta(hours=1))
    assert await prune.run_if_due() == 2
    assert await _left(s) == []


async def test_retention_off_keeps_everything(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    s.rt.outbox_retention = None
    await _add(s, ("ancient", "sent", timedelta(days=400)))
    assert await OutboxPrune(s.rt).run_if_due() is None
    assert await _left(s) == ["ancient"]


async def test_the_worker_prunes_in_its_sweeps(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    await _add(s, ("old-sent", "sent", timedelta(days=30)), ("new-sent", "sent", timedelta(hours=1)))
    await s.worker.tick()  # a full pass starts the sweeps; tick waits for them
    assert await _left(s) == ["new-sent"]


def test_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.settings import SettingsError, load_settings

    monkeypatch.delenv("JITBOT_OUTBOX_RETENTION_DAYS", raising=False)
    assert load_settings().outbox_retention() == timedelta(days=14)
    monkeypatch.setenv("JITBOT_OUTBOX_RETENTION_DAYS", "0")
    assert load_settings().outbox_retention() is None
    monkeypatch.setenv("JITBOT_OUTBOX_RETENTION_DAYS", "-1")
    with pytest.raises(SettingsError, match="^JITBOT_OUTBOX_RETENTION_DAYS: "):
        load_settings()
