"""Moving off standing access: notices before the date (once each), removal on it, and a revert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.cli import main
from bot.domain.requests import Decision
from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from bot.services.transition import TransitionService
from storage.db import Database
from storage.tables import Event, TransitionRemoval
from tests.conftest import POLICY, DbFactory
from tests.services.stack import Stack, make_stack

TRANSITION = (POLICY.replace("prod-admins: [erin@example.com]", "prod-admins: [erin@example.com, carol@example.com]")
              .replace("    require_ticket: true\n", "    require_ticket: true\n    transition:\n"
                       "      static_access_until: 2026-02-01\n      notify_days: [14, 1]\n"
                       "      keep_standing: {users: [carol@example.com]}\n"))


async def _events(s: Stack, kind: str) -> list[Event]:
    async with s.rt.db.sessions() as session:
        return list((await session.execute(select(Event).where(Event.kind == kind))).scalars())


async def test_standing_members_are_told_then_removed_and_the_removal_can_be_reverted(db_factory: DbFactory) -> None:
    clock = ManualClock(datetime(2026, 1, 10, tzinfo=UTC))
    s = await make_stack(db_factory(), parse_policy(TRANSITION, env={}), clock)
    other = await make_stack(db_factory(), parse_policy(TRANSITION, env={}), clock)  # a second replica
    await s.worker.run_until_idle()
    assert s.notifier.of_kind("transition_notice") == []  # 22 days before: too early
    clock.set(datetime(2026, 1, 18, tzinfo=UTC))  # 14 days before
    await s.worker.run_until_idle()
    await other.worker.run_until_idle()
    notices = s.notifier.of_kind("transition_notice") + other.notifier.of_kind("transition_notice")
    assert [n["email"] for n in notices] == ["erin@example.com"]  # carol is keep_standing
    assert "/jit" in notices[0]["text"] and "2026-02-01" in notices[0]["text"]
    clock.set(datetime(2026, 1, 31, tzinfo=UTC))  # 1 day before: the second notice
    await s.worker.run_until_idle()
    await s.worker.run_until_idle()
    assert len(s.notifier.of_kind("transition_notice")) == 2
    # alice holds the target through a grant at the cut-over: she is not standing and is not removed.
    clock.set(datetime(2026, 1, 31, 23, 30, tzinfo=UTC))
    r = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin", duration=timedelta(hours=2),
                                justification="on call", ticket="OPS-9")
    await s.approvals.decide(request_id=r.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.approvals.decide(request_id=r.id, layer=2, approver="dave@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "prod-admins")
    clock.set(datetime(2026, 2, 1, 0, 0, tzinfo=UTC))
    await other.worker.run_until_idle()
    await s.worker.run_until_idle()
    assert not await s.is_member("erin@example.com", "prod-admins")
    assert await s.is_member("carol@example.com", "prod-admins") and await s.is_member("alice@example.com",
                                                                                         "prod-admins")
    async with s.rt.db.sessions() as session:
        removals = list((await session.execute(select(TransitionRemoval))).scalars())
    assert [(x.user_email, x.target_id, x.removed_at) for x in removals] == [
        ("erin@example.com", "prod-admins", datetime(2026, 2, 1, tzinfo=UTC))]
    assert len(await _events(s, "transition_removed")) == 1 and len(await _events(s, "transition_completed")) == 1
    assert len(await _events(s, "transition_notified")) == 2
    audit = [p["text"] for p in s.notifier.of_kind("audit") + other.notifier.of_kind("audit")]
    assert any("1 member(s) removed: erin@example.com" in t for t in audit)

    service = TransitionService(s.rt)
    assert [x.user_email for x in await service.revert("prod-admin", actor="ops", apply=False)] == [
        "erin@example.com"]
    assert not await s.is_member("erin@example.com", "prod-admins")
    await service.revert("prod-admin", actor="ops", apply=True)
    assert await s.is_member("erin@example.com", "prod-admins")
    assert await service.revert("prod-admin", actor="ops", apply=True) == []
    (reverted,) = await _events(s, "transition_reverted")
    assert reverted.actor == "ops" and reverted.detail["user"] == "erin@example.com"


def test_transition_cli_lists_standing_members_and_reverts(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    policy, db_path = tmp_path / "policy.yml", tmp_path / "jitbot.db"
    policy.write_text(TRANSITION)
    url = f"sqlite+aiosqlite:///{db_path}"

    async def cut_over() -> None:
        db = Database(url)
        s = await make_stack(db, parse_policy(TRANSITION, env={}), ManualClock(datetime(2026, 2, 2, tzinfo=UTC)))
        await s.worker.run_until_idle()
        await db.dispose()

    common = ["--policy", str(policy), "--database", url]
    assert main(["transition", "status", *common]) == 0
    out = capsys.readouterr().out
    assert "erin@example.com" in out and "carol@example.com" in out and "keep_standing" in out
    asyncio.run(cut_over())
    assert main(["transition", "revert", "prod-admin", *common]) == 0  # shows only
    out = capsys.readouterr().out
    assert "would restore erin@example.com to group:prod-admins" in out and "--apply" in out
    assert main(["transition", "revert", "prod-admin", "--dry-run", *common]) == 0  # the default, as an alias
    assert "would restore erin@example.com" in capsys.readouterr().out
    assert main(["transition", "revert", "prod-admin", "--apply", "--actor", "ops", *common]) == 0
    assert "restored erin@example.com to group:prod-admins" in capsys.readouterr().out
    assert main(["transition", "revert", "prod-admin", *common]) == 1  # nothing left to restore


async def test_a_member_through_a_nested_group_is_neither_told_nor_removed_but_named(db_factory: DbFactory) -> None:
    # Removing a nested group's member from this group (Google: a direct membership's delete) ends nothing.
    from connectors.base import IdpUser, Target

    clock = ManualClock(datetime(2026, 1, 18, tzinfo=UTC))
    s = await make_stack(db_factory(), parse_policy(TRANSITION, env={}), clock)
    demo = s.rt.connectors["demo"]
    listed, revoked = demo.list_members, []

    async def with_nested(group: str) -> list[IdpUser]:
        frank = IdpUser(id="frank@example.com", email="frank@example.com", direct=False)
        return await listed(group) + ([frank] if group == "prod-admins" else [])

    async def spy_revoke(user: IdpUser, target: Target, *, grant_id: str) -> None:
        revoked.append(user.email)

    demo.list_members, demo.revoke = with_nested, spy_revoke  # type: ignore[method-assign]
    await s.worker.run_until_idle()
    assert [n["email"] for n in s.notifier.of_kind("transition_notice")] == ["erin@example.com"]
    clock.set(datetime(2026, 2, 1, tzinfo=UTC))
    await s.worker.run_until_idle()
    assert revoked == ["erin@example.com"]
    audit = [p["text"] for p in s.notifier.of_kind("audit")]
    assert any("1 member(s) removed: erin@example.com; 1 hold it through a nested group" in t
               and "frank@example.com" in t for t in audit)


async def test_a_grant_holder_listed_under_another_address_is_not_standing_at_the_cut_over(
        db_factory: DbFactory) -> None:
    # The IdP lists members by primary email; the grant was made for the Slack address (an alias). The
    # IdP's user id says it is the grant holder, who must not be removed as standing access.
    from connectors.base import IdpUser, Target

    clock = ManualClock(datetime(2026, 1, 31, 23, 30, tzinfo=UTC))
    s = await make_stack(db_factory(), parse_policy(TRANSITION, env={}), clock)
    r = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin", duration=timedelta(hours=2),
                                justification="on call", ticket="OPS-9")
    await s.approvals.decide(request_id=r.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.approvals.decide(request_id=r.id, layer=2, approver="dave@example.com", decision=Decision.APPROVE)
    await s.worker.run_until_idle()
    demo = s.rt.connectors["demo"]
    listed, revoked = demo.list_members, []

    async def by_primary_email(group: str) -> list[IdpUser]:
        members = await listed(group)
        if group != "prod-admins":
            return members
        return [IdpUser(id=u.id, email=u.email.replace("alice@", "a.smith@")) for u in members]

    async def spy_revoke(user: IdpUser, target: Target, *, grant_id: str) -> None:
        revoked.append(user.email)

    demo.list_members, demo.revoke = by_primary_email, spy_revoke  # type: ignore[method-assign]
    elig = next(e for e in s.rt.policy.eligibilities if e.name == "prod-admin")
    standing = await TransitionService(s.rt).standing_members(elig)
    assert sorted(m.user.email for m in standing) == ["carol@example.com", "erin@example.com"]  # not alice
    clock.set(datetime(2026, 2, 1, 0, 0, tzinfo=UTC))
    await s.worker.run_until_idle()
    assert revoked == ["erin@example.com"]
