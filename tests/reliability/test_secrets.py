"""Secrets never leak: the whole loop with known secrets, then every captured byte is searched.

The Slack bot token and signing secret, and the Okta API token (read from the environment through
``${OKTA_API_TOKEN}``), are distinctive strings. The loop runs through the real Bolt app and the
strict fake Slack, grants and revokes at a fake Okta org through the real Okta connector — with a
503, a 429 and a refused revoke on the way so that error paths log and alert — and applies the
policy. Then all log records (DEBUG and up, with tracebacks), stdout/stderr, every Slack Web API
call's arguments and responses, the exported audit events, and every row of every table (outbox
payloads, errors, events, applied policy) are searched for each secret.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import SQLModel

from bot.governance.applied import apply_policy
from bot.policy_file import LoadedPolicy, parse_policy
from bot.services.auditing.audit import export_events
from bot.services.clock import ManualClock
from bot.slack import ids
from tests.conftest import POLICY, DbFactory
from tests.fakes.idp.okta import FakeOkta
from tests.fakes.idp.tls import localhost_tls
from tests.slack import harness
from tests.slack.harness import Env, slack_env

SLACK_TOKEN = "xoxb-1111-2222-SECRETslackBotTok3n"
SIGNING_SECRET = "SECRETsigning0f9e8d7c6b5a4"
OKTA_TOKEN = "00SECRETokta-api-token-Zq81Xw"
SECRETS = {"slack bot token": SLACK_TOKEN, "signing secret": SIGNING_SECRET, "okta api token": OKTA_TOKEN}
# a fragment is enough to count as a leak (tokens cut to a length still leak)
NEEDLES = {name: value[-14:] for name, value in SECRETS.items()}

OKTA_PART = """
  okta:
    type: okta
    org_url: "{url}"
    ca_file: "{ca}"
    api_token: "${{OKTA_API_TOKEN}}"
    timeout: 5
"""
ELIGIBILITY = """
  - name: okta-admin
    description: Okta admins
    connector: okta
    target: {group: jit-admins}
    requestors: {groups: [engineers]}
    max_duration: 2h
    default_duration: 1h
    warn_before: 10m
    approvals:
      - approvers: {groups: [leads]}
