"""The policy model: eligibilities, approval layers and their references, validated by pydantic."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from bot.domain.policy import ApprovalLayer, Eligibility, Policy, Principals, TargetSpec


def _layer(**kw: Any) -> dict[str, Any]:
    return {"approvers": {"groups": ["leads"]}, **kw}


def _elig(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "prod-admin", "connector": "demo", "target": {"group": "prod-admins"},
                            "requestors": {"groups": ["engineers"]}, "max_duration": "8h"}
    return {**base, **kw}


def _policy(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"audit_channel": "#audit", "connectors": {"demo": {"type": "memory"}},
                            "eligibilities": [_elig()]}
    return {**base, **kw}


def test_a_minimal_eligibility_defaults_to_its_max_duration_and_no_layers() -> None:
    e = Eligibility.model_validate(_elig())
    assert e.max_duration == timedelta(hours=8)
    assert e.default == timedelta(hours=8) and e.default_duration == timedelta(hours=8)
    assert e.approvals == ()
    assert e.warn_before == timedelta(minutes=15)
    assert not e.require_ticket


def test_durations_in_a_policy_are_written_like_8h() -> None:
    e = Eligibility.model_validate(_elig(max_duration="1d", default_duration="2h30m", warn_before="5m"))
    assert (e.max_duration, e.default, e.warn_before) == (timedelta(days=1), timedelta(hours=2, minutes=30),
                                                          timedelta(minutes=5))
    assert e.model_dump(mode="json")["default_duration"] == "2h30m"


def test_a_malformed_duration_is_refused() -> None:
    with pytest.raises(ValidationError, match="not a duration"):
        Eligibility.model_validate(_elig(max_duration="eight hours"))


def test_default_duration_may_not_exceed_max_duration() -> None:
    with pytest.raises(ValidationError, match="default_duration is longer than max_duration"):
        Eligibility.model_validate(_elig(max_duration="2h", default_duration="3h"))


def test_default_duration_equal_to_max_is_allowed() -> None:
    e = Eligibility.model_validate(_elig(max_duration="2h", default_duration="2h"))
    assert e.default == timedelta(hours=2)


def test_up_to_three_approval_layers_are_allowed() -> None:
    assert len(Eligibility.model_validate(_elig(approvals=[_layer()] * 3)).approvals) == 3


def test_more_than_three_approval_layers_are_refused() -> None:
    with pytest.raises(ValidationError, match="at most 3 approval layers"):
        Eligibility.model_validate(_elig(approvals=[_layer()] * 4))


def test_a_layer_defaults_to_one_approval_and_a_day_to_decide() -> None:
    layer = ApprovalLayer.model_validate(_layer())
    assert layer.min_approvals == 1 and layer.timeout == timedelta(hours=24)


def test_a_layer_needs_at_least_one_approver() -> None:
    with pytest.raises(ValidationError, match="at least one approver"):
        ApprovalLayer.model_validate({"approvers": {}})


@pytest.mark.parametrize("n", [0, -1, 11])
def test_min_approvals_is_bounded(n: int) -> None:
    with pytest.raises(ValidationError, match="min_approvals"):
        ApprovalLayer.model_validate(_layer(min_approvals=n))


def test_requestors_may_not_be_empty() -> None:
    with pytest.raises(ValidationError, match="requestors needs at least one"):
        Eligibility.model_validate(_elig(requestors={}))


@pytest.mark.parametrize("target", [{}, {"group": "a", "role": "b"}])
def test_a_target_is_exactly_one_group_or_role(target: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="exactly one of 'group' or 'role'"):
        TargetSpec.model_validate(target)


def test_a_target_says_its_kind_and_reference() -> None:
    assert (TargetSpec(group="g").kind, TargetSpec(group="g").ref) == ("group", "g")
    assert (TargetSpec(role="r").kind, TargetSpec(role="r").ref) == ("role", "r")


@pytest.mark.parametrize("name", ["Prod", "-x", "", "with space", "a" * 64])
def test_eligibility_names_are_lower_case_slugs(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        Eligibility.model_validate(_elig(name=name))


def test_unknown_keys_are_refused_at_every_level() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Eligibility.model_validate(_elig(max_duraton="8h"))
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Eligibility.model_validate(_elig(approvals=[_layer(approver_count=2)]))
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Policy.model_validate(_policy(audit_chanel="#x"))


def test_user_emails_are_normalised_to_lower_case() -> None:
    assert Principals(users=(" Alice@Example.COM ",)).users == ("alice@example.com",)


def test_a_policy_refers_only_to_connectors_it_declares() -> None:
    with pytest.raises(ValidationError, match="unknown connector 'okta'"):
        Policy.model_validate(_policy(eligibilities=[_elig(connector="okta")]))


def test_every_connector_needs_a_type() -> None:
    with pytest.raises(ValidationError, match="connector 'demo' needs a 'type'"):
        Policy.model_validate(_policy(connectors={"demo": {"users": []}}))


def test_the_directory_must_be_a_declared_connector() -> None:
    with pytest.raises(ValidationError, match="directory names unknown connector"):
        Policy.model_validate(_policy(directory="nowhere"))


def test_the_directory_defaults_to_the_first_connector() -> None:
    p = Policy.model_validate(_policy(connectors={"a": {"type": "memory"}, "demo": {"type": "memory"}}))
    assert p.directory_connector == "a"
    assert Policy.model_validate(_policy(directory="demo")).directory_connector == "demo"


def test_eligibility_names_are_unique() -> None:
    with pytest.raises(ValidationError, match="must be unique: prod-admin"):
        Policy.model_validate(_policy(eligibilities=[_elig(), _elig()]))


def test_eligibilities_are_found_by_name() -> None:
    p = Policy.model_validate(_policy())
    assert p.eligibility("prod-admin") is not None and p.eligibility("nope") is None


def test_policy_objects_are_immutable() -> None:
    e = Eligibility.model_validate(_elig())
    with pytest.raises(ValidationError):
        e.max_duration = timedelta(days=30)  # type: ignore[misc]
