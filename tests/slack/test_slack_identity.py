"""Who may act through Slack: only people of the workspace jitbot is installed in, and no guests, unless
the policy admits them; and the smaller edges of /jit breakglass (a forged review value, a huge duration).

Every request is signed and goes through the real Bolt app (the harness); a refusal changes nothing."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.services.clock import ManualClock
from bot.slack import ids
from bot.slack.identity import EXTERNAL
from storage.tables import AccessRequest, ApprovalVote, Event
from tests.conftest import DbFactory
from tests.services.policies import extended_policy_text
from tests.slack.harness import SECURITY, Env, slack_env

OTHER_TEAM = "T0ELSEWHERE"
SQLITE_ONLY = pytest.mark.parametrize("db_factory", ["sqlite"], indirect=True)  # the database is not the point


def _policy(**settings: bool) -> str:
    text = extended_policy_text(security_channel=SECURITY)
    lines = "".join(f"\n  {k}: {str(v).lower()}" for k, v in settings.items())
    return text + ("\nsettings:" + lines + "\n" if settings else "")


async def _counts(env: Env) -> tuple[int, int, int]:
    async with env.stack.rt.db.sessions() as s:
        return tuple([int((await s.execute(select(func.count()).select_from(m))).scalar() or 0)  # type: ignore[misc]
                      for m in (AccessRequest, ApprovalVote, Event)])


def _click(env: Env, user: str, action_id: str, value: str, *, team: str | None = None) -> dict[str, Any]:
    """A click on a button in ``user``'s DM; ``team``: the workspace Slack says the request comes from."""
    im = env.slack.state.im_for(user).id
    ctx = {"channel": im, "user": user, "kind": "block_actions", "message_ts": "1.000001"}
    payload = {**env.sender._base("block_actions", user),
               "container": {"type": "message", "message_ts": "1.000001", "channel_id": im, "is_ephemeral": False},
               "trigger_id": env.slack.issue_trigger(user), "channel": {"id": im, "name": "directmessage"},
               "state": {"values": {}}, "response_url": env.slack.issue_response_url(**ctx),
               "actions": [{"action_id": action_id, "block_id": "b", "type": "button", "value": value,
                            "action_ts": str(time.time())}]}
    if team is not None:
        payload["team"] = {"id": team, "domain": "elsewhere"}
    return payload


def _answers(env: Env, user: str) -> list[str]:
    return [str(p.body.get("text", "")) for p in env.slack.response_posts() if p.context.get("user") == user]


async def _pending(env: Env) -> str:
    req = await env.stack.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                          duration=timedelta(hours=1),
                                          justification="deploy", ticket="OPS-1")
    await env.settle()
    return req.id


@SQLITE_ONLY
async def test_a_user_of_another_workspace_with_an_approvers_email_cannot_approve(db_factory: DbFactory,
                                                                                 clock: ManualClock) -> None:
    async with slack_env(db_factory(), _policy(), clock) as env:
        # Mallory's profile in her own workspace carries Bob's address; Bob approves layer 1 of prod-admin
        env.slack.add_user("U7MALLORY", "mallory", email="bob@example.com", team_id=OTHER_TEAM)
        env.slack.add_user("U8STRANGER", "stranger", email="bob@example.com", is_stranger=True)
        env.slack.add_user("U9GRID", "grid", email="bob@example.com", team_id="T0SISTER",
                           enterprise_user={"enterprise_id": "E0ORG", "teams": ["T0SISTER"]})
        rid = await _pending(env)
        before = await _counts(env)
        # a request another installation of the app sends (its team), and one from our workspace's
        # shared channel whose user belongs elsewhere (the user's team), and strangers by users.info
        for user, team in (("U7MALLORY", OTHER_TEAM), ("U7MALLORY", None), ("U8STRANGER", None), ("U9GRID", None)):
            res = await env.sender.post_payload(_click(env, user, ids.APPROVE, f"{rid}:1", team=team))
            assert res.status == 200
        await env.settle()
        assert await _counts(env) == before
        assert _answers(env, "U8STRANGER") == [EXTERNAL]
        # the real Bob still can
        await env.sender.post_payload(_click(env, "U2BOB", ids.APPROVE, f"{rid}:1"))
        assert (await _counts(env))[1] == before[1] + 1


@SQLITE_ONLY
@pytest.mark.parametrize("admitted", [False, True])
@pytest.mark.parametrize("guest", ["multi", "single"])
async def test_guests_cannot_act_unless_the_policy_admits_them(db_factory: DbFactory, clock: ManualClock,
                                                               guest: str, admitted: bool) -> None:
    async with slack_env(db_factory(), _policy(allow_slack_guests=admitted), clock) as env:
        env.slack.add_user("U7GUEST", "guest", email="bob@example.com", guest=guest)
        rid = await _pending(env)
        before = await _counts(env)
        await env.sender.post_payload(_click(env, "U7GUEST", ids.APPROVE, f"{rid}:1"))
        await env.sender.command("U7GUEST", "list")
        if admitted:
            assert (await _counts(env))[1] == before[1] + 1
        else:
            assert await _counts(env) == before
            assert _answers(env, "U7GUEST")[0].startswith("jitbot does not act for guest accounts")
            assert env.slack.ephemerals("U7GUEST")[-1].text.startswith("jitbot does not act for guest accounts")


@SQLITE_ONLY
async def test_a_forged_review_value_is_not_echoed_and_a_huge_duration_gets_an_answer(
        db_factory: DbFactory, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    async with slack_env(db_factory(), _policy(), clock) as env:
        before = await _counts(env)
        for value in ("<!channel>", "R-1 <https://evil.example|click>", "x" * 5000):
            await env.sender.post_payload(_click(env, "U2BOB", ids.REVIEW_ACK, value))
        assert _answers(env, "U2BOB") == ["That button does not match any request."] * 3
        with caplog.at_level(logging.ERROR):
            res = await env.sender.command("U1ALICE", "breakglass db-admin 99999999999999w the database is down")
        assert res.status == 200
        assert "is too long; durations are at most 3650 days" in env.slack.ephemerals("U1ALICE")[-1].text
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert await _counts(env) == before
