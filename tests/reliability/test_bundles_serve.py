"""``jitbot serve`` end to end with a bundle, against the strict fake Slack and PostgreSQL:

alice picks the bundle in the /jit modal; bob (an approver of one member) sees both items in his
approval DM and approves once; both memberships appear, each its own grant; alice releases the member
request with ``/jit release``, and both memberships go (a bundle is released together).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.slack import ids
from tests.reliability.procs import approve_message, scalar, serve_policy, serve_slack, start_serve

pytestmark = pytest.mark.postgres

TOKEN = "xoxb-bundle-test-token"
SECRET = "bundle-signing-secret"
POLICY = serve_policy(groups=["db-readonly", "logs-viewers"], leads=["bob"], eligibilities="""
- name: db-readonly
  connector: demo
  target: {group: db-readonly}
  requestors: {groups: [engineers]}
  max_duration: 4h
  approvals:
    - approvers: {groups: [leads]}
- name: logs-viewer
  connector: demo
  target: {group: logs-viewers}
  requestors: {groups: [engineers]}
  max_duration: 2h
- name: db-debugging
  description: DB and logs
  bundle: [db-readonly, logs-viewer]
""")


async def test_serve_requests_approves_grants_and_releases_a_bundle(database: tuple[str, str],
                                                                    tmp_path: Path) -> None:
    db_name, url = database
    slack = serve_slack(TOKEN)

    async def held() -> tuple[bool, bool]:
        out = []
        for group in ("db-readonly", "logs-viewers"):
            out.append(bool(await scalar(db_name, "SELECT count(*) FROM memory_membership WHERE target = $1 "
                                                   "AND user_id = 'alice@example.com'", f"group:{group}")))
        return out[0], out[1]

    async with start_serve(slack, tmp_path, policy=POLICY, secret=SECRET, database_url=url) as serve:
        sender = serve.sender
        res = await sender.command("U1ALICE", "")
        assert res.status == 200

        async def modal_open() -> bool:
            return bool(slack.modal_stack("U1ALICE"))

        await serve.until(modal_open, timeout=10, what="the request modal")
        modal = slack.modal_stack("U1ALICE")[-1]
        assert "db-debugging" in str(modal.blocks)
        res = await sender.submit_view("U1ALICE", modal.id, {ids.A_ELIGIBILITY: "db-debugging",
                                                             ids.A_JUSTIFICATION: "incident 7",
                                                             ids.A_DURATION: "3600"})
        assert res.status == 200 and not (res.body if isinstance(res.body, dict) else {}).get("errors")

        async def asked() -> bool:
            return approve_message(slack, "U2BOB") is not None

        await serve.until(asked, timeout=30, what="the approval DM")
        msg = approve_message(slack, "U2BOB")
        assert "bundle of: db-readonly, logs-viewer" in str(msg.blocks)  # the approver sees every item
        await sender.click("U2BOB", msg.channel, msg.ts, ids.APPROVE)

        async def both_granted() -> bool:
            return await held() == (True, True) and await scalar(
                db_name, "SELECT count(*) FROM \"grant\" WHERE status = 'active'") == 2

        await serve.until(both_granted, timeout=30, what="both grants")
        member = await scalar(db_name, "SELECT id FROM access_request WHERE eligibility = 'logs-viewer'")
        head = await scalar(db_name, "SELECT id FROM access_request WHERE eligibility = 'db-debugging'")
        assert await scalar(db_name, "SELECT bundle_id FROM access_request WHERE id = $1", member) == head
        res = await sender.command("U1ALICE", f"release {member}")
        assert res.status == 200

        async def both_gone() -> bool:
            return await held() == (False, False)

        await serve.until(both_gone, timeout=30, what="the bundle released together")
        assert await scalar(db_name, "SELECT count(*) FROM event WHERE kind = 'bundle_ended'") == 1
