"""``jitbot serve`` end to end with the fake PagerDuty and the fake Jira (secrets from ``${ENV}``):

- on call: alice, on call now with a shift ending in a few seconds, requests 1 h of an eligibility with
  ``end_with_shift``: approved at once (nobody asked), granted, and removed when the shift ends — the grant
  row's expiry is the shift's end, not the hour asked;
- ticket: an unknown ticket is an inline error in the modal (nothing requested); a ticket in progress is
  requested, approved and granted; when the ticket is closed, the next poll revokes the access.
Neither secret appears in the process's output or the database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.fakes.jira import FakeJira
from bot.fakes.pagerduty import FakePagerDuty
from bot.slack import ids
from tests.reliability.procs import approve_message, scalar, serve_policy, serve_slack, start_serve

pytestmark = pytest.mark.postgres

TOKEN = "xoxb-context-test-token"
SECRET = "context-signing-secret"
PD_TOKEN = "pd-e2e-secret-token"
JIRA_TOKEN = "jira-e2e-secret-token"
SHIFT_S = 12  # alice's shift ends this many seconds after serve is up

POLICY = serve_policy(groups=["db-admins", "ops-console"], connectors="""
pd:
  type: pagerduty
  token: ${PAGERDUTY_TOKEN}
  base_url: ${PAGERDUTY_URL}
jira:
  type: jira
  base_url: ${JIRA_URL}
  email: jitbot@example.com
  api_token: ${JIRA_API_TOKEN}
  poll_every: 1s
""", eligibilities="""
- name: oncall-db
  connector: demo
  target: {group: db-admins}
  requestors: {groups: [engineers]}
  max_duration: 4h
  approvals:
    - approvers: {groups: [leads]}
      auto_approve_when:
        on_call: {pagerduty: {connector: pd, schedules: [PSCHED1], escalation_levels: [1], end_with_shift: true}}
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


