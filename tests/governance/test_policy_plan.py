"""``jitbot policy plan|apply``: a Terraform-like diff against the applied policy, audited applies, drift."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.cli import main
from bot.governance.applied import read_applied
from storage.db import Database
from storage.tables import EligibilityRow, Event, OutboxMessage
from tests.conftest import POLICY

CHANGED = (POLICY.replace("max_duration: 8h", "max_duration: 4h")
           .replace("approvers: {groups: [security]}", "approvers: {groups: [security, leads]}")
           .split("  - name: readonly")[0] + """  - name: db-read
    connector: demo
    target: {group: readonly}
    requestors: {users: [alice@example.com]}
    max_duration: 1h
""")


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, str]:
    old, new = tmp_path / "policy.yml", tmp_path / "changed.yml"
    old.write_text(POLICY)
    new.write_text(CHANGED)
    return old, new, f"sqlite+aiosqlite:///{tmp_path / 'jitbot.db'}"


def _query(url: str, stmt: object) -> list[object]:
    async def run() -> list[object]:
        db = Database(url)
        try:
            async with db.sessions() as session:
                return list((await session.execute(stmt)).scalars().all())  # type: ignore[call-overload]
        finally:
            await db.dispose()
    return asyncio.run(run())


def test_plan_of_a_fresh_database_adds_every_eligibility_and_exits_2(
        files: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    old, _, url = files
    assert main(["policy", "plan", str(old), "--database", url]) == 2
    out = capsys.readouterr().out
    assert "no policy has been applied" in out
    assert '+ eligibility "prod-admin" will be created' in out
    assert '+ approvals[2].approvers.groups = ["security"]' in out
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in out


def test_apply_then_plan_shows_no_changes_and_exits_0(files: tuple[Path, Path, str],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    old, _, url = files
    assert main(["policy", "apply", str(old), "--database", url, "--actor", "ops@example.com"]) == 0
    capsys.readouterr()
    assert main(["policy", "plan", str(old), "--database", url]) == 0
    assert "No changes" in capsys.readouterr().out
    assert main(["policy", "apply", str(old), "--database", url]) == 0
    assert "already applied" in capsys.readouterr().out


def test_plan_lists_changed_layers_durations_and_removed_eligibilities(
        files: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    old, new, url = files
    main(["policy", "apply", str(old), "--database", url, "--actor", "ops@example.com"])
    capsys.readouterr()
    assert main(["policy", "plan", str(new), "--database", url]) == 2
    out = capsys.readouterr().out
    assert "drift: the file" in out and "applied by ops@example.com" in out
    assert '~ eligibility "prod-admin" will be updated in place' in out
    assert '~ max_duration: "8h" → "4h"' in out
    assert '~ approvals[2].approvers.groups: ["security"] → ["security", "leads"]' in out
    assert '- eligibility "readonly" will be destroyed' in out
    assert '+ eligibility "db-read" will be created' in out
    assert "Plan: 1 to add, 1 to change, 1 to destroy." in out


def test_apply_stores_rows_and_records_an_audited_diff(files: tuple[Path, Path, str]) -> None:
    old, new, url = files
    main(["policy", "apply", str(old), "--database", url, "--actor", "ops@example.com"])
    assert main(["policy", "apply", str(new), "--database", url, "--actor", "lead@example.com"]) == 0
    rows = {r.name: r for r in _query(url, select(EligibilityRow))}  # type: ignore[attr-defined]
    assert {n: r.active for n, r in rows.items()} == {"prod-admin": True, "readonly": False, "db-read": True}
    assert rows["prod-admin"].definition["max_duration"] == "4h"
    events = [e for e in _query(url, select(Event).order_by(Event.id)) if e.kind == "policy_applied"]  # type: ignore[attr-defined,arg-type]
    assert [e.actor for e in events] == ["ops@example.com", "lead@example.com"]
    last = events[-1].detail
    assert last["previous_sha256"] == events[0].detail["sha256"] != last["sha256"]
    assert {(e["name"], e["action"]) for e in last["diff"]["eligibilities"]} == {
        ("prod-admin", "update"), ("readonly", "delete"), ("db-read", "create")}
    lines = [m.payload["text"] for m in _query(url, select(OutboxMessage)) if m.kind == "audit"]  # type: ignore[attr-defined]
    assert any("1 to add, 1 to change, 1 to destroy" in t for t in lines)


def test_rows_edited_behind_apply_are_reported_as_drift(files: tuple[Path, Path, str],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    old, _, url = files
    main(["policy", "apply", str(old), "--database", url])

    async def tamper() -> None:
        db = Database(url)
        async with db.transaction() as session:
            await session.execute(update(EligibilityRow).where(EligibilityRow.name == "readonly")  # type: ignore[arg-type]
                                  .values(definition={"name": "readonly", "max_duration": "99h"}))
        assert not (await read_applied(db)).rows_digest_ok
        await db.dispose()

    asyncio.run(tamper())
    capsys.readouterr()
    assert main(["policy", "plan", str(old), "--database", url]) == 2
    out = capsys.readouterr().out
    assert "changed outside `jitbot policy apply`" in out
    assert '~ max_duration: "99h" → "4h"' in out


def test_plan_of_an_invalid_file_exits_1_and_says_why(files: tuple[Path, Path, str], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(POLICY.replace("max_duration: 8h", "max_duration: soon"))
    assert main(["policy", "plan", str(bad), "--database", files[2]]) == 1
    assert "nothing planned or applied" in capsys.readouterr().err
