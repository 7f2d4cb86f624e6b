"""Several real jitbot processes on one PostgreSQL database: nothing doubled across replicas.

(a) two ``jitbot serve`` replicas behind "a load balancer" (each approver's click goes to a different
    replica) on a one-approval layer: one decision, the other approver is told who decided, one grant;
(b) two ``jitbot worker`` processes sweeping 2000 expiries: each removal happens once at a fake Okta
    (real connector, real SDK, TLS), each ``expired`` audit event once, the audit chain intact.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.fakes import SlackSender
from bot.services.auditing.audit import verify_chain
from bot.slack import ids
from storage.db import Database
from storage.tables import AccessRequest, Grant
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.tls import localhost_tls
from tests.reliability.procs import (
    AUDIT,
    SERVE_POLICY,
    Proc,
    approve_message,
    free_port,
    healthy,
    scalar,
    serve_slack,
    until,
)

pytestmark = pytest.mark.postgres

TOKEN = "xoxb-replica-test-token"
SECRET = "replica-signing-secret"



async def test_two_serve_replicas_two_simultaneous_approvals_one_decision_one_grant(
        database: tuple[str, str], tmp_path: Path) -> None:
    db_name, url = database
    policy = tmp_path / "policy.yml"
    policy.write_text(SERVE_POLICY)
    slack = serve_slack(TOKEN)
    async with slack:
        ports = [free_port(), free_port()]
        env = {"SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.url,
               "DATABASE_URL": url, "JITBOT_POLICY": str(policy)}
        # Both start at once on an empty database: migrations must serialise themselves.
        procs = [Proc(["serve", "--port", str(p)], env, tmp_path / f"serve{i}.log", tmp_path)
                 for i, p in enumerate(ports)]
        senders = [SlackSender(slack, f"http://127.0.0.1:{p}/slack/events", SECRET) for p in ports]
        try:
            for p in ports:
                await until(lambda p=p: healthy(p), timeout=30, what=f"replica on :{p}", procs=procs)  # type: ignore[misc]
            res = await senders[0].command("U1ALICE", "")
            assert res.status == 200

            async def modal_open() -> bool:
                return bool(slack.modal_stack("U1ALICE"))

            await until(modal_open, timeout=10, what="the request modal", procs=procs)
            modal = slack.modal_stack("U1ALICE")[-1]
            res = await senders[1].submit_view("U1ALICE", modal.id, {
                ids.A_ELIGIBILITY: "app-admin", ids.A_JUSTIFICATION: "incident 7", ids.A_DURATION: "3600"})
            assert res.status == 200 and not (isinstance(res.body, dict) and res.body.get("errors")), res.body

            async def both_asked() -> bool:
                return all(approve_message(slack, u) is not None for u in ("U2BOB", "U3CAROL"))

            await until(both_asked, timeout=20, what="approval DMs to bob and carol", procs=procs)
            bob_msg, carol_msg = approve_message(slack, "U2BOB"), approve_message(slack, "U3CAROL")
            clicks = await asyncio.gather(
                senders[0].click("U2BOB", bob_msg.channel, bob_msg.ts, ids.APPROVE),
                senders[1].click("U3CAROL", carol_msg.channel, carol_msg.ts, ids.APPROVE))
            assert [c.status for c in clicks] == [200, 200]

            def answers() -> list[str]:
                return [str(p.body.get("text", "")) for p in slack.response_posts()
                        if p.context.get("user") in ("U2BOB", "U3CAROL")]

            async def both_answered() -> bool:
                return len(answers()) >= 2

            await until(both_answered, timeout=15, what="an ephemeral answer to each approver", procs=procs)

            async def granted() -> bool:
                return await scalar(db_name, "SELECT count(*) FROM event WHERE kind = 'granted'") >= 1

            await until(granted, timeout=20, what="the grant", procs=procs)
            # Let both workers tick a few more times: a doubled grant would show up now.
            await asyncio.sleep(0)
            beats = await scalar(db_name, "SELECT coalesce(sum(ticks), 0) FROM worker_heartbeat")

            async def ticked() -> bool:
                return await scalar(db_name, "SELECT coalesce(sum(ticks), 0) FROM worker_heartbeat") >= beats + 4

            await until(ticked, timeout=15, what="further worker ticks", procs=procs)
        finally:
            for s in senders:
                await s.aclose()
            for p in procs:
                p.stop()
    texts = answers()
    already = [t for t in texts if t.startswith("Already approved by")]
    assert len(texts) == 2 and len(already) == 1, texts
    assert any(who in already[0] for who in ("bob@example.com", "carol@example.com"))
    assert await scalar(db_name, "SELECT count(*) FROM approval_vote") == 1
    assert await scalar(db_name, "SELECT count(*) FROM event WHERE kind = 'granted'") == 1
    assert await scalar(db_name, "SELECT count(*) FROM \"grant\"") == 1
    assert await scalar(db_name, "SELECT status FROM access_request") == "active"
    assert await scalar(db_name, "SELECT count(*) FROM memory_membership WHERE target = 'group:app-admins' "
                                  "AND user_id = 'alice@example.com'") == 1


class CountingOkta(FakeOkta):
    """The strict fake Okta, counting every membership removal it receives (group, user)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.removals: Counter[tuple[str, str]] = Counter()

    async def _unassign(self, request: web.Request) -> web.Response:
        self.removals[(request.match_info["gid"], request.match_info["uid"])] += 1
        return await super()._unassign(request)


