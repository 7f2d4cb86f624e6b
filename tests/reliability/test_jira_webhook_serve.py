"""``jitbot serve`` with the Jira webhook (bot/webhooks/jira.py), the fake Jira and a ticketed grant:

- an unsigned webhook, and one signed with another secret → 401, nothing asked of Jira, nothing ended;
- a signed webhook whose body claims the ticket is "Done" while the REST API says "In Progress" → Jira is
  asked once, nothing ended (the body's status is never trusted);
- signed webhooks about an unknown key and another project's issue → nothing asked, nothing ended;
- the ticket closed in Jira and a signed webhook → the grant is revoked through the audited path (one
  ``ticket_ended`` event, ``noticed_by: webhook``), with the poll an hour away; a replay changes nothing.
The secret comes from ``JIRA_WEBHOOK_SECRET_FILE`` and appears in no output.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import aiohttp
import pytest

from bot.fakes.jira import FakeJira
from bot.slack import ids
from tests.reliability.procs import approve_message, scalar, serve_policy, serve_slack, start_serve

pytestmark = pytest.mark.postgres

TOKEN = "xoxb-webhook-test-token"
SECRET = "webhook-signing-secret"
JIRA_TOKEN = "jira-webhook-e2e-token"
HOOK_SECRET = "jira-hook-secret-0f9e8d7c"

POLICY = serve_policy(groups=["ops-console"], connectors="""
jira:
  type: jira
  base_url: ${JIRA_URL}
  email: jitbot@example.com
  api_token: ${JIRA_API_TOKEN}
  poll_every: 1h
""", eligibilities="""
- name: ticketed
  connector: demo
  target: {group: ops-console}
  requestors: {groups: [engineers]}
  max_duration: 4h
  require_ticket:
    jira: {connector: jira, projects: [OPS], statuses: [In Progress], end_with_ticket: true}
  approvals:
    - approvers: {groups: [leads]}
