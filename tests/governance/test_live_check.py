"""``jitbot policy check --live``: every named group, role and user exists; approver groups have ≥ 2 members."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from tests.conftest import POLICY

BROKEN = POLICY.replace("requestors: {groups: [engineers]}\n    max_duration: 4h",
                        "requestors: {groups: [ghosts], users: [nobody@example.com]}\n    max_duration: 4h\n"
                        "    approvals:\n      - approvers: {groups: [prod-admins]}") \
    .replace("target: {group: readonly}", "target: {role: superuser}")


def test_a_policy_whose_names_all_exist_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    assert main(["policy", "check", str(path), "--live"]) == 0
    assert "every group, role and user exists" in capsys.readouterr().out


def test_missing_groups_roles_users_and_thin_approver_groups_are_listed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(BROKEN)
    assert main(["policy", "check", str(path), "--live"]) == 1
    err = capsys.readouterr().err
    assert "readonly: target role 'superuser' does not exist at demo" in err
    assert "readonly: requestors: group 'ghosts' does not exist at demo" in err
    assert "readonly: requestors: user nobody@example.com does not exist at demo" in err
    assert "readonly: approvals[1]: group 'prod-admins' has 1 member(s); approver groups need at least 2" in err
    assert "4 problem(s)" in err


def test_check_without_live_only_validates_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(BROKEN)
    assert main(["policy", "check", str(path)]) == 0
    assert "valid" in capsys.readouterr().out


def test_an_approver_group_too_large_to_dm_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY.replace("audit_channel:", "settings: {warn_max_approvers: 2}\naudit_channel:")
                    .replace("leads: [bob@example.com, carol@example.com]",
                             "leads: [bob@example.com, carol@example.com, dave@example.com]"))
    assert main(["policy", "check", str(path), "--live"]) == 1
    err = capsys.readouterr().err
    assert "prod-admin: approvals[1]: group 'leads' has 3 members, each asked by DM" in err
    assert "approver channel" in err
