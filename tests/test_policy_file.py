"""Loading the policy file: errors name file, line and path; risky policy is warned about."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.policy_file import PolicyError, load_policy, memory_directory, parse_policy, risk_warnings
from connectors.entra import EntraSettings
from connectors.google_workspace import GoogleWorkspaceConfig
from connectors.okta import OktaSettings
from connectors.onelogin import OneLoginConfig
from connectors.pingone import PingOneConfig

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "policy.yml"

GOOD = """\
audit_channel: "#audit"
connectors:
  demo:
    type: memory
    users: [{email: a@x.io}, {email: b@x.io}, {email: c@x.io}]
    groups: {devs: [a@x.io], leads: [b@x.io, c@x.io], target: []}
eligibilities:
  - name: prod
    connector: demo
    target: {group: target}
    requestors: {groups: [devs]}
    max_duration: 8h
    approvals:
      - approvers: {groups: [leads]}
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        parse_policy(textwrap.dedent(text), source="policy.yml", env=env or {})
    assert str(exc.value) == "\n".join(exc.value.problems)
    return exc.value.problems


def with_elig(**changes: Any) -> str:
    data = yaml.safe_load(GOOD)
    data["eligibilities"][0].update(changes)
    return yaml.safe_dump(data, sort_keys=False)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_a_good_policy_loads_with_its_hash_and_raw_data() -> None:
    loaded = parse_policy(GOOD, source="p.yml", env={})
    assert loaded.path == "p.yml" and re.fullmatch(r"[0-9a-f]{64}", loaded.sha256)
    assert loaded.policy.eligibility("prod") is not None and loaded.raw["audit_channel"] == "#audit"


def test_bad_yaml_names_the_file_and_line() -> None:
    [problem] = problems_of("audit_channel: x\nconnectors: a: b\n")
    assert problem == "policy.yml:2: not valid YAML: mapping values are not allowed here"


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_a_policy_that_is_not_a_mapping_is_refused(text: str) -> None:
    assert problems_of(text) == ["policy.yml: the policy must be a mapping with audit_channel, connectors, "
                                 "eligibilities"]


def test_unknown_keys_name_their_line_and_path() -> None:
    text = with_elig(max_duraton="8h")
    [problem] = problems_of(text)
    assert problem == (f"policy.yml:{line_of(text, 'max_duraton')}: eligibilities[prod].max_duraton: "
                       "Extra inputs are not permitted")


def test_an_unknown_top_level_key_is_refused() -> None:
    [problem] = problems_of(GOOD + "audit_chanel: '#x'\n")
    assert problem.startswith(f"policy.yml:{line_of(GOOD, 'leads]}') + 1}: audit_chanel: Extra inputs")


def test_a_missing_required_key_names_the_enclosing_path() -> None:
    text = with_elig(max_duration=None)
    data = yaml.safe_load(text)
    del data["eligibilities"][0]["max_duration"]
    [problem] = problems_of(yaml.safe_dump(data, sort_keys=False))
    assert re.match(r"policy\.yml:\d+: eligibilities\[prod\]\.max_duration: Field required", problem)


def test_a_missing_connector_names_the_line_that_refers_to_it() -> None:
    text = with_elig(connector="okta")
    assert problems_of(text) == [f"policy.yml:{line_of(text, 'connector: okta')}: eligibilities[prod].connector: "
                                 "eligibility 'prod' uses unknown connector 'okta'"]


def test_a_connector_without_a_type_is_named() -> None:
    text = GOOD.replace("    type: memory\n", "")
    assert problems_of(text) == [f"policy.yml:{line_of(text, 'demo:')}: connectors.demo: "
                                 "connector 'demo' needs a 'type'"]


def test_duplicate_eligibility_names_point_at_the_second_one() -> None:
    data = yaml.safe_load(GOOD)
    data["eligibilities"].append(dict(data["eligibilities"][0]))
    text = yaml.safe_dump(data, sort_keys=False)
    [problem] = problems_of(text)
    second = [i for i, line in enumerate(text.splitlines(), start=1) if "name: prod" in line][1]
    assert problem == f"policy.yml:{second}: eligibilities[1].name: eligibility names must be unique: prod"


def test_an_unknown_directory_connector_is_named() -> None:
    text = GOOD + "directory: ldap\n"
    assert problems_of(text) == [f"policy.yml:{line_of(text, 'directory:')}: directory: "
                                 "directory names unknown connector 'ldap'"]


def test_more_than_three_layers_are_refused_at_the_eligibility() -> None:
    text = with_elig(approvals=[{"approvers": {"groups": ["leads"]}}] * 4)
    [problem] = problems_of(text)
    assert problem == f"policy.yml:{line_of(text, 'name: prod')}: eligibilities[prod]: at most 3 approval layers, got 4"


