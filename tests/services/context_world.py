"""A policy with PagerDuty on-call approval and Jira ticket checks, and the two fakes it talks to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import yaml

from bot.fakes.jira import FakeJira
from bot.fakes.pagerduty import FakePagerDuty
from bot.policy_file import LoadedPolicy, parse_policy
from bot.services.clock import ManualClock
from tests.conftest import POLICY

SHIFT = timedelta(hours=3)  # alice's current shift ends this long after the clock's start


def on_call(end_with_shift: bool = True) -> dict[str, Any]:
    return {"on_call": {"pagerduty": {"connector": "pd", "schedules": ["PSCHED1"], "escalation_levels": [1],
                                      "end_with_shift": end_with_shift}}}


def context_policy_doc(pd_url: str, jira_url: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(POLICY)
    doc["connectors"]["demo"]["groups"].update({"db-admins": [], "ops-console": []})
    doc["connectors"]["pd"] = {"type": "pagerduty", "token": "pd-secret", "base_url": pd_url}
    doc["connectors"]["jira"] = {"type": "jira", "base_url": jira_url, "email": "bot@example.com",
                                 "api_token": "jira-secret", "poll_every": "1m"}
    base = {"connector": "demo", "requestors": {"groups": ["engineers"]}, "max_duration": "8h",
            "warn_before": "10m"}
    doc["eligibilities"] += [
        {**base, "name": "oncall-db", "description": "DB admin for the on-call", "target": {"group": "db-admins"},
         "approvals": [{"approvers": {"groups": ["leads"]}, "auto_approve_when": on_call()}]},
        {**base, "name": "oncall-two", "description": "On-call first, then security",
         "target": {"group": "db-admins"},
         "approvals": [{"approvers": {"groups": ["leads"]}, "auto_approve_when": on_call()},
                       {"approvers": {"groups": ["security"]}}]},
        {**base, "name": "ticketed", "description": "Ops console with an incident ticket",
         "target": {"group": "ops-console"},
         "require_ticket": {"jira": {"connector": "jira", "projects": ["OPS", "INC"],
                                     "statuses": ["In Progress", "Open"], "end_with_ticket": True}},
         "approvals": [{"approvers": {"groups": ["leads"]}}]},
    ]
    return doc


def context_policy(pd_url: str, jira_url: str) -> LoadedPolicy:
    return parse_policy(yaml.safe_dump(context_policy_doc(pd_url, jira_url), sort_keys=False),
                        source="context-policy.yml", env={})


@dataclass
class Vendors:
    pd: FakePagerDuty
    jira: FakeJira
    alice_pd: str


async def start_vendors(clock: ManualClock) -> Vendors:
    """alice is on call now (schedule PSCHED1, level 1, for SHIFT); bob is only at level 2; OPS-1 is in
    progress, OPS-2 done, DEV-1 in another project."""
    pd = FakePagerDuty(token="pd-secret", clock=clock.now)
    alice = pd.add_user("alice@example.com", "Alice")
    bob = pd.add_user("bob@example.com", "Bob")
    pd.add_schedule("PSCHED1", "Primary", policy_id="PPOL1")
    now = clock.now()
    pd.put_on_call(alice, policy_id="PPOL1", schedule_id="PSCHED1", level=1, start=now - timedelta(hours=1),
                   end=now + SHIFT)
    pd.put_on_call(bob, policy_id="PPOL1", schedule_id="PSCHED1", level=2, start=now - timedelta(hours=1),
                   end=now + SHIFT)
    jira = FakeJira(email="bot@example.com", api_token="jira-secret")
    jira.add_issue("OPS-1", "Database <failover> stuck *now*", "In Progress")
    jira.add_issue("OPS-2", "Old incident", "Done", "done")
    jira.add_issue("DEV-1", "A feature", "In Progress")
    await pd.start()
    await jira.start()
    return Vendors(pd, jira, alice)
