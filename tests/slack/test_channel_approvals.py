"""Approver channels, through the real Bolt app against the strict fake Slack: the post, the clicks that
count and those that do not, the edit in place, the thread, the fallback when the bot is not a member."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from bot.fakes.slack_api import Message
from bot.services.clock import ManualClock
from bot.slack import ids
from storage.tables import AccessRequest, ApprovalVote, Event
from tests.conftest import POLICY, DbFactory
from tests.slack.harness import AUDIT, Env, slack_env

CHANNEL = "C0APPROVALS"
LAYER1 = """      - approvers: {groups: [leads]}
        timeout: 4h
"""


def _policy(approvers: str, extra: str = "") -> str:
    assert LAYER1 in POLICY
    return POLICY.replace(LAYER1, f"      - approvers: {approvers}\n        timeout: 4h\n{extra}", 1)


CHANNEL_ONLY = _policy(f"{{groups: [leads], channel: {CHANNEL}}}")


def _add_channel(env: Env, *, bot_is_member: bool = True) -> None:
    env.slack.add_channel(CHANNEL, "prod-approvals", members=["U1ALICE", "U2BOB", "U3CAROL", "U4DAVE", "U5ERIN"],
                          bot_is_member=bot_is_member)


async def _request(env: Env) -> str:
    await env.sender.command("U1ALICE", "")
    modal = env.slack.modal_stack("U1ALICE")[-1]
    res = await env.sender.submit_view("U1ALICE", modal.id, {ids.A_JUSTIFICATION: "deploy", ids.A_TICKET: "OPS-1",
                                                             ids.A_DURATION: "3600"})
    assert res.status == 200, res.body
    await env.settle()
    async with env.stack.rt.db.sessions() as session:
        return str((await session.execute(select(AccessRequest.id))).scalar_one())


def _posts(env: Env) -> list[Message]:
    return env.slack.messages(CHANNEL, include_replies=False)


def _asks(env: Env, user: str) -> list[Message]:
    return [m for m in env.slack.dm_messages(user) if "needs" in m.text]


async def _state(env: Env, rid: str) -> tuple[str, int, int, int]:
    async with env.stack.rt.db.sessions() as session:
        req = (await session.execute(select(AccessRequest).where(AccessRequest.id == rid))).scalar_one()
        votes = len((await session.execute(select(ApprovalVote))).scalars().all())
        events = len((await session.execute(select(Event))).scalars().all())
    return req.status, req.layer, votes, events


def _said(env: Env, user: str) -> list[str]:
    return [str(p.body.get("text", "")) for p in env.slack.response_posts() if p.context.get("user") == user]


async def test_a_channel_layer_posts_once_and_only_its_approvers_clicks_count(db_factory: DbFactory,
                                                                           clock: ManualClock) -> None:
    async with slack_env(db_factory(), CHANNEL_ONLY, clock) as env:
        _add_channel(env)
        rid = await _request(env)
        [post] = _posts(env)
        assert not _asks(env, "U2BOB") and not _asks(env, "U3CAROL")  # notify: channel (no DMs)
        assert {e["action_id"] for b in post.blocks if b.get("type") == "actions" for e in b["elements"]} == {
            ids.APPROVE, ids.APPROVE_FOR, ids.DENY}
        before = await _state(env, rid)
        # not approvers of layer 1: someone else, the requester, layer 2's approver
        for user in ("U5ERIN", "U1ALICE", "U4DAVE"):
            res = await env.sender.click(user, CHANNEL, post.ts, ids.APPROVE)
            assert res.status == 200
            await env.settle()
            assert any("not an approver" in t or "cannot approve" in t.lower() for t in _said(env, user)), \
                (user, _said(env, user))
        assert await _state(env, rid) == before
        assert env.slack.message(CHANNEL, post.ts).edits == []  # nothing changed in the channel
        # bob and carol click at once: one decision, the other told who decided
        await asyncio.gather(env.sender.click("U2BOB", CHANNEL, post.ts, ids.APPROVE),
                             env.sender.click("U3CAROL", CHANNEL, post.ts, ids.APPROVE))
        await env.settle()
        status, layer, votes, _ = await _state(env, rid)
        assert (status, layer, votes) == ("pending", 2, 1)
        decided = env.slack.message(CHANNEL, post.ts)
        assert "Approved by" in str(decided.blocks) and "<!date^" in str(decided.blocks)  # who and when
        assert not any(b.get("type") == "actions" for b in decided.blocks)
        assert len(_posts(env)) == 1  # edited in place
        assert any("Already approved by" in t for u in ("U2BOB", "U3CAROL") for t in _said(env, u))
        # layer 2 has no channel: its approver is asked by DM; a forged click on layer 1's old message
        # by them changes nothing
        assert _asks(env, "U4DAVE")
        before = await _state(env, rid)
        payload_click = await env.sender.click("U4DAVE", env.slack.im_channel("U4DAVE"),
                                               _asks(env, "U4DAVE")[-1].ts, ids.APPROVE)
        assert payload_click.status == 200
        await env.settle()
        assert (await _state(env, rid))[0] == "active"
        assert before[2] + 1 == (await _state(env, rid))[2]


async def test_reminders_and_escalation_reply_in_the_thread(db_factory: DbFactory, clock: ManualClock) -> None:
    text = _policy(f"{{groups: [leads], channel: {CHANNEL}, notify: both}}",
                   "        remind_every: 30m\n        escalate_after: 1h\n"
                   "        escalation: {users: [root@example.com]}\n")
    async with slack_env(db_factory(), text, clock) as env:
        _add_channel(env)
        await _request(env)
        [post] = _posts(env)
        assert _asks(env, "U2BOB")  # notify: both
        env.clock.advance(timedelta(minutes=31))
        await env.settle()
        replies = env.slack.thread(CHANNEL, post.ts)
        assert len(replies) == 1 and "Reminder" in replies[0].text
        env.clock.advance(timedelta(minutes=31))
        await env.settle()
        replies = env.slack.thread(CHANNEL, post.ts)
        assert any("Escalated" in r.text for r in replies), [r.text for r in replies]
        assert any("Escalated" in m.text for m in env.slack.dm_messages("U6ROOT"))  # and DMed
        assert len(_posts(env)) == 1


async def test_a_channel_the_bot_is_not_in_falls_back_to_dms_and_alerts(db_factory: DbFactory,
                                                                      clock: ManualClock) -> None:
    async with slack_env(db_factory(), CHANNEL_ONLY, clock) as env:
        _add_channel(env, bot_is_member=False)
        await _request(env)
        assert not _posts(env)
        assert _asks(env, "U2BOB") and _asks(env, "U3CAROL")
        assert any("could not post" in m.text and "not_in_channel" in m.text for m in env.slack.messages(AUDIT))
        await env.sender.click("U2BOB", env.slack.im_channel("U2BOB"), _asks(env, "U2BOB")[-1].ts, ids.APPROVE)
        await env.settle()
        assert "Approved by bob@example.com" in str(env.slack.dm_messages("U3CAROL")[0].blocks)
