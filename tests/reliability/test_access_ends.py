"""Access never outlives its approval, through the real ``jitbot serve``: signed Slack requests against the
fake Slack, the real Okta connector against the fake Okta (TLS), one PostgreSQL database.

Each test is a sequence a hostile (or merely unlucky) requester can produce: a scheduled grant that would
inherit today's membership, an ownership hand-off racing a grant's completion (the fake Okta holds the
grant's IdP call open until the test lets it go: no sleeps), a break-glass use extended past its cap, an
approved grant that cannot be stopped before it starts or is carried out after its eligibility is gone.
Where the test needs time to pass (a scheduled start, an expiry warning) it moves the row's due time, as
the clock would.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from bot.fakes import FakeSlack, SlackSender
from bot.slack import ids
from tests import pg
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.tls import localhost_tls
from tests.reliability.procs import (
    AUDIT,
    SERVE_USERS,
    Proc,
    approve_message,
    create_database,
    drop_database,
    serve_slack,
    start_serve,
    until,
)

pytestmark = pytest.mark.postgres

TOKEN = "xoxb-access-ends-token"
SECRET = "access-ends-signing-secret"
OKTA_TOKEN = "00access-ends-okta-token"


class HeldOkta(FakeOkta):
    """The fake Okta, whose next read of one user's groups (the connector's membership check, made by a
    grant before and during its add) is held open until ``go`` is set."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hold_user: str | None = None
        self.held, self.go = asyncio.Event(), asyncio.Event()

    async def _user_groups(self, request: web.Request) -> web.Response:
        if self.hold_user is not None and request.match_info["uid"] == self.hold_user:
            self.hold_user = None
            self.held.set()
            await self.go.wait()
        return await super()._user_groups(request)


def policy_text(okta: FakeOkta, ca_file: str, *, gid: str, gid2: str, with_db_admin: bool = True) -> str:
    db_admin = f"""
  - name: db-admin
    description: Database admin
    connector: okta
    target: {{group: {gid2}}}
    requestors: {{users: [alice@example.com]}}
    max_duration: 4h
    approvals:
      - approvers: {{users: [bob@example.com]}}
""" if with_db_admin else ""
    return f"""
audit_channel: "{AUDIT}"
admins: {{users: [carol@example.com]}}
connectors:
  okta:
    type: okta
    org_url: {okta.base_url}
    api_token: {OKTA_TOKEN}
    ca_file: {ca_file}
    timeout: 10
eligibilities:
  - name: app-admin
    description: Application admin (no approval layers)
    connector: okta
    target: {{group: {gid}}}
    requestors: {{users: [alice@example.com]}}
    max_duration: 4h
    default_duration: 1h
    break_glass: {{max_duration: 1h}}
  - name: app-admin-again
    description: Application admin, a second way to the same group (one open grant per eligibility)
    connector: okta
    target: {{group: {gid}}}
    requestors: {{users: [alice@example.com]}}
    max_duration: 4h
    default_duration: 1h
{db_admin}"""


