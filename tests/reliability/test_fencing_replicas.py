"""Fencing through real processes on PostgreSQL: a `jitbot worker` paused (SIGSTOP) inside its identity
provider call past its claim's lease resumes after another worker carried the grant out. Its late call's
outcome is not recorded and the live grant keeps its membership (docs/reliability.md, "Fencing").

The lease (5 minutes) is not waited out: the test moves the paused worker's claim into the past in the
database, which is what the passing of the lease does (a claim is free once ``claimed_until`` is past).
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from storage.db import Database
from storage.tables import AccessRequest, Grant
from tests import pg
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.tls import localhost_tls
from tests.reliability.procs import AUDIT, Proc, create_database, drop_database, until

pytestmark = pytest.mark.postgres

OKTA_TOKEN = "00fencing-okta-token"


class HeldOkta(FakeOkta):
    """The strict fake Okta; the first membership addition it receives is held until ``go`` is set."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.held, self.go = asyncio.Event(), asyncio.Event()
        self.assigns = 0

    async def _assign(self, request: web.Request) -> web.Response:
        self.assigns += 1
        if self.assigns == 1:
            self.held.set()
            await self.go.wait()
        return await super()._assign(request)


@pytest.fixture
async def database() -> AsyncIterator[tuple[str, str]]:
    name, url = await create_database()
    yield name, url
    await drop_database(name)


async def _scalar(db_name: str, sql: str) -> Any:
    conn = await asyncpg.connect(pg.database_dsn(db_name))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_a_worker_paused_in_its_grant_call_past_its_lease_leaves_the_live_grant_alone(
        database: tuple[str, str], tmp_path: Path) -> None:
    db_name, url = database
    context, ca_file = localhost_tls()
    okta = HeldOkta(api_token=OKTA_TOKEN)
    await okta.start(context)
    uid = okta.add_user("alice@example.com")
    gid = okta.add_group("jit-ops", [])
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
    timeout: 120
eligibilities:
  - name: ops
    description: Operations
    connector: okta
    target: {{group: {gid}}}
    requestors: {{users: [alice@example.com]}}
    max_duration: 1h
""")
    db = Database(url)
    await db.migrate()
    now = datetime.now(UTC)
    async with db.transaction() as session:  # an approved request whose grant is due
        session.add(AccessRequest(id="R-F1", eligibility="ops", requester="alice@example.com", duration_s=1800,
                                  justification="fencing", status="approved", layers=0, created_at=now,
                                  updated_at=now, decided_at=now))
        session.add(Grant(id="G-F1", request_id="R-F1", connector="okta", target_kind="group", target_id=gid,
                          user_email="alice@example.com", status="granting", next_attempt_at=now))
    await db.dispose()

    def worker(name: str) -> Proc:
        return Proc(["worker", "--log-messages", "--interval", "0.2"],
                    {"DATABASE_URL": url, "JITBOT_POLICY": str(policy), "JITBOT_INSTANCE_ID": name},
                    tmp_path / f"{name}.log", tmp_path)

    a = worker("replica-a")
    procs = [a]
    try:
        await until(lambda: _wait(okta.held), timeout=30, what="A's membership call", procs=procs)
        a.popen.send_signal(signal.SIGSTOP)  # A is paused inside its IdP call
        # ... past its lease: the claim's end moves into the past, as the lease running out does
        assert await _scalar(db_name, "UPDATE \"grant\" SET claimed_until = now() - interval '1 second' "
                                      "WHERE claimed_by = 'replica-a' RETURNING id") == "G-F1"
        b = worker("replica-b")
        procs.append(b)

        async def active() -> bool:
            return await _scalar(db_name, "SELECT status FROM \"grant\"") == "active"

        await until(active, timeout=30, what="B carrying the grant out", procs=[b])
        b.stop()
        procs.remove(b)
        assert uid in okta.members[gid]

        a.popen.send_signal(signal.SIGCONT)
        okta.go.set()  # A's call goes through, late

        async def outcome() -> bool:  # A handled its call's late outcome, one way or another
            return await _scalar(db_name, "SELECT count(*) FROM event WHERE kind IN "
                                          "('stale_claim', 'granted_after_stop')") >= 1

        await until(outcome, timeout=30, what="A handling its late call", procs=procs)
        ticks = await _scalar(db_name, "SELECT ticks FROM worker_heartbeat WHERE worker_id = 'replica-a'")

        async def passes() -> bool:  # and ran further passes (which would carry out what it scheduled)
            return await _scalar(db_name, "SELECT ticks FROM worker_heartbeat WHERE worker_id = 'replica-a'") \
                >= ticks + 5

        await until(passes, timeout=30, what="further passes of A", procs=procs)
    finally:
        if a.popen.poll() is None:
            a.popen.send_signal(signal.SIGCONT)
        for p in procs:
            p.stop()
        await okta.stop()
    assert uid in okta.members[gid], "the paused worker's late outcome took the live grant's membership"
    assert await _scalar(db_name, "SELECT status FROM \"grant\"") == "active"
    assert await _scalar(db_name, "SELECT status FROM access_request") == "active"
    assert await _scalar(db_name, "SELECT count(*) FROM event WHERE kind IN ('granted_after_stop', 'revoked')") == 0
    assert await _scalar(db_name, "SELECT count(*) FROM event WHERE kind = 'granted'") == 1
    detail = json.loads(await _scalar(db_name, "SELECT detail::text FROM event WHERE kind = 'stale_claim'"))
    assert detail["undo"] == "none: the membership is needed by live grant(s) G-F1" and detail["added"] is True


async def _wait(event: asyncio.Event) -> bool:
    return event.is_set()
