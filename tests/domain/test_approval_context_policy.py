"""Policy keys of approval context: auto_approve_when (PagerDuty on call) and require_ticket: {jira: ...}."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from bot.bootstrap import build_connectors
from bot.policy_file import PolicyError, parse_policy
from storage.db import Database
from tests.services.context_world import context_policy_doc, on_call


def parse(doc: dict[str, Any]) -> Any:
    return parse_policy(yaml.safe_dump(doc, sort_keys=False), source="p.yml", env={})


def doc() -> dict[str, Any]:
    return context_policy_doc("https://api.pagerduty.com", "https://example.atlassian.net")


def test_context_connectors_are_kept_apart_from_the_identity_providers() -> None:
    policy = parse(doc()).policy
    assert set(policy.connectors) == {"demo"} and set(policy.context_connectors) == {"pd", "jira"}
    elig = policy.eligibility("ticketed")
    assert elig is not None and elig.ticket_rule is not None and elig.ticket_rule.jira.projects == ("OPS", "INC")
    assert elig.require_ticket  # the ticket field is shown and required, as with require_ticket: true
    oncall = policy.eligibility("oncall-two")
    assert oncall is not None and oncall.on_call_rule(1) is not None and oncall.on_call_rule(2) is None


async def test_building_the_identity_provider_connectors_skips_them(tmp_path: Any) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    try:
        assert set(build_connectors(parse(doc()), db)) == {"demo"}
    finally:
        await db.dispose()


def test_eligibility_wide_rule_passes_every_layer() -> None:
    d = doc()
    d["eligibilities"][-2]["approvals"][0].pop("auto_approve_when")
    d["eligibilities"][-2]["auto_approve_when"] = on_call()
    elig = parse(d).policy.eligibility("oncall-two")
    assert elig is not None and elig.on_call_rule(1) == elig.on_call_rule(2) is not None


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["eligibilities"][-2]["approvals"].reverse(),
     "layer 2 has auto_approve_when but an earlier layer does not"),
    (lambda d: d["eligibilities"][-3]["approvals"][0]["auto_approve_when"]["on_call"]["pagerduty"].update(
        connector="nope"), "uses unknown connector 'nope' (it needs a connector of type pagerduty)"),
    (lambda d: d["eligibilities"][-1]["require_ticket"]["jira"].update(connector="pd"),
     "uses unknown connector 'pd' (it needs a connector of type jira)"),
    (lambda d: d["eligibilities"][-1]["require_ticket"]["jira"].update(statuses=[]), "statuses"),
    (lambda d: d["eligibilities"][-1].update(connector="jira"), "it is a jira connector, which grants nothing"),
    (lambda d: d["eligibilities"][-3]["approvals"][0]["auto_approve_when"]["on_call"]["pagerduty"].update(
        schedules=[]), "needs at least one schedule or escalation policy"),
    (lambda d: d["eligibilities"][-3]["approvals"][0]["auto_approve_when"]["on_call"]["pagerduty"].update(
        escalation_levels=[0]), "escalation_levels start at 1"),
    (lambda d: d["eligibilities"][-3]["approvals"][0]["auto_approve_when"]["on_call"].update(opsgenie={}),
     "Extra inputs are not permitted"),
])
def test_bad_context_rules_are_refused_with_a_clear_message(change: Any, message: str) -> None:
    d = doc()
    change(d)
    with pytest.raises(PolicyError) as refused:
        parse(d)
    assert message in str(refused.value)


def test_a_context_rule_naming_a_missing_connector_points_at_its_eligibility() -> None:
    d = doc()
    d["eligibilities"][-1]["require_ticket"]["jira"]["connector"] = "jra"
    with pytest.raises(PolicyError) as refused:
        parse(d)
    lines = yaml.safe_dump(d, sort_keys=False).splitlines()
    line = lines.index("- connector: demo", lines.index("  name: oncall-two")) + 1  # where the entry starts
    assert str(refused.value).startswith(f"p.yml:{line}: eligibilities[{d['eligibilities'][-1]['name']}]: ")


def test_context_connector_secrets_never_reach_the_applied_settings() -> None:
    from bot.governance.plan import global_settings

    d = doc()
    d["connectors"]["pd"]["token"] = "${PD_TOKEN}"
    d["connectors"]["jira"]["api_token"] = "${JIRA_TOKEN}"
    loaded = parse_policy(yaml.safe_dump(d, sort_keys=False), source="p.yml",
                          env={"PD_TOKEN": "pd-env-secret", "JIRA_TOKEN": "jira-env-secret"})
    assert loaded.policy.context_connectors["pd"]["token"] == "pd-env-secret"
    dumped = str(global_settings(loaded))
    assert "pd-env-secret" not in dumped and "jira-env-secret" not in dumped
    assert "${PD_TOKEN}" in dumped  # the connectors as written in the file
    assert repr(loaded.policy).count("env-secret") == 0


def test_the_matching_shift_is_the_longest_at_an_allowed_level() -> None:
    from datetime import UTC, datetime, timedelta

    from bot.domain.approval_context import PagerDutyOnCall
    from bot.services.context.on_call import best_shift
    from connectors.pagerduty import Shift

    now = datetime(2026, 12, 7, 3, tzinfo=UTC)
    rule = PagerDutyOnCall(connector="pd", schedules=("PS1",), escalation_levels=(1,))
    short = Shift("U", "EP", 1, "PS1", now, now + timedelta(hours=1))
    longer = Shift("U", "EP", 1, "PS1", now, now + timedelta(hours=5))
    level_two = Shift("U", "EP", 2, "PS1", now, None)
    other_schedule = Shift("U", "EP", 1, "PS9", now, None)
    assert best_shift([short, longer, level_two, other_schedule], rule) == longer
    assert best_shift([level_two, other_schedule], rule) is None
    permanent = Shift("U", "EP", 1, "PS1", None, None)
    assert best_shift([longer, permanent], rule) == permanent