def test_a_default_duration_above_the_max_is_refused() -> None:
    text = with_elig(default_duration="9h")
    [problem] = problems_of(text)
    assert problem == (f"policy.yml:{line_of(text, 'name: prod')}: eligibilities[prod]: "
                       "default_duration is longer than max_duration")


@pytest.mark.parametrize("bad", ["8 hours", "0m", "-1h", "h"])
def test_bad_durations_name_their_line_and_path(bad: str) -> None:
    text = with_elig(max_duration=bad)
    [problem] = problems_of(text)
    assert problem.startswith(f"policy.yml:{line_of(text, 'max_duration')}: eligibilities[prod].max_duration: ")
    assert "30m, 8h or 2d" in problem or "longer than zero" in problem


def test_a_bad_layer_timeout_names_the_layer() -> None:
    text = with_elig(approvals=[{"approvers": {"groups": ["leads"]}, "timeout": "soon"}])
    [problem] = problems_of(text)
    assert problem.startswith(f"policy.yml:{line_of(text, 'timeout')}: eligibilities[prod].approvals[0].timeout: ")


def test_every_problem_is_reported_not_only_the_first() -> None:
    data = yaml.safe_load(GOOD)
    data["eligibilities"][0]["max_duration"] = "forever"
    data["eligibilities"][0]["colour"] = "red"
    data["audit_channel"] = ["not", "a", "string"]
    problems = problems_of(yaml.safe_dump(data, sort_keys=False))
    assert [p.split(": ")[1] for p in problems] == ["audit_channel", "eligibilities[prod].max_duration",
                                                    "eligibilities[prod].colour"]


def test_a_schema_error_does_not_hide_the_cross_reference_errors() -> None:
    """A bad duration stops the model before its cross-reference check: those are checked on the file."""
    data = yaml.safe_load(GOOD)
    data["eligibilities"][0]["max_duration"] = "8 hours"
    second = dict(data["eligibilities"][0], name="four-layers", connector="okta", max_duration="1h")
    second["approvals"] = [{"approvers": {"groups": ["leads"]}}] * 4
    data["eligibilities"].append(second)
    data["eligibilities"].append(dict(data["eligibilities"][0], name="third", connector="entra", max_duration="1h"))
    data["directory"] = "nowhere"
    text = yaml.safe_dump(data, sort_keys=False)
    problems = problems_of(text)
    assert [p.split(": ", 2)[1:] for p in problems] == [
        ["eligibilities[prod].max_duration", "'8 hours' is not a duration; write it like 30m, 8h or 2d"],
        ["eligibilities[four-layers]", "at most 3 approval layers, got 4"],
        ["eligibilities[four-layers].connector", "eligibility 'four-layers' uses unknown connector 'okta'"],
        ["eligibilities[third].connector", "eligibility 'third' uses unknown connector 'entra'"],
        ["directory", "directory names unknown connector 'nowhere'"]]
    assert problems[2].startswith(f"policy.yml:{line_of(text, 'connector: okta')}: ")


def test_cross_reference_errors_alone_are_each_reported_once_where_they_are() -> None:
    text = with_elig(connector="okta") + "recovery_accounts: [{email: r@x.io, connector: gone}]\n"
    assert [p.split(": ", 2)[1] for p in problems_of(text)] == ["eligibilities[prod].connector",
                                                                "recovery_accounts[0].connector"]


def test_environment_variables_are_interpolated() -> None:
    text = GOOD.replace('"#audit"', '"#${CHANNEL}-audit"')
    assert parse_policy(text, env={"CHANNEL": "ops"}).policy.audit_channel == "#ops-audit"


def test_a_missing_environment_variable_names_file_line_and_path() -> None:
    text = GOOD.replace("    type: memory\n", "    type: memory\n    token: ${DEMO_TOKEN}\n")
    assert problems_of(text) == [f"policy.yml:{line_of(text, 'DEMO_TOKEN')}: connectors.demo.token: "
                                 "environment variable DEMO_TOKEN is not set"]


def test_every_missing_environment_variable_is_reported() -> None:
    text = GOOD.replace('"#audit"', '"${A}"').replace("[b@x.io, c@x.io]", "['${B}', c@x.io]")
    problems = problems_of(text)
    assert [p.split(": ", 2)[1:] for p in problems] == [
        ["audit_channel", "environment variable A is not set"],
        ["connectors.demo.groups.leads[0]", "environment variable B is not set"]]


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nope\.yml: cannot read the policy file"):
        load_policy(tmp_path / "nope.yml")