""")


def _event(key: str, status: str, project: str = "OPS") -> bytes:
    """An ``issue_updated`` body in the shape Jira sends (trimmed)."""
    return json.dumps({"timestamp": 1700000000000, "webhookEvent": "jira:issue_updated",
                       "issue_event_type_name": "issue_generic",
                       "issue": {"id": "10042", "key": key, "fields": {
                           "status": {"name": status, "statusCategory": {"key": "done"}},
                           "project": {"key": project}}},
                       "changelog": {"items": [{"field": "status", "toString": status}]}}).encode()


def _signed(body: bytes, secret: str = HOOK_SECRET) -> dict[str, str]:
    return {"X-Hub-Signature": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


async def test_jira_webhook_through_serve(database: tuple[str, str], tmp_path: Path) -> None:
    db_name, url = database
    jira = FakeJira(email="jitbot@example.com", api_token=JIRA_TOKEN)
    jira.add_issue("OPS-1", "Payments queue stuck", "In Progress")
    jira.add_issue("HR-5", "Another project's issue", "Done", category="done")
    await jira.start()
    secret_file = tmp_path / "jira-hook-secret"
    secret_file.write_text(HOOK_SECRET + "\n")
    slack = serve_slack(TOKEN)

    async def member() -> bool:
        return bool(await scalar(db_name, "SELECT count(*) FROM memory_membership WHERE target = "
                                           "'group:ops-console' AND user_id = 'alice@example.com'"))

    async def ended() -> int:
        return int(await scalar(db_name, "SELECT count(*) FROM event WHERE kind = 'ticket_ended'"))

    def issue_gets() -> int:
        return sum(1 for path, _ in jira.requests if path.startswith("/rest/api/3/issue/"))

    env = {"JIRA_URL": jira.url, "JIRA_API_TOKEN": JIRA_TOKEN, "JIRA_WEBHOOK_SECRET_FILE": str(secret_file)}
    try:
        async with (aiohttp.ClientSession() as http,
                    start_serve(slack, tmp_path, policy=POLICY, secret=SECRET, database_url=url, env=env) as serve):
            sender, hook = serve.sender, f"http://127.0.0.1:{serve.port}/jira/webhook"

            async def post(body: bytes, headers: dict[str, str]) -> int:
                async with http.post(hook, data=body, headers=headers) as resp:
                    return resp.status

            # ---- a ticketed grant: requested, approved, granted
            await sender.command("U1ALICE", "")

            async def modal_open() -> bool:
                return bool(slack.modal_stack("U1ALICE"))

            await serve.until(modal_open, timeout=10, what="the request modal")
            view = slack.modal_stack("U1ALICE")[-1]
            await sender.click_in_view("U1ALICE", view.id, ids.A_ELIGIBILITY, choice="ticketed",
                                       block_id=ids.B_ELIGIBILITY)

            async def ticket_field() -> bool:
                return any(b.get("block_id") == ids.B_TICKET for b in slack.modal_stack("U1ALICE")[-1].blocks)

            await serve.until(ticket_field, timeout=10, what="the ticket field")
            res = await sender.submit_view("U1ALICE", slack.modal_stack("U1ALICE")[-1].id, {
                ids.A_ELIGIBILITY: "ticketed", ids.A_JUSTIFICATION: "incident", ids.A_DURATION: "3600",
                ids.A_TICKET: "OPS-1"})
            assert res.status == 200 and not (res.body if isinstance(res.body, dict) else {}).get("errors")

            async def asked() -> bool:
                return approve_message(slack, "U2BOB") is not None

            await serve.until(asked, timeout=30, what="the approval DM")
            msg = approve_message(slack, "U2BOB")
            await sender.click("U2BOB", msg.channel, msg.ts, ids.APPROVE)
            await serve.until(member, timeout=30, what="the ticket grant")
            gets = issue_gets()

            # ---- unsigned, forged (another secret), tampered (signed body, other body sent) → 401, nothing
            done = _event("OPS-1", "Done")
            assert await post(done, {"Content-Type": "application/json"}) == 401
            assert await post(done, _signed(done, "not-the-secret")) == 401
            assert await post(_event("OPS-1", "Closed"), _signed(done)) == 401
            assert await post(done, {"X-Hub-Signature": "sha1=" + hashlib.sha1(done).hexdigest()}) == 401
            assert issue_gets() == gets and await member() and await ended() == 0

            # ---- signed, the body says Done, the REST API says In Progress → asked once, nothing ended
            assert await post(done, _signed(done)) == 204
            assert issue_gets() == gets + 1
            assert await member() and await ended() == 0

            # ---- signed, about an unknown key / another project / no issue at all → not even asked
            for body in (_event("OPS-777", "Done"), _event("HR-5", "Done", project="HR"),
                         json.dumps({"webhookEvent": "project_created"}).encode(), b"not json"):
                assert await post(body, _signed(body)) == 204
            assert issue_gets() == gets + 1 and await member() and await ended() == 0

            # ---- the ticket really closed: the webhook ends the grant (the poll is an hour away)
            jira.set_status("OPS-1", "Done")
            assert await post(done, _signed(done)) == 204
            assert await ended() == 1  # recorded before the answer

            async def revoked() -> bool:
                return not await member()

            await serve.until(revoked, timeout=30, what="revocation with the ticket")
            detail = json.loads(await scalar(db_name, "SELECT detail::text FROM event WHERE kind = 'ticket_ended'"))
            assert detail["noticed_by"] == "webhook" and detail["ticket"] == "OPS-1"
            # a replay: no grant ends with OPS-1 any more — nothing asked, nothing recorded
            before = issue_gets()
            assert await post(done, _signed(done)) == 204
            assert await ended() == 1 and issue_gets() == before
    finally:
        await jira.stop()
    out = serve.proc.output()
    assert HOOK_SECRET not in out and JIRA_TOKEN not in out
    assert "refused a Jira webhook" in out and "Traceback" not in out
