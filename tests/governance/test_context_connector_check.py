"""``jitbot connectors check`` for PagerDuty and Jira against their strict fakes: the credentials, each named
schedule / escalation policy (exists, its on-calls readable), each named project (exists, browsable) and
the statuses named for it; one line each, and any ``✗`` makes the exit status 1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli import main
from bot.domain.policy import Policy
from bot.fakes.jira import FakeJira
from bot.fakes.pagerduty import FakePagerDuty
from bot.governance.connector_check import Report, check_connectors
from bot.policy_file import parse_policy

PD_TOKEN = "pd-check-token"
JIRA_TOKEN = "jira-check-token"


def _text(pd_url: str, jira_url: str, *, schedules: str = "[PSCHED1]", policies: str = "[PPOL1]",
          projects: str = "[OPS]", statuses: str = "[In Progress]", pd_token: str = PD_TOKEN,
          jira_token: str = JIRA_TOKEN) -> str:
    return f"""
audit_channel: "#jit-audit"
connectors:
  demo:
    type: memory
    users: [{{email: alice@example.com, name: Alice}}, {{email: bob@example.com, name: Bob}}]
    groups: {{engineers: [alice@example.com], leads: [bob@example.com], db: [], ops: []}}
  pd: {{type: pagerduty, token: {pd_token}, base_url: "{pd_url}"}}
  jira: {{type: jira, base_url: "{jira_url}", email: bot@example.com, api_token: {jira_token}}}
eligibilities:
  - name: oncall-db
    connector: demo
    target: {{group: db}}
    requestors: {{groups: [engineers]}}
    max_duration: 2h
    approvals:
      - approvers: {{groups: [leads]}}
        auto_approve_when:
          on_call: {{pagerduty: {{connector: pd, schedules: {schedules}, escalation_policies: {policies}}}}}
  - name: ticketed
    connector: demo
    target: {{group: ops}}
    requestors: {{groups: [engineers]}}
    max_duration: 2h
    require_ticket: {{jira: {{connector: jira, projects: {projects}, statuses: {statuses}}}}}
    approvals:
      - approvers: {{groups: [leads]}}
