"""Hostile but signed requests to the real ``jitbot serve`` process (HTTP mode, SQLite, its worker, the
fake Slack): a justification forging the bot's fields, a user of another workspace carrying an
approver's email, a forged break-glass review value and an absurd duration. Each is answered and
changes nothing it should not; the process logs no error."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from bot.fakes import FakeSlack, SlackSender
from bot.slack import ids
from tests.reliability.procs import AUDIT, SERVE_POLICY, approve_message, serve_slack, start_serve

TOKEN, SECRET = "xoxb-hostile-serve", "hostile-serve-secret"
FORGED = "incident 7\n\n*Approved by*\ncarol@example.com (layer 1)\n:white_check_mark: *Pre-approved by CISO*"


def _votes(tmp_path: Path) -> int:
    with closing(sqlite3.connect(tmp_path / "jit.db")) as db:
        return int(db.execute("SELECT count(*) FROM approval_vote").fetchone()[0])


def _mrkdwn(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [str(node["text"])] if node.get("type") == "mrkdwn" else []
        return own + [t for v in node.values() for t in _mrkdwn(v)]
    if isinstance(node, list):
        return [t for v in node for t in _mrkdwn(v)]
    return []


def _click(sender: SlackSender, slack: FakeSlack, user: str, channel: str, ts: str, action_id: str,
           value: str) -> dict[str, Any]:
    ctx = {"channel": channel, "user": user, "kind": "block_actions", "message_ts": ts}
    return {**sender._base("block_actions", user),
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
            "trigger_id": slack.issue_trigger(user), "channel": {"id": channel, "name": "directmessage"},
            "state": {"values": {}}, "response_url": slack.issue_response_url(**ctx),
            "actions": [{"action_id": action_id, "block_id": "b", "type": "button", "value": value,
                         "action_ts": str(time.time())}]}


async def test_serve_quotes_forged_fields_and_refuses_foreign_users_and_absurd_values(tmp_path: Path) -> None:
    slack = serve_slack(TOKEN)
    slack.add_user("U7MALLORY", "mallory", email="bob@example.com", team_id="T0ELSEWHERE")
    async with start_serve(slack, tmp_path, policy=SERVE_POLICY, secret=SECRET,
                           database_url=f"sqlite+aiosqlite:///{tmp_path / 'jit.db'}") as serve:
        sender = serve.sender
        assert (await sender.command("U1ALICE", "")).status == 200

        async def modal_open() -> bool:
            return bool(slack.modal_stack("U1ALICE"))

        await serve.until(modal_open, timeout=10, what="the request modal")
        modal = slack.modal_stack("U1ALICE")[-1]
        res = await sender.submit_view("U1ALICE", modal.id, {ids.A_ELIGIBILITY: "app-admin",
                                                             ids.A_JUSTIFICATION: FORGED, ids.A_DURATION: "3600"})
        assert res.status == 200

        async def asked() -> bool:
            return approve_message(slack, "U2BOB") is not None and any(
                m.blocks for m in slack.messages(AUDIT))

        await serve.until(asked, timeout=20, what="bob's approval DM and the audit root")
        ask = approve_message(slack, "U2BOB")
        for texts in (_mrkdwn(ask.blocks), _mrkdwn([b for m in slack.messages(AUDIT) for b in m.blocks or []])):
            lines = [line for t in texts for line in t.splitlines() if "Approved by" in line or "CISO" in line
                     or "(layer 1)" in line]
            assert lines and all(line.startswith(">") for line in lines), lines
        assert all(c.args.get("unfurl_links") is False and c.args.get("unfurl_media") is False
                   for c in slack.calls("chat.postMessage"))

        # Mallory, of another workspace, carries bob's email: her click on bob's message counts for nothing
        bob_dm = slack.im_channel("U2BOB")
        assert bob_dm is not None
        for team in (None, "T0ELSEWHERE"):
            payload = _click(sender, slack, "U7MALLORY", bob_dm, ask.ts, ids.APPROVE, ask.blocks[-1]["elements"][0]
                             ["value"])
            if team:
                payload["team"] = {"id": team, "domain": "elsewhere"}
            assert (await sender.post_payload(payload)).status == 200
        # a forged review value, and a duration no timedelta holds
        forged = _click(sender, slack, "U1ALICE", slack.im_channel("U1ALICE") or "", "1.000001", ids.REVIEW_ACK,
                        "<!channel>")
        assert (await sender.post_payload(forged)).status == 200
        assert (await sender.command("U1ALICE", "breakglass app-admin 99999999999999w db down")).status == 200

        def answers() -> list[str]:
            return [str(p.body.get("text", "")) for p in slack.response_posts()
                    if p.context.get("user") == "U1ALICE"]

        async def answered() -> bool:
            return len(answers()) >= 2

        await serve.until(answered, timeout=10, what="alice's two answers")
        assert "That button does not match any request." in answers()
        assert any("is too long; durations are at most 3650 days" in a for a in answers()), answers()
        assert _votes(tmp_path) == 0
        # bob himself still can
        assert (await sender.click("U2BOB", bob_dm, ask.ts, ids.APPROVE)).status == 200

        async def voted() -> bool:
            return _votes(tmp_path) == 1

        await serve.until(voted, timeout=10, what="bob's vote")
    log = serve.proc.output()
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]
    assert "refused a Slack request from team T0ELSEWHERE" in log
