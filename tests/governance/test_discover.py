"""``jitbot discover``: groups with member counts, JIT coverage, and privileged-looking candidates for JIT."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.cli import main
from bot.domain.requests import Decision
from bot.governance.discover import PRIVILEGED, discover, render_table
from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from tests.conftest import POLICY, DbFactory
from tests.connectors.idp_fixtures import (
    as_yaml,
    entra_fake,
    entra_settings,
    isolate_okta_sdk,
    okta_fake,
    okta_settings,
)
from tests.services.stack import make_stack

MEMORY = POLICY.replace("      readonly: []\n", "      readonly: []\n      DB-Owners: [dave@example.com]\n"
                        "      sre-superusers: []\n")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    isolate_okta_sdk(monkeypatch, tmp_path)


@pytest.mark.parametrize(("name", "privileged"), [
    ("prod-admins", True), ("Org Owners", True), ("ROOT", True), ("SuperUsers", True), ("super_user", True),
    ("privileged-access", True), ("sudoers", True), ("engineers", False), ("readonly", False), ("sales", False)])
def test_privileged_looking_names(name: str, privileged: bool) -> None:
    assert bool(PRIVILEGED.search(name)) is privileged


def test_discover_cli_table_and_json_on_the_memory_connector(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(MEMORY)
    common = ["--policy", str(policy), "--database", f"sqlite+aiosqlite:///{tmp_path / 'jitbot.db'}"]
    assert main(["discover", *common]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[1]  # candidates first
    assert first.split()[:5] == ["demo", "DB-Owners", "1", "1", "-"] and "candidate for JIT" in first
    assert "7 group(s); 2 covered by an eligibility; 1 privileged-looking" in out
    assert "standing members: plan a transition" in next(line for line in out.splitlines() if "prod-admins" in line)

    assert main(["discover", "--json", *common]) == 0
    groups = {g["name"]: g for g in json.loads(capsys.readouterr().out)["groups"]}
    assert set(groups) == {"engineers", "leads", "security", "prod-admins", "readonly", "DB-Owners", "sre-superusers"}
    assert groups["prod-admins"]["covered_by"] == ["prod-admin"]
    assert (groups["prod-admins"]["members"], groups["prod-admins"]["standing"]) == (1, 1)
    assert groups["engineers"]["members"] == 3 and not groups["engineers"]["privileged"]
    assert groups["sre-superusers"]["privileged"] and not groups["sre-superusers"]["candidate"]  # nobody in it
    assert [g for g in groups.values() if g["candidate"]] == [groups["DB-Owners"]]

    assert main(["discover", "--candidates", *common]) == 0
    out = capsys.readouterr().out
    assert "DB-Owners" in out and "engineers" not in out
    assert main(["discover", "--connector", "nope", *common]) == 2


async def test_discover_at_okta_and_entra_counts_grants_out_of_standing(db_factory: DbFactory) -> None:
    async with okta_fake(page_size=2) as (okta, okta_ca), entra_fake(page_size=2) as (entra, entra_ca):
        o_alice, o_erin = okta.add_user("alice@example.com"), okta.add_user("erin@example.com")
        o_ops = [okta.add_user(f"ops{i}@example.com") for i in range(3)]
        okta.add_group("prod-admins", [o_erin])
        okta.add_group("AWS Account Owners", o_ops)  # privileged, uncovered, 3 standing: candidate
        okta.add_group("marketing", [o_alice])
        okta.add_group("Everyone", [o_alice, o_erin, *o_ops])
        e_users = [entra.add_user(f"e{i}@example.com") for i in range(3)]
        entra.add_group("Global Administrators", e_users)  # counted through list_members (no stats)
        entra.add_group("interns", [])
        entra.add_group("Subscription Owners", [])  # privileged but empty: not a candidate
        text = (POLICY.replace("connectors:\n", "directory: demo\nconnectors:\n"
                               + as_yaml("okta", okta_settings(okta, okta_ca))
                               + as_yaml("entra", entra_settings(entra, entra_ca)), 1)
                .replace("    connector: demo\n    target: {group: prod-admins}\n",
                         "    connector: okta\n    target: {group: prod-admins}\n"))
        clock = ManualClock(datetime(2026, 3, 2, 10, tzinfo=UTC))
        s = await make_stack(db_factory(), parse_policy(text, env={}), clock)
        try:
            r = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                        duration=timedelta(hours=2), justification="incident", ticket="OPS-1")
            await s.approvals.decide(request_id=r.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
            await s.approvals.decide(request_id=r.id, layer=2, approver="dave@example.com", decision=Decision.APPROVE)
            await s.worker.run_until_idle()
            result = await discover(s.rt, ["okta", "entra", "demo"])
        finally:
            for conn in s.rt.connectors.values():
                await conn.aclose()
    assert not result.errors and not result.unsupported
    by = {(g.connector, g.name): g for g in result.groups}
    prod = by[("okta", "prod-admins")]
    assert (prod.members, prod.standing, prod.covered_by) == (2, 1, ["prod-admin"])  # alice holds a grant
    assert prod.note == "standing members: plan a transition"
    owners = by[("okta", "AWS Account Owners")]
    assert owners.candidate and (owners.members, owners.standing) == (3, 3)
    assert by[("okta", "Everyone")].members == 5 and not by[("okta", "Everyone")].candidate
    admins = by[("entra", "Global Administrators")]
    assert admins.candidate and admins.members == 3
    assert not by[("entra", "Subscription Owners")].candidate
    # the memory connector's prod-admins is no eligibility's target here, and erin holds it standing
    assert {(g.connector, g.name) for g in result.groups if g.candidate} == {
        ("okta", "AWS Account Owners"), ("entra", "Global Administrators"), ("demo", "prod-admins")}
    table = render_table(result, candidates_only=True)
    assert "AWS Account Owners" in table and "marketing" not in table