"""


@pytest.fixture
async def vendors() -> AsyncIterator[tuple[FakePagerDuty, FakeJira]]:
    pd = FakePagerDuty(token=PD_TOKEN)
    pd.add_schedule("PSCHED1", "Primary", policy_id="PPOL1", policy_name="Databases")
    jira = FakeJira(email="bot@example.com", api_token=JIRA_TOKEN)
    jira.add_project("OPS", "Operations")
    jira.add_project("SEC", "Security", browsable=False)
    await pd.start()
    await jira.start()
    yield pd, jira
    await pd.stop()
    await jira.stop()


def _policy(pd: FakePagerDuty, jira: FakeJira, **kw: str) -> Policy:
    return parse_policy(_text(pd.url, jira.url, **kw), env={}).policy


async def _check(policy: Policy) -> Report:
    return await check_connectors(policy, list(policy.context_connectors))


async def test_a_fully_configured_pagerduty_and_jira_pass(vendors: tuple[FakePagerDuty, FakeJira]) -> None:
    pd, jira = vendors
    report = await _check(_policy(pd, jira))
    assert report.lines == [
        "pd (pagerduty)",
        "  ✓ credentials: the token reads on-calls",
        "  ✓ schedule 'PSCHED1': 'Primary', its on-calls readable",
        "  ✓ escalation policy 'PPOL1': 'Databases', its on-calls readable",
        "jira (jira)",
        "  ✓ credentials: signed in as 'jitbot'",
        "  ✓ project 'OPS': 'Operations', browsable, with 'In Progress'",
    ]
    assert report.ok
    assert [p for p, _ in pd.requests] == ["/oncalls", "/schedules/PSCHED1", "/oncalls",
                                           "/escalation_policies/PPOL1", "/oncalls"]
    assert [p for p, _ in jira.requests] == ["/rest/api/3/myself", "/rest/api/3/project/OPS",
                                             "/rest/api/3/project/OPS/statuses"]


async def test_each_missing_name_is_one_line(vendors: tuple[FakePagerDuty, FakeJira]) -> None:
    pd, jira = vendors
    report = await _check(_policy(pd, jira, schedules="[PSCHED1, PGONE]", policies="[PNOPE]",
                                  projects="[OPS, SEC, NOPE]", statuses="[In Progress, Triage]"))
    failures = [line for line in report.lines if line.startswith("  ✗")]
    assert failures == [
        "  ✗ schedule 'PGONE': does not exist at pd (named by eligibility oncall-db): correct the id in the policy "
        "(it is the last part of the schedule's URL in PagerDuty)",
        "  ✗ escalation policy 'PNOPE': does not exist at pd (named by eligibility oncall-db): correct the id in "
        "the policy (it is the last part of the escalation policy's URL in PagerDuty)",
        "  ✗ project 'OPS': has no status 'Triage' (named by eligibility ticketed; its statuses: Done, In Progress, "
        "To Do): correct the name in the policy",
        "  ✗ project 'SEC': does not exist at jira, or its account may not browse it (named by eligibility "
        "ticketed): give the account Browse projects in the project's permission scheme, or correct the key in "
        "the policy",
        "  ✗ project 'NOPE': does not exist at jira, or its account may not browse it (named by eligibility "
        "ticketed): give the account Browse projects in the project's permission scheme, or correct the key in "
        "the policy",
    ]
    assert not report.ok


async def test_refused_credentials_stop_at_one_line_without_the_secret(
        vendors: tuple[FakePagerDuty, FakeJira]) -> None:
    pd, jira = vendors
    report = await _check(_policy(pd, jira, pd_token="wrong-pd-token", jira_token="wrong-jira-token"))
    assert report.lines[1].startswith("  ✗ credentials: PagerDuty refused the token (401): use an API key from")
    assert report.lines[2] == "jira (jira)"
    assert report.lines[3].startswith("  ✗ credentials: Jira refused the email and API token (401): create a token")
    assert len(report.lines) == 4 and not report.ok
    assert "wrong-pd-token" not in str(report.lines) and "wrong-jira-token" not in str(report.lines)
    assert pd.requests == [] and jira.requests == []


async def test_a_scoped_token_without_oncalls_read_is_named() -> None:
    pd = FakePagerDuty(token=PD_TOKEN, scopes={"schedules.read", "oncalls.read"})
    pd.add_schedule("PSCHED1", "Primary", policy_id="PPOL1")
    jira = FakeJira(email="bot@example.com", api_token=JIRA_TOKEN)
    jira.add_project("OPS", "Operations")
    await pd.start()
    try:
        report = await check_connectors(_policy(pd, jira), ["pd"])
    finally:
        await pd.stop()
    assert report.lines[1:] == [
        "  ✓ credentials: the token reads on-calls",
        "  ✓ schedule 'PSCHED1': 'Primary', its on-calls readable",
        "  ✗ escalation policy 'PPOL1': the token may not read it or its on-calls (403): use a read-only API key, "
        "or give the OAuth app escalation_policies.read and oncalls.read",
    ]


async def test_the_command_checks_context_connectors_and_exits_1_on_a_problem(
        vendors: tuple[FakePagerDuty, FakeJira], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pd, jira = vendors
    path = tmp_path / "policy.yml"
    path.write_text(_text(pd.url, jira.url))
    assert await asyncio.to_thread(main, ["connectors", "check", "jira", "--policy", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "jira (jira)"
    path.write_text(_text(pd.url, jira.url, projects="[SEC]"))
    assert await asyncio.to_thread(main, ["connectors", "check", "--policy", str(path)]) == 1
    out = capsys.readouterr().out
    assert "demo (memory)" in out and "pd (pagerduty)" in out and "  ✗ project 'SEC'" in out
