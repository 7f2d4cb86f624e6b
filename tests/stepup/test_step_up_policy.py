"""step_up / oidc_providers / public_url in the policy: where it applies and clear messages for bad ones."""

from __future__ import annotations

import pytest

from bot.domain.step_up import step_up_for
from bot.policy_file import PolicyError, parse_policy
from tests.stepup.harness import CLIENT_SECRET, step_up_policy

ISSUER, PUBLIC = "https://corp.okta.example", "https://jitbot.example.com"


def test_a_layer_step_up_applies_to_that_layer_only_and_the_secret_stays_hidden() -> None:
    policy = parse_policy(step_up_policy(ISSUER, PUBLIC), env={}).policy
    elig = policy.eligibility("prod-admin")
    assert elig is not None
    assert step_up_for(elig.step_up, elig.approvals[0].step_up) is None
    needed = step_up_for(elig.step_up, elig.approvals[1].step_up)
    assert needed is not None and needed.amr == ("mfa",) and needed.max_age.total_seconds() == 300
    assert CLIENT_SECRET not in repr(policy) and CLIENT_SECRET not in str(policy.model_dump())


def test_an_eligibility_step_up_covers_its_layers_and_a_layer_can_turn_it_off() -> None:
    text = step_up_policy(ISSUER, PUBLIC, step_up="{provider: corp, approvers: false}").replace(
        "    require_ticket: true\n", "    require_ticket: true\n    step_up: {provider: corp, amr: mfa}\n", 1)
    elig = parse_policy(text, env={}).policy.eligibility("prod-admin")
    assert elig is not None
    first = step_up_for(elig.step_up, elig.approvals[0].step_up)
    assert first is not None and first.amr == ("mfa",)
    assert step_up_for(elig.step_up, elig.approvals[1].step_up) is None


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.replace("provider: corp", "provider: nope"), "step_up uses unknown oidc provider 'nope'"),
    (lambda t: t.replace(f"public_url: {PUBLIC}\n", ""), "step_up needs public_url"),
    (lambda t: t.replace(f"public_url: {PUBLIC}", "public_url: http://jitbot.example.com"), "step_up needs public_url"),
    (lambda t: t.replace(f"issuer: {ISSUER}", "issuer: http://corp.okta.example"), "oidc issuer must be an https URL"),
    (lambda t: t.replace("max_age: 5m", "max_age: 2h"), "step_up.max_age must be between 1m and 1h"),
])
def test_a_bad_step_up_is_refused_with_a_clear_message(change: object, message: str) -> None:
    text = change(step_up_policy(ISSUER, PUBLIC))  # type: ignore[operator]
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, env={})
    assert message in str(caught.value)
