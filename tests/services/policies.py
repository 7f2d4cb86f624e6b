"""The shared test policy plus eligibilities exercising reminders, escalation, break-glass, delegates."""

from __future__ import annotations

import yaml

from bot.policy_file import LoadedPolicy, parse_policy
from tests.conftest import POLICY

DB_ADMIN = {
    "name": "db-admin",
    "description": "Database admin",
    "connector": "demo",
    "target": {"group": "db-admins"},
    "requestors": {"groups": ["engineers"]},
    "max_duration": "4h",
    "default_duration": "1h",
    "break_glass": {"max_duration": "1h"},
    "delegates": {"users": ["dave@example.com"]},
    "approvals": [{"approvers": {"groups": ["leads"]}, "min_approvals": 2, "timeout": "4h",
                   "remind_every": "1h", "escalate_after": "2h", "escalation": {"groups": ["security"]}}],
}


def extended_policy_text(security_channel: str | None = None) -> str:
    doc = yaml.safe_load(POLICY)
    doc["connectors"]["demo"]["groups"]["db-admins"] = []
    doc["eligibilities"].append(DB_ADMIN)
    if security_channel:
        doc["security_channel"] = security_channel
    return yaml.safe_dump(doc, sort_keys=False)


def extended_policy() -> LoadedPolicy:
    return parse_policy(extended_policy_text(), source="test-policy.yml", env={})