N_EXPIRIES = 2000
OKTA_TOKEN = "00replica-okta-token"


async def test_two_worker_processes_revoke_each_of_2000_expiries_once(database: tuple[str, str],
                                                                      tmp_path: Path) -> None:
    db_name, url = database
    context, ca_file = localhost_tls()
    okta = CountingOkta(api_token=OKTA_TOKEN, page_size=200)
    await okta.start(context)
    emails = [f"user{i:04d}@example.com" for i in range(N_EXPIRIES)]
    uids = {e: okta.add_user(e) for e in emails}
    gid = okta.add_group("jit-ops", list(uids.values()))
    policy = tmp_path / "policy.yml"
    policy.write_text(f"""
audit_channel: "{AUDIT}"
admins: {{users: [root@example.com]}}
connectors:
  okta:
    type: okta
    org_url: {okta.base_url}
    api_token: {OKTA_TOKEN}
    ca_file: {ca_file}
    timeout: 10
    max_concurrency: 16
eligibilities:
  - name: ops
    description: Operations
    connector: okta
    target: {{group: {gid}}}
    requestors: {{users: [root@example.com]}}
    max_duration: 1h
""")
    db = Database(url)
    await db.migrate()
    env = {"DATABASE_URL": url, "JITBOT_POLICY": str(policy)}
    procs = [Proc(["worker", "--log-messages", "--interval", "0.2"], env, tmp_path / f"worker{i}.log", tmp_path)
             for i in range(2)]
    try:
        async def both_running() -> bool:
            return all("running on" in p.output() for p in procs)

        await until(both_running, timeout=30, what="two workers", procs=procs)
        now = datetime.now(UTC)
        async with db.transaction() as session:  # all due at once, for both workers
            for i, email in enumerate(emails):
                rid = f"R-X{i:05d}"
                session.add(AccessRequest(id=rid, eligibility="ops", requester=email, duration_s=600,
                                          justification="bulk", status="active", layers=0,
                                          created_at=now, updated_at=now))
                session.add(Grant(id=f"G-X{i:05d}", request_id=rid, connector="okta", target_kind="group",
                                  target_id=gid, user_email=email, user_idp_id=uids[email], status="active",
                                  owns_membership=True, pre_member=False, granted_at=now - timedelta(minutes=10),
                                  expires_at=now - timedelta(seconds=1)))

        async def all_ended() -> bool:
            return await scalar(db_name, "SELECT count(*) FROM \"grant\" WHERE status = 'ended'") == N_EXPIRIES

        await until(all_ended, timeout=90, what=f"{N_EXPIRIES} revocations", procs=procs)
    finally:
        for p in procs:
            p.stop()
        await okta.stop()
    assert len(okta.removals) == N_EXPIRIES, f"{N_EXPIRIES - len(okta.removals)} memberships never removed"
    doubled = {k: v for k, v in okta.removals.items() if v != 1}
    assert not doubled, f"{len(doubled)} memberships removed more than once, e.g. {list(doubled.items())[:3]}"
    assert okta.members[gid] == []
    assert await scalar(db_name, "SELECT count(*) FROM event WHERE kind = 'expired'") == N_EXPIRIES
    assert await scalar(db_name, "SELECT count(DISTINCT request_id) FROM event WHERE kind = 'expired'") == N_EXPIRIES
    result = await verify_chain(db)
    await db.dispose()
    assert result.ok, result
