"""A decided layer's approval messages are all updated under Slack's rate limits: one outbox item per
approver's copy, so a 429 delays one copy and the copies already edited stay edited."""

from __future__ import annotations

from datetime import timedelta

import yaml
from sqlalchemy import select

from bot.domain.requests import Decision
from bot.services.clock import ManualClock
from bot.slack import ids
from storage.tables import OutboxMessage
from tests.conftest import POLICY, DbFactory
from tests.slack.harness import USERS, Env, slack_env

APPROVERS = ["bob", "carol", "dave", "erin", "root"]


def _policy() -> str:
    doc = yaml.safe_load(POLICY)
    doc["connectors"]["demo"]["groups"]["svc"] = []
    doc["eligibilities"].append({
        "name": "svc", "description": "Service console", "connector": "demo", "target": {"group": "svc"},
        "requestors": {"groups": ["engineers"]}, "max_duration": "4h",
        "approvals": [{"approvers": {"users": [f"{a}@example.com" for a in APPROVERS]}}]})
    return yaml.safe_dump(doc, sort_keys=False)


def _undecided(env: Env) -> list[str]:
    """The approvers whose copy still shows Approve / Deny."""
    out = []
    for user in APPROVERS:
        uid = next(u for u, name in USERS.items() if name == user)
        for m in env.slack.dm_messages(uid):
            if any(b.get("type") == "actions" and any(e.get("action_id") == ids.APPROVE for e in b["elements"])
                   for b in m.blocks or []):
                out.append(user)
    return out


async def test_every_copy_is_updated_though_every_third_update_draws_a_429(db_factory: DbFactory,
                                                                           clock: ManualClock) -> None:
    async with slack_env(db_factory(), _policy(), clock) as env:
        req = await env.stack.requests.submit(requester="alice@example.com", eligibility="svc",
                                              duration=timedelta(hours=1), justification="deploy")
        await env.settle()
        assert sorted(_undecided(env)) == sorted(APPROVERS)
        env.slack.rate_limit(0, method="chat.update", every=3, retry_after=1)
        await env.stack.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com",
                                         decision=Decision.APPROVE)
        for _ in range(20):  # rounds of delivery, a second of the injected clock apart (Retry-After: 1)
            await env.stack.worker.dispatch_tick()
            if not _undecided(env):
                break
            clock.advance(timedelta(seconds=1))
        assert _undecided(env) == []
        updates = env.slack.calls("chat.update")
        done = [c for c in updates if c.status == 200]
        assert len(done) == len(APPROVERS)  # each copy edited once: none edited again after a 429
        assert len(updates) <= len(APPROVERS) + len(APPROVERS) // 2 + 1
        async with env.stack.rt.db.sessions() as session:
            left = (await session.execute(select(OutboxMessage).where(OutboxMessage.status != "sent"))).scalars().all()
        assert left == []


async def test_asks_are_withdrawn_once_the_layer_is_decided_and_go_out_apart(db_factory: DbFactory,
                                                                            clock: ManualClock) -> None:
    """A large group is asked in parallel (one order key per approver, not one queue for the layer), and
    a decision withdraws the asks not yet delivered: nobody is asked about a layer already decided."""
    async with slack_env(db_factory(), _policy(), clock) as env:
        req = await env.stack.requests.submit(requester="alice@example.com", eligibility="svc",
                                              duration=timedelta(hours=1), justification="deploy")
        async with env.stack.rt.db.sessions() as session:
            keys = (await session.execute(select(OutboxMessage.order_key).where(
                OutboxMessage.kind == "approval_request"))).scalars().all()
        assert len(set(keys)) == len(APPROVERS)
        # decided (from App Home, say) before any ask was delivered
        await env.stack.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com",
                                         decision=Decision.APPROVE)
        await env.settle()
        asks = [c for c in env.slack.calls("chat.postMessage") if "needs your decision" in str(c.args.get("text"))]
        assert asks == []
        async with env.stack.rt.db.sessions() as session:
            withdrawn = (await session.execute(select(OutboxMessage).where(
                OutboxMessage.kind == "approval_request"))).scalars().all()
        assert {(m.status, m.last_error) for m in withdrawn} == {("sent", "withdrawn: the layer was decided")}