"""


@pytest.fixture(autouse=True)
def _isolated_from_okta_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("OKTA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # the Okta SDK reads ./okta.yaml


def _policy(fake: FakeOkta, ca_file: str) -> str:
    connectors_end = POLICY.index("eligibilities:")
    return (POLICY[:connectors_end].rstrip("\n") + OKTA_PART.format(url=fake.base_url, ca=ca_file)
            + POLICY[connectors_end:] + ELIGIBILITY)


def _walk(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield str(k)
            yield from _walk(v)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _walk(v)
    else:
        yield str(value)


async def _every_row(env: Env) -> list[str]:
    out: list[str] = []
    async with env.stack.rt.db.sessions() as s:
        for table in SQLModel.metadata.sorted_tables:
            rows = (await s.execute(text(f'SELECT * FROM "{table.name}"'))).all()
            out += [f"{table.name}: {tuple(r)}" for r in rows]
    return out


async def _run_the_loop(env: Env, fake: FakeOkta, loaded: LoadedPolicy) -> None:
    await apply_policy(env.stack.rt.db, loaded, actor="root@example.com", now=env.clock.now())
    await env.sender.command("U1ALICE", "")
    modal = env.slack.modal_stack("U1ALICE")[-1]
    await env.sender.click_in_view("U1ALICE", modal.id, ids.A_ELIGIBILITY, choice="okta-admin")
    res = await env.sender.submit_view("U1ALICE", modal.id,
                                       {ids.A_JUSTIFICATION: "rotate keys", ids.A_DURATION: "3600"})
    assert res.status == 200, res.body
    await env.settle()
    approve = next(m for m in env.slack.dm_messages("U2BOB") if "okta-admin" in str(m.blocks))
    fake.fail_next(503)
    fake.rate_limit_next(0.01)
    res = await env.sender.click("U2BOB", env.slack.im_channel("U2BOB") or "", approve.ts, ids.APPROVE)
    assert res.status == 200
    for _ in range(4):  # the grant retries with backoff on the clock
        await env.settle()
        env.clock.advance(timedelta(minutes=2))
    assert _members(fake), "not granted at Okta"
    await env.sender.command("U1ALICE", "list")
    await env.sender.open_home("U1ALICE")
    fake.forbid_next()  # the first revoke is refused: an alert is raised
    env.clock.advance(timedelta(hours=1))
    for _ in range(4):
        await env.settle()
        env.clock.advance(timedelta(minutes=3))
    assert not _members(fake), "not revoked at Okta"
    # a failing credential check, and a forged Slack request, also say nothing secret
    fake.break_credentials()
    checks = await env.stack.rt.connectors["okta"].check()
    print("checks:", [(c.name, c.ok, c.message) for c in checks])
    forged = await env.sender.command("U1ALICE", "", secret="not-" + SIGNING_SECRET[:5])
    assert forged.status == 401


def _members(fake: FakeOkta) -> list[str]:
    return [m for gid, g in fake.groups.items() if g["profile"]["name"] == "jit-admins" for m in fake.members[gid]]


@pytest.mark.parametrize("db_factory", ["sqlite"], indirect=True)
async def test_no_secret_appears_in_logs_output_slack_audit_or_database(
        db_factory: DbFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    context, ca_file = localhost_tls()
    fake = FakeOkta(api_token=OKTA_TOKEN, page_size=2)
    await fake.start(context)
    fake.add_user("alice@example.com", "Alice", "Adams")
    fake.add_group("jit-admins")
    monkeypatch.setattr(harness, "TOKEN", SLACK_TOKEN)
    monkeypatch.setattr(harness, "SECRET", SIGNING_SECRET)
    env_vars = {"OKTA_API_TOKEN": OKTA_TOKEN}
    monkeypatch.setattr(harness, "parse_policy", lambda text, *, source, env: parse_policy(
        text, source=source, env=env_vars))
    policy = _policy(fake, ca_file)
    loaded = parse_policy(policy, source="policy.yml", env=env_vars)
    caplog.set_level(logging.DEBUG)
    try:
        async with slack_env(db_factory(), policy, clock) as env:
            await _run_the_loop(env, fake, loaded)
            rows = await _every_row(env)
            exported = await export_events(env.stack.rt.db)
            calls = [json.dumps({"method": c.method, "args": c.args, "response": c.response}, default=str)
                     for c in env.slack.calls()]
    finally:
        await fake.stop()
    assert fake.auth_headers and all(h == f"SSWS {OKTA_TOKEN}" for h in fake.auth_headers)  # it was used
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logs = [formatter.format(r) + " " + " ".join(_walk(r.args if isinstance(r.args, (dict, tuple)) else ()))
            for r in caplog.records]
    assert len(logs) > 20 and any(r.levelno == logging.DEBUG for r in caplog.records)
    out, err = capsys.readouterr()
    haystacks = {"logs": logs, "stdout": [out], "stderr": [err], "slack calls": calls,
                 "audit export": [exported], "database rows": rows}
    assert calls and rows and exported
    leaks = [f"{name} in {where}: …{hay[max(0, hay.find(needle) - 60):hay.find(needle) + 20]!r}…"
             for where, hays in haystacks.items() for hay in hays for name, needle in NEEDLES.items()
             if needle in hay]
    assert not leaks, "\n".join(leaks[:20])


def test_a_loaded_policy_does_not_show_interpolated_credentials_in_its_repr() -> None:
    text = POLICY.replace("  demo:\n    type: memory\n",
                          "  demo:\n    type: memory\n    api_token: ${OKTA_API_TOKEN}\n", 1)
    loaded = parse_policy(text, source="p.yml", env={"OKTA_API_TOKEN": OKTA_TOKEN})
    assert loaded.policy.connectors["demo"]["api_token"] == OKTA_TOKEN  # the connector still gets it
    for shown in (repr(loaded), str(loaded), repr(loaded.policy), str(loaded.policy)):
        assert OKTA_TOKEN not in shown
