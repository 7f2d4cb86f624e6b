"""A bundle's approval layers keep what its members' ask of who approves and how (bot/domain/bundles.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bot.domain.policy import Policy
from bot.domain.step_up import step_up_for

_OFF = {"provider": "corp", "approvers": False}
_ON = {"provider": "corp", "amr": ["mfa"]}


def _bundle(db: dict[str, Any], logs: dict[str, Any]) -> Any:
    policy = Policy.model_validate({
        "audit_channel": "#a", "public_url": "https://jitbot.example.com",
        "oidc_providers": {"corp": {"issuer": "https://corp.example.com", "client_id": "c", "client_secret": "s"}},
        "connectors": {"demo": {"type": "memory"}},
        "eligibilities": [
            {"name": "db", "connector": "demo", "target": {"group": "db"}, "requestors": {"groups": ["eng"]},
             "max_duration": "2h", "approvals": [{"approvers": {"groups": ["leads"]}}], **db},
            {"name": "logs", "connector": "demo", "target": {"group": "logs"}, "requestors": {"groups": ["eng"]},
             "max_duration": "2h", "approvals": [{"approvers": {"groups": ["sec"]}}], **logs},
            {"name": "debug", "bundle": ["db", "logs"]}]})
    return policy.eligibility("debug")


def test_a_members_layer_turning_step_up_off_does_not_turn_off_another_members() -> None:
    """db: fresh sign-in everywhere but its layer 1; logs: fresh sign-in on every layer. The bundle's
    layer 1 holds logs' approvers, so it needs logs' sign-in."""
    db = {"step_up": _ON, "approvals": [{"approvers": {"groups": ["leads"]}, "step_up": _OFF}]}
    b = _bundle(db, {"step_up": _ON})
    need = step_up_for(b.step_up, b.approvals[0].step_up)
    assert need is not None and need.amr == ("mfa",)


def test_a_layer_no_member_asks_a_sign_in_for_stays_without_one() -> None:
    db = {"step_up": _ON, "approvals": [{"approvers": {"groups": ["leads"]}, "step_up": _OFF}]}
    b = _bundle(db, {})
    assert step_up_for(b.step_up, b.approvals[0].step_up) is None


def test_a_later_members_layer_step_up_is_kept() -> None:
    b = _bundle({}, {"approvals": [{"approvers": {"groups": ["sec"]}, "step_up": _ON}]})
    need = step_up_for(b.step_up, b.approvals[0].step_up)
    assert need is not None and need.amr == ("mfa",)


def test_a_bundle_whose_members_need_different_sign_ins_on_one_layer_is_refused() -> None:
    """One approval of the bundle's layer can carry one fresh sign-in: members asking different ones
    (here: logs wants a phishing-resistant one) cannot both be met, so the policy is refused."""
    with pytest.raises(ValidationError, match="bundle 'debug'.*step_up"):
        _bundle({"step_up": _ON}, {"step_up": {"provider": "corp", "acr": ["phr"]}})


def test_after_hours_a_bundle_layer_goes_to_whoever_decides_each_member_then() -> None:
    """db's layer 1 goes to [night] outside business hours instead of [leads]: the bundle's layer 1,
    opened after hours, is [night] (db's) and [sec] (logs', which has no after-hours set), never [leads]."""
    db = {"approvals": [{"approvers": {"groups": ["leads"]}, "after_hours": {"groups": ["night"]}}]}
    b = _bundle(db, {})
    assert b.approvals[0].approver_set(after_hours=False).groups == ("leads", "sec")
    assert b.approvals[0].approver_set(after_hours=True).groups == ("night", "sec")
    plain = _bundle({}, {})
    assert plain.approvals[0].after_hours is None
