"""``jitbot serve`` end to end with approver channels and approving for less, against the strict fake Slack:

- prod's layer is posted in #prod-approvals (by name; no DMs): the requester's click there is refused
  privately and changes nothing; bob (Approve for less: 1h of the 4h asked) and carol (Approve) click at
  once: one decision, the post edited in place, the other told who decided; the grant lasts what won;
- staging names a channel the bot is not in: its approvers are asked by DM instead, and an alert says so.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from bot.slack import ids
from tests.reliability.procs import (
    AUDIT,
    SERVE_USERS,
    approve_message,
    scalar,
    serve_policy,
    serve_slack,
    start_serve,
)

pytestmark = pytest.mark.postgres

TOKEN = "xoxb-channels-test-token"
SECRET = "channels-signing-secret"
CHANNEL, NO_BOT = "C0PRODAPPR", "C0NOBOTHERE"

POLICY = serve_policy(groups=["prod", "staging"], eligibilities=f"""
- name: prod
  connector: demo
  target: {{group: prod}}
  requestors: {{groups: [engineers]}}
  max_duration: 4h
  approvals:
    - approvers: {{groups: [leads], channel: "#prod-approvals", notify: channel}}
- name: staging
  connector: demo
  target: {{group: staging}}
  requestors: {{groups: [engineers]}}
  max_duration: 4h
  approvals:
    - approvers: {{groups: [leads], channel: {NO_BOT}}}
""")


async def test_serve_with_an_approver_channel_and_an_approval_for_less(database: tuple[str, str],
                                                                       tmp_path: Path) -> None:
    db_name, url = database
    slack = serve_slack(TOKEN)
    slack.add_channel(CHANNEL, "prod-approvals", members=list(SERVE_USERS))
    slack.add_channel(NO_BOT, "staging-approvals", members=list(SERVE_USERS), bot_is_member=False)
    async with start_serve(slack, tmp_path, policy=POLICY, secret=SECRET, database_url=url) as serve:
        sender = serve.sender

        async def request(eligibility: str) -> None:
            before = {v.id for v in slack.modal_stack("U1ALICE")}
            assert (await sender.command("U1ALICE", "")).status == 200

            async def modal_open() -> bool:
                return bool(slack.modal_stack("U1ALICE")) and slack.modal_stack("U1ALICE")[-1].id not in before

            await serve.until(modal_open, timeout=10, what="the request modal")
            res = await sender.submit_view("U1ALICE", slack.modal_stack("U1ALICE")[-1].id, {
                ids.A_ELIGIBILITY: eligibility, ids.A_JUSTIFICATION: "deploy", ids.A_DURATION: "14400"})
            assert res.status == 200 and not (res.body if isinstance(res.body, dict) else {}).get("errors")

        # ---- prod: posted in the channel, nobody DMed
        await request("prod")

        async def posted() -> bool:
            return bool(slack.messages(CHANNEL))

        await serve.until(posted, timeout=30, what="the channel post")
        [post] = slack.messages(CHANNEL)
        assert approve_message(slack, "U2BOB") is None and approve_message(slack, "U3CAROL") is None
        rid = str(await scalar(db_name, "SELECT id FROM access_request WHERE eligibility = 'prod'"))

        def said(user: str) -> list[str]:
            return [str(p.body.get("text", "")) for p in slack.response_posts() if p.context.get("user") == user]

        assert (await sender.click("U1ALICE", CHANNEL, post.ts, ids.APPROVE)).status == 200

        async def refused() -> bool:
            return any("your own request" in t for t in said("U1ALICE"))

        await serve.until(refused, timeout=10, what="the requester's refusal")
        assert await scalar(db_name, "SELECT count(*) FROM approval_vote") == 0
        assert slack.message(CHANNEL, post.ts).edits == []

        # bob approves for 1h and carol approves, at once
        await asyncio.gather(
            sender.click("U2BOB", CHANNEL, post.ts, ids.APPROVE_FOR, choice=f"{rid}:1:3600"),
            sender.click("U3CAROL", CHANNEL, post.ts, ids.APPROVE))

        async def granted() -> bool:
            return bool(await scalar(db_name, "SELECT count(*) FROM \"grant\" WHERE status = 'active'"))

        await serve.until(granted, timeout=30, what="the grant")

        async def edited() -> bool:
            return "Approved by" in str(slack.message(CHANNEL, post.ts).blocks)

        await serve.until(edited, timeout=30, what="the edit in place")
        assert await scalar(db_name, "SELECT count(*) FROM approval_vote") == 1
        winner = str(await scalar(db_name, "SELECT approver FROM approval_vote"))
        loser = "U3CAROL" if winner == "bob@example.com" else "U2BOB"

        async def loser_told() -> bool:
            return any("Already approved by" in t for t in said(loser))

        await serve.until(loser_told, timeout=10, what="the other approver's answer")
        lasts = await scalar(db_name, "SELECT g.expires_at - r.decided_at FROM \"grant\" g "
                                      "JOIN access_request r ON r.id = g.request_id")
        assert lasts == (timedelta(hours=1) if winner == "bob@example.com" else timedelta(hours=4))  # from approval
        assert len(slack.messages(CHANNEL, include_replies=False)) == 1
        assert not any(b.get("type") == "actions" for b in slack.message(CHANNEL, post.ts).blocks)

        # ---- staging: the bot is not in its channel: DMs, and an alert
        await request("staging")

        async def dmed() -> bool:
            return approve_message(slack, "U2BOB") is not None and approve_message(slack, "U3CAROL") is not None

        await serve.until(dmed, timeout=30, what="the fallback DMs")

        async def alerted() -> bool:
            return any("could not post" in m.text and "not_in_channel" in m.text for m in slack.messages(AUDIT))

        await serve.until(alerted, timeout=30, what="the alert")
        assert not slack.messages(NO_BOT)