def test_load_policy_names_the_file_it_read(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text(with_elig(connector="okta"))
    with pytest.raises(PolicyError, match=re.escape(f"{path}:")):
        load_policy(path, env={})


# --- risk warnings -------------------------------------------------------------------------------


def warnings_for(text: str) -> list[str]:
    policy = parse_policy(text, env={}).policy
    return risk_warnings(policy, memory_directory(policy))


def test_a_well_staffed_policy_has_no_warnings() -> None:
    assert warnings_for(GOOD) == []


def test_a_layer_with_fewer_than_two_approvers_is_warned_about() -> None:
    text = with_elig(approvals=[{"approvers": {"users": ["b@x.io"]}}])
    assert warnings_for(text) == ["prod: layer 1 has 1 approver(s); fewer than 2 is a single point of failure"]


def test_a_layer_only_the_requester_could_approve_is_warned_about() -> None:
    text = with_elig(approvals=[{"approvers": {"groups": ["devs"]}}])
    warnings = warnings_for(text)
    assert "prod: layer 1 has no approver who is not also the requester" in warnings


def test_a_layer_that_cannot_reach_min_approvals_without_the_requester_is_warned_about() -> None:
    text = with_elig(requestors={"groups": ["leads"]}, approvals=[{"approvers": {"groups": ["leads"]},
                                                                   "min_approvals": 2}])
    assert warnings_for(text) == ["prod: layer 1 cannot reach min_approvals=2 for some requesters once they "
                                  "are excluded"]


def test_a_max_duration_above_the_ceiling_is_warned_about() -> None:
    assert warnings_for(with_elig(max_duration="12h")) == []
    assert warnings_for(with_elig(max_duration="13h")) == [
        "prod: max_duration 13h is above the ceiling 12h"]
    assert warnings_for(with_elig(max_duration="13h") + "settings: {max_duration_ceiling: 1d}\n") == []


def test_a_policy_without_approval_layers_is_warned_about() -> None:
    assert warnings_for(with_elig(approvals=[])) == ["prod: no approval layers — requests are approved "
                                                     "automatically"]


def test_a_layer_whose_fan_out_is_above_warn_max_approvers_is_warned_about() -> None:
    """Every approver of a layer is asked by DM for every request: offline, where the connector declares its
    groups (memory), ``validate`` says so and points at an approver channel; elsewhere ``check --live`` does."""
    text = with_elig(approvals=[{"approvers": {"groups": ["leads"], "users": ["z@x.io"]}}])
    assert warnings_for(text) == []
    warnings = warnings_for(text + "settings: {warn_max_approvers: 2}\n")
    assert warnings == ["prod: layer 1 asks 3 approvers by DM for every request (more than "
                        "settings.warn_max_approvers, 2); ask a smaller group (an on-call rota) or post the ask "
                        "to an approver channel instead (approvers: {channel: ...})"]


def test_groups_of_unknown_size_are_not_guessed_at() -> None:
    policy = parse_policy(with_elig(approvals=[{"approvers": {"groups": ["elsewhere"]}}]), env={}).policy
    assert risk_warnings(policy, {}) == []


# --- the shipped example -------------------------------------------------------------------------


def test_the_example_policy_validates_with_only_its_deliberate_warning() -> None:
    loaded = load_policy(EXAMPLE, env={})
    policy = loaded.policy
    assert [e.name for e in policy.eligibilities] == ["prod-admin", "db-readonly", "logs-viewer", "db-debugging"]
    assert risk_warnings(policy, memory_directory(policy)) == [
        "logs-viewer: no approval layers — requests are approved automatically"]
    groups = memory_directory(policy)
    assert groups["leads"] == {"bob@example.com", "carol@example.com"}
    assert groups["security"] == {"dave@example.com", "erin@example.com"}
    assert groups["engineers"] == {"alice@example.com"}
    assert policy.admins.users == ("root@example.com",)


def test_the_example_shows_a_transition_business_hours_and_the_review_schedule() -> None:
    raw = load_policy(EXAMPLE, env={}).raw
    [transition] = [e["transition"] for e in raw["eligibilities"] if "transition" in e]
    assert {"static_access_until", "notify_days", "keep_standing"} <= set(transition)
    assert "business_hours" in raw and "reports" in raw and "audit_anchor_every" in raw["settings"]


SETTINGS_MODELS: dict[str, Any] = {"okta": OktaSettings, "entra": EntraSettings, "google": GoogleWorkspaceConfig,
                                   "onelogin": OneLoginConfig, "pingone": PingOneConfig}


def test_the_example_connector_blocks_are_valid_settings_of_their_connectors() -> None:
    text = EXAMPLE.read_text()
    block = text[text.index("# BEGIN connector examples"):text.index("# END connector examples")]
    uncommented = "\n".join(line.removeprefix("  # ") for line in block.splitlines()[1:])
    env = {name: "secret-value" for name in re.findall(r"\$\{(\w+)\}", uncommented)}
    examples = parse_policy("audit_channel: x\nconnectors:\n" + textwrap.indent(uncommented, "  "),
                            source="examples", env=env).policy.connectors
    assert sorted(examples) == sorted(SETTINGS_MODELS)
    for settings in examples.values():
        SETTINGS_MODELS[settings["type"]].model_validate(settings)