async def test_serve_with_pagerduty_and_jira(database: tuple[str, str], tmp_path: Path) -> None:
    db_name, url = database
    pd = FakePagerDuty(token=PD_TOKEN)
    alice = pd.add_user("alice@example.com", "Alice")
    pd.add_schedule("PSCHED1", "Primary", policy_id="PPOL1")
    jira = FakeJira(email="jitbot@example.com", api_token=JIRA_TOKEN)
    jira.add_issue("OPS-1", "Payments queue <stuck>", "In Progress")
    await pd.start()
    await jira.start()
    slack = serve_slack(TOKEN)

    async def member(group: str) -> bool:
        return bool(await scalar(db_name, "SELECT count(*) FROM memory_membership WHERE target = $1 "
                                           "AND user_id = 'alice@example.com'", f"group:{group}"))

    env = {"PAGERDUTY_TOKEN": PD_TOKEN, "PAGERDUTY_URL": pd.url, "JIRA_URL": jira.url, "JIRA_API_TOKEN": JIRA_TOKEN}
    try:
        async with start_serve(slack, tmp_path, policy=POLICY, secret=SECRET, database_url=url, env=env) as serve:
            sender = serve.sender
            start = datetime.now(UTC)  # alice's shift: from an hour ago until a few seconds from now
            shift_end = (start + timedelta(seconds=SHIFT_S)).replace(microsecond=0)
            pd.put_on_call(alice, policy_id="PPOL1", schedule_id="PSCHED1", level=1, start=start - timedelta(hours=1),
                           end=shift_end)

            async def request(eligibility: str, ticket: str | None = None) -> dict[str, Any]:
                before = {v.id for v in slack.modal_stack("U1ALICE")}  # a modal left open with errors
                res = await sender.command("U1ALICE", "")
                assert res.status == 200

                async def modal_open() -> bool:
                    return bool(slack.modal_stack("U1ALICE")) and slack.modal_stack("U1ALICE")[-1].id not in before

                await serve.until(modal_open, timeout=10, what="the request modal")
                if ticket:  # choosing the eligibility brings its ticket field (the modal is updated)
                    view = slack.modal_stack("U1ALICE")[-1]
                    await sender.click_in_view("U1ALICE", view.id, ids.A_ELIGIBILITY, choice=eligibility,
                                               block_id=ids.B_ELIGIBILITY)

                    async def ticket_field() -> bool:
                        return any(b.get("block_id") == ids.B_TICKET for b in slack.modal_stack("U1ALICE")[-1].blocks)

                    await serve.until(ticket_field, timeout=10, what="the ticket field")
                values = {ids.A_ELIGIBILITY: eligibility, ids.A_JUSTIFICATION: "incident", ids.A_DURATION: "3600"}
                if ticket:
                    values[ids.A_TICKET] = ticket
                res = await sender.submit_view("U1ALICE", slack.modal_stack("U1ALICE")[-1].id, values)
                assert res.status == 200
                return res.body if isinstance(res.body, dict) else {}

            # ---- on call: approved at once, granted, and gone when the shift ends
            assert not (await request("oncall-db")).get("errors")

            async def on_call_granted() -> bool:  # the membership is written before the grant row says so
                return await member("db-admins") and await scalar(
                    db_name, "SELECT count(*) FROM \"grant\" WHERE status = 'active'") == 1

            await serve.until(on_call_granted, timeout=30, what="the on-call grant")
            assert await scalar(db_name, "SELECT count(*) FROM event WHERE kind = 'on_call_approved'") == 1
            expires = await scalar(db_name, "SELECT g.expires_at FROM \"grant\" g JOIN access_request r "
                                             "ON r.id = g.request_id WHERE r.eligibility = 'oncall-db'")
            assert expires == shift_end  # capped at the shift's end, not the hour asked
            assert approve_message(slack, "U2BOB") is None  # nobody was asked

            async def shift_over() -> bool:
                return not await member("db-admins")

            await serve.until(shift_over, timeout=SHIFT_S + 20, what="the end of the shift")
            assert datetime.now(UTC) >= shift_end  # never removed early, never kept past the shift (+ a tick)

            # ---- ticket: unknown → inline error, nothing requested
            body = await request("ticketed", "OPS-999")
            assert body.get("response_action") == "errors" and "Jira has no ticket" in body["errors"][ids.B_TICKET]
            assert await scalar(db_name, "SELECT count(*) FROM access_request WHERE eligibility = 'ticketed'") == 0
            # in progress → requested; the approver sees key, summary (escaped), status and link
            assert not (await request("ticketed", "OPS-1")).get("errors")

            async def asked() -> bool:
                return approve_message(slack, "U2BOB") is not None

            await serve.until(asked, timeout=30, what="the approval DM")
            msg = approve_message(slack, "U2BOB")
            assert f"<{jira.url}/browse/OPS-1|OPS-1> Payments queue &lt;stuck&gt; (In Progress)" in str(msg.blocks)
            await sender.click("U2BOB", msg.channel, msg.ts, ids.APPROVE)

            async def ticket_granted() -> bool:
                return await member("ops-console")

            await serve.until(ticket_granted, timeout=30, what="the ticket grant")
            jira.set_status("OPS-1", "Done")

            async def ticket_closed() -> bool:
                return not await member("ops-console")

            await serve.until(ticket_closed, timeout=30, what="revocation with the ticket")
            assert await scalar(db_name, "SELECT count(*) FROM event WHERE kind = 'ticket_ended'") == 1
    finally:
        await pd.stop()
        await jira.stop()
    out = serve.proc.output()
    assert PD_TOKEN not in out and JIRA_TOKEN not in out
    stored = ""
    for table, col in (("kv", "value"), ("event", "detail"), ("outbox", "payload"), ("eligibility", "definition"),
                       ("access_request", "context")):
        stored += str(await scalar(db_name, f"SELECT coalesce(string_agg({col}::text, ''), '') FROM {table}"))
    assert stored and PD_TOKEN not in stored and JIRA_TOKEN not in stored
