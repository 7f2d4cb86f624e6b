"""Bundles in the policy: validated at load, composed from their members (bot/domain/bundles.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from bot.domain.policy import Policy


def _policy(*bundles: dict[str, Any]) -> Policy:
    return Policy.model_validate({
        "audit_channel": "#a",
        "connectors": {"demo": {"type": "memory"}, "other": {"type": "memory"}},
        "eligibilities": [
            {"name": "db", "connector": "demo", "target": {"group": "db"}, "requestors": {"groups": ["eng"]},
             "max_duration": "4h", "require_ticket": True,
             "approvals": [{"approvers": {"groups": ["leads"]}, "timeout": "4h", "remind_every": "1h"},
                           {"approvers": {"users": ["sec@example.com"]}}]},
            {"name": "logs", "connector": "other", "target": {"role": "viewer"},
             "requestors": {"groups": ["eng", "ops"]}, "max_duration": "2h",
             "approvals": [{"approvers": {"groups": ["ops-leads"]}, "min_approvals": 2, "timeout": "2h"}]},
            *bundles,
        ]})


def test_a_bundle_takes_the_union_of_its_members_layers_and_the_shortest_maximum() -> None:
    b = _policy({"name": "db-and-logs", "description": "Debugging", "bundle": ["db", "logs"]}).eligibility(
        "db-and-logs")
    assert b is not None and b.bundle == ("db", "logs")
    assert (b.connector, b.target.kind, b.target.ref) == ("demo", "group", "db")  # the first member's grant
    assert b.max_duration == timedelta(hours=2) and b.default == timedelta(hours=2)
    assert b.require_ticket is True
    assert len(b.approvals) == 2
    one, two = b.approvals
    assert one.approvers.groups == ("leads", "ops-leads")
    assert (one.min_approvals, one.timeout, one.remind_every) == (2, timedelta(hours=2), timedelta(hours=1))
    assert two.approvers.users == ("sec@example.com",) and two.min_approvals == 1
    assert b.description == "Debugging [db + logs]"  # approvers see every item


def test_a_bundle_may_shorten_but_never_lengthen_its_members_maximum() -> None:
    p = _policy({"name": "short", "bundle": ["db", "logs"], "max_duration": "30m"},
                {"name": "long", "bundle": ["db", "logs"], "max_duration": "8h"})
    short, long = p.eligibility("short"), p.eligibility("long")
    assert short is not None and short.max_duration == timedelta(minutes=30)
    assert long is not None and long.max_duration == timedelta(hours=2)


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "b", "bundle": ["db", "nope"]}, "names unknown eligibility 'nope'"),
    ({"name": "b", "bundle": ["db", "b"]}, "names itself"),
    ({"name": "b", "bundle": ["db"]}, "at least two different"),
    ({"name": "b", "bundle": ["db", "db"]}, "at least two different"),
    ({"name": "b", "bundle": ["db", "logs"], "approvals": []}, "cannot set approvals"),
    ({"name": "b", "bundle": ["db", "logs"], "connector": "demo"}, "cannot set connector"),
    ({"name": "b", "bundle": ["db", "logs"], "requestors": {"groups": ["x"]}}, "cannot set requestors"),
    ({"name": "b", "bundle": ["db", "logs"], "break_glass": {}}, "cannot set break_glass"),
    ({"name": "b", "bundle": "db"}, "a list of eligibility names"),
])
def test_a_malformed_bundle_is_refused_at_load(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _policy(entry)


def test_a_bundle_of_a_bundle_is_refused() -> None:
    with pytest.raises(ValidationError, match="which is a bundle: bundles do not nest"):
        _policy({"name": "inner", "bundle": ["db", "logs"]}, {"name": "outer", "bundle": ["inner", "db"]})
