"""Slack, the IdP or the database being down delays messages, never revocation, and loses nothing."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bench.common import RecordingIdp
from bench.mass_expiry import POLICY as BULK_POLICY
from bench.mass_expiry import seed as seed_expiring
from bot.policy_file import parse_policy
from bot.services.access.revocation import Revoker
from bot.services.clock import ManualClock
from connectors.base import Transient
from storage.tables import Event, Grant, OutboxMessage
from tests.conftest import DbFactory
from tests.services.stack import make_stack
from tests.slack.harness import slack_env
from tests.slack.test_scenarios import _click, _request


async def test_slack_outage_delays_messages_but_not_revocation(db_factory: DbFactory, policy_text: str,
                                                               clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        await _request(env)
        await _click(env, "U2BOB", "jit_approve")
        await _click(env, "U4DAVE", "jit_approve")
        assert await env.stack.is_member("alice@example.com", "prod-admins")
        before = len(env.slack.dm_messages("U1ALICE"))
        await env.slack.outage("503")
        for _ in range(10):  # ten minutes of Slack being down, the worker ticking on
            env.clock.advance(timedelta(minutes=7))
            await env.settle()
        assert not await env.stack.is_member("alice@example.com", "prod-admins")  # revoked on time anyway
        async with env.stack.rt.db.sessions() as s:
            pending = (await s.execute(select(OutboxMessage).where(OutboxMessage.status == "pending"))).scalars().all()
        assert pending  # the messages wait
        await env.slack.end_outage()
        env.clock.advance(timedelta(minutes=2))
        await env.settle()
        texts = [m.text for m in env.slack.dm_messages("U1ALICE")[before:]]
        assert [t for t in texts if "ends in" in t or "expired" in t] == [
            t for t in texts if "ends in" in t] + [t for t in texts if "expired" in t]  # warning before expiry
        assert any("has expired" in t for t in texts)
        async with env.stack.rt.db.sessions() as s:
            left = (await s.execute(select(OutboxMessage).where(OutboxMessage.status != "sent"))).scalars().all()
        assert left == []


class FlakyRevoke:
    def __init__(self, inner, failures: int) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.failures, self.name, self.calls = inner, failures, inner.name, 0

    async def revoke(self, user, target, *, grant_id):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise Transient("IdP answered 503")
        await self.inner.revoke(user, target, grant_id=grant_id)

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


async def test_idp_outage_during_revoke_alerts_and_completes_once_it_recovers(
        db_factory: DbFactory, policy_text: str, clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        await env.sender.command("U1ALICE", "")
        modal = env.slack.modal_stack("U1ALICE")[-1]
        res = await env.sender.click_in_view("U1ALICE", modal.id, "eligibility_select", choice="readonly")
        assert res.status == 200
        modal = env.slack.modal_stack("U1ALICE")[-1]
        assert "ticket" not in str(modal.blocks)  # the modal re-rendered for an eligibility without tickets
        await env.sender.submit_view("U1ALICE", modal.id, {"justification_input": "read logs"})
        await env.settle()
        assert await env.stack.is_member("alice@example.com", "readonly")  # auto-approved
        flaky = FlakyRevoke(env.stack.rt.connectors["demo"], failures=6)
        env.stack.rt.connectors["demo"] = flaky
        env.clock.advance(timedelta(hours=5))
        for _ in range(12):
            await env.settle()
            env.clock.advance(timedelta(minutes=2))
        assert not await env.stack.is_member("alice@example.com", "readonly")
        assert flaky.calls == 7
        async with env.stack.rt.db.sessions() as s:
            kinds = [e.kind for e in (await s.execute(select(Event).order_by(Event.id))).scalars()]
        assert kinds.count("revoke_overdue") == 1 and kinds.count("expired") == 1
        assert any("Revocation of readonly" in m.text for m in env.slack.messages("C0AUDIT"))


async def test_a_failed_record_transaction_loses_no_revocation_and_audits_each_once(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 120
    idp = RecordingIdp()
    s = await make_stack(db_factory(), parse_policy(BULK_POLICY, env={}), clock)
    s.rt.connectors["idp"] = idp
    await seed_expiring(s.rt.db, n, clock.now() - timedelta(seconds=2), 1.0)
    idp.members["g"] = {f"user{i}@example.com" for i in range(n)}
    record, failures = Revoker._record, [OSError("database connection lost")]

    async def record_once_failing(self: Revoker, session: AsyncSession, calls: list) -> None:  # type: ignore[type-arg]
        if failures:
            raise failures.pop()
        await record(self, session, calls)

    monkeypatch.setattr(Revoker, "_record", record_once_failing)
    with pytest.raises(OSError):
        await s.worker.tick()  # the error surfaces, after what the IdP already did is recorded
    await s.worker.run_until_idle()  # the clock stands still: nothing may wait for a lease to lapse
    assert len(idp.revoked_at) == n and idp.revoked_twice == 0 and idp.members["g"] == set()
    async with s.rt.db.sessions() as session:
        statuses = Counter((await session.execute(select(Grant.status))).scalars())
        expired = Counter((await session.execute(select(Event.request_id).where(Event.kind == "expired"))).scalars())
    assert statuses == {"ended": n}
    assert len(expired) == n and set(expired.values()) == {1}