@dataclass
class World:
    slack: FakeSlack
    okta: HeldOkta
    sender: SlackSender
    proc: Proc
    db_name: str
    policy: Path
    env: dict[str, str]
    gid: str
    gid2: str
    alice: str  # alice's Okta id
    ca_file: str

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(pg.database_dsn(self.db_name))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def scalar(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    async def until(self, check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
        await until(check, timeout=timeout, what=what, procs=[self.proc])

    async def until_sql(self, sql: str, *args: Any, what: str) -> None:
        async def holds() -> bool:
            return bool(await self.scalar(sql, *args))
        await self.until(holds, what)

    def member(self, gid: str | None = None) -> bool:
        return self.alice in self.okta.members[gid or self.gid]

    async def request(self, eligibility: str, *, starts_at: datetime | None = None) -> str:
        """Alice submits the request modal; returns the new request's id."""
        before = await self.scalar("SELECT count(*) FROM access_request")
        res = await self.sender.command("U1ALICE", "")
        assert res.status == 200

        async def modal_open() -> bool:
            return bool(self.slack.modal_stack("U1ALICE"))
        await self.until(modal_open, "the request modal")
        modal = self.slack.modal_stack("U1ALICE")[-1]
        values: dict[str, Any] = {ids.A_ELIGIBILITY: eligibility, ids.A_JUSTIFICATION: "routine work",
                                  ids.A_DURATION: "3600"}
        if starts_at is not None:
            values[ids.A_STARTS] = int(starts_at.timestamp())
        res = await self.sender.submit_view("U1ALICE", modal.id, values)
        assert res.status == 200 and not (isinstance(res.body, dict) and res.body.get("errors")), res.body
        await self.until_sql("SELECT count(*) > $1 FROM access_request", before, what="the new request")
        return str(await self.scalar("SELECT id FROM access_request ORDER BY created_at DESC LIMIT 1"))

    async def status(self, request_id: str) -> str:
        return str(await self.scalar("SELECT status FROM access_request WHERE id = $1", request_id))

    async def until_status(self, request_id: str, status: str) -> None:
        await self.until_sql("SELECT status = $2 FROM access_request WHERE id = $1", request_id, status,
                             what=f"{request_id} {status}")

    async def until_grant_ended(self, request_id: str) -> None:
        await self.until_sql("SELECT bool_and(status = 'ended') FROM \"grant\" WHERE request_id = $1", request_id,
                             what=f"the grant of {request_id} ended")

    async def approved_by_bob(self, request_id: str) -> None:
        async def asked() -> bool:
            m = approve_message(self.slack, "U2BOB")
            return m is not None and request_id in str(m.blocks)
        await self.until(asked, f"bob asked to approve {request_id}")
        msg = approve_message(self.slack, "U2BOB")
        res = await self.sender.click("U2BOB", msg.channel, msg.ts, ids.APPROVE)
        assert res.status == 200
        await self.until_status(request_id, "approved")

    async def command(self, user: str, text: str) -> str:
        """A slash command; returns the ephemeral answer it got."""
        before = len(self.answers(user))
        res = await self.sender.command(user, text)
        assert res.status == 200

        async def answered() -> bool:
            return len(self.answers(user)) > before
        await self.until(answered, f"an answer to {text!r}")
        return self.answers(user)[-1]

    def answers(self, user: str) -> list[str]:
        return [str(p.body.get("text", "")) for p in self.slack.response_posts() if p.context.get("user") == user]

    def dms(self, user: str) -> list[str]:
        return [m.text + str(m.blocks) for m in self.slack.dm_messages(user)]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db_name, url = await create_database()
    context, ca_file = localhost_tls()
    okta = HeldOkta(api_token=OKTA_TOKEN, page_size=200)
    await okta.start(context)
    try:
        uids = {name: okta.add_user(f"{name}@example.com") for name in SERVE_USERS.values()}
        gid, gid2 = okta.add_group("app-admins"), okta.add_group("db-admins")
        slack = serve_slack(TOKEN)
        async with start_serve(slack, tmp_path, policy=policy_text(okta, ca_file, gid=gid, gid2=gid2),
                               secret=SECRET, database_url=url, what="jitbot serve") as serve:
            try:
                yield World(slack, okta, serve.sender, serve.proc, db_name, tmp_path / "policy.yml",
                            serve.env, gid, gid2, uids["alice"], ca_file)
            finally:
                okta.go.set()
    finally:
        await okta.stop()
        await drop_database(db_name)


async def _active(w: World) -> str:
    """Alice takes app-admin now (no approval layers); returns the request once its access is given."""
    rid = await w.request("app-admin")
    await w.until_status(rid, "active")
    assert w.member()
    return rid


async def test_a_scheduled_grant_does_not_inherit_todays_membership(world: World) -> None:
    w = world
    today = await _active(w)
    later = await w.request("app-admin-again", starts_at=datetime.now(UTC) + timedelta(days=29))
    await w.until_status(later, "approved")
    assert "Releasing" in await w.command("U1ALICE", f"release {today}")
    await w.until_grant_ended(today)
    await w.until(lambda: asyncio.sleep(0, not w.member()), "alice's membership removed at Okta")
    assert await w.status(later) == "approved"  # still to start, owning nothing
    assert await w.scalar("SELECT owns_membership FROM \"grant\" WHERE request_id = $1", later) is False
    kept = await w.fetch("SELECT detail FROM event WHERE kind = 'revoked' AND request_id = $1", today)
    assert len(kept) == 1 and "membership_kept" not in kept[0]["detail"], kept


async def test_an_ownership_hand_off_during_a_grants_idp_call_is_not_lost(world: World) -> None:
    w = world
    first = await _active(w)
    w.okta.hold_user = w.alice  # the second grant's membership check waits at "Okta" until we let it go
    second = await w.request("app-admin-again")
    await asyncio.wait_for(w.okta.held.wait(), timeout=30)
    await w.command("U1ALICE", f"release {first}")
    await w.until_grant_ended(first)  # the first grant handed the membership to the second, in flight
    assert w.member()
    w.okta.go.set()
    await w.until_status(second, "active")
    assert await w.scalar("SELECT owns_membership FROM \"grant\" WHERE request_id = $1", second) is True
    await w.command("U1ALICE", f"release {second}")
    await w.until_grant_ended(second)
    await w.until(lambda: asyncio.sleep(0, not w.member()), "alice's membership removed at Okta")


async def test_break_glass_access_cannot_be_extended(world: World) -> None:
    w = world
    answer = await w.command("U1ALICE", "breakglass app-admin 1h the database is down")
    assert "Break-glass" in answer, answer
    rid = str(await w.scalar("SELECT id FROM access_request WHERE kind = 'breakglass'"))
    await w.until_status(rid, "active")
    expires = await w.scalar("SELECT expires_at FROM \"grant\" WHERE request_id = $1", rid)
    # the expiry warning is due (as it would be 15 minutes before the end): it carries the Extend button
    await w.fetch("UPDATE \"grant\" SET warn_at = now() WHERE request_id = $1", rid)

    def warning() -> Any:
        for m in w.slack.dm_messages("U1ALICE"):
            if any(e.get("action_id") == ids.EXTEND for b in m.blocks or [] if b.get("type") == "actions"
                   for e in b["elements"]):
                return m
        return None

    await w.until(lambda: asyncio.sleep(0, warning() is not None), "the expiry warning with Extend")
    msg = warning()
    for _ in range(3):
        before = len(w.answers("U1ALICE"))
        assert (await w.sender.click("U1ALICE", msg.channel, msg.ts, ids.EXTEND)).status == 200
        await w.until(lambda b=before: asyncio.sleep(0, len(w.answers("U1ALICE")) > b), "the answer to Extend")
        assert "cannot be extended" in w.answers("U1ALICE")[-1], w.answers("U1ALICE")[-1]
    assert await w.scalar("SELECT expires_at FROM \"grant\" WHERE request_id = $1", rid) == expires
    assert await w.scalar("SELECT count(*) FROM event WHERE kind = 'extended'") == 0


async def test_an_approved_grant_can_be_stopped_before_it_starts(world: World) -> None:
    w = world
    start = datetime.now(UTC) + timedelta(days=1)
    stopped: dict[str, str] = {}
    for how in ("/jit cancel", "Cancel button", "/jit release", "/jit admin revoke", "jitbot access revoke"):
        rid = await w.request("db-admin", starts_at=start)
        await w.approved_by_bob(rid)
        if how == "/jit cancel":
            await w.command("U1ALICE", f"cancel {rid}")
        elif how == "/jit release":
            await w.command("U1ALICE", f"release {rid}")
        elif how == "Cancel button":
            [msg] = [m for m in w.slack.dm_messages("U1ALICE") if rid in str(m.blocks)
                     and ids.CANCEL in str(m.blocks)]
            assert (await w.sender.click("U1ALICE", msg.channel, msg.ts, ids.CANCEL)).status == 200
        elif how == "/jit admin revoke":
            answer = await w.command("U3CAROL", f"admin revoke {rid}")
            assert "Revoking" in answer, answer
        else:
            cli = Proc(["access", "revoke", rid, "--as", "carol@example.com", "--wait", "10"], w.env,
                       w.proc.log.with_name("cli.log"), w.proc.log.parent)
            assert await asyncio.to_thread(cli.popen.wait, 60) == 0, cli.output()
            cli.stop()
        expected = "revoked" if "revoke" in how else "cancelled"
        await w.until_status(rid, expected)
        await w.until_grant_ended(rid)
        stopped[rid] = expected
    assert not w.member(w.gid2)
    assert w.okta.members[w.gid2] == []
    for rid, status in stopped.items():
        events = await w.fetch("SELECT kind, actor, detail FROM event WHERE request_id = $1 AND kind = $2",
                               rid, status)
        assert len(events) == 1 and '"before_start": true' in events[0]["detail"], (rid, events)

        async def bob_told(rid: str = rid, status: str = status) -> bool:
            # bob's approval DM for the request now says it was stopped
            return any(rid in m.text + str(m.blocks) and f"{status.title()} by" in str(m.blocks)
                       for m in w.slack.dm_messages("U2BOB"))
        await w.until(bob_told, f"bob's message about {rid} updated")
    assert await w.scalar("SELECT count(*) FROM \"grant\" WHERE status <> 'ended'") == 0


async def test_a_grant_whose_eligibility_was_removed_is_not_carried_out_at_its_start(world: World) -> None:
    w = world
    rid = await w.request("db-admin", starts_at=datetime.now(UTC) + timedelta(days=1))
    await w.approved_by_bob(rid)
    applied = await w.scalar("SELECT count(*) FROM event WHERE kind = 'policy_applied'")
    w.policy.write_text(policy_text(w.okta, w.ca_file, gid=w.gid, gid2=w.gid2, with_db_admin=False))
    w.proc.popen.send_signal(signal.SIGHUP)
    await w.until_sql("SELECT count(*) > $1 FROM event WHERE kind = 'policy_applied'", applied,
                      what="the new policy applied")
    # the start arrives
    await w.fetch("UPDATE \"grant\" SET next_attempt_at = now() WHERE request_id = $1", rid)
    await w.until_status(rid, "revoked")
    await w.until_grant_ended(rid)
    assert not w.member(w.gid2)
    [event] = await w.fetch("SELECT detail FROM event WHERE kind = 'grant_refused' AND request_id = $1", rid)
    assert "no longer in the access policy" in event["detail"]
    await w.until(lambda: asyncio.sleep(0, any("no longer in the access policy" in t for t in w.dms("U1ALICE"))),
                  "alice told why")
    assert await w.scalar("SELECT count(*) FROM event WHERE kind = 'granted' AND request_id = $1", rid) == 0
