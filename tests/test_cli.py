"""The ``jitbot`` command line, in-process (output) and as a subprocess (exit codes, signals)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.cli import main, parse_since
from bot.domain.requests import Decision
from bot.policy_file import LoadedPolicy
from bot.services.clock import ManualClock
from storage.db import Database
from tests.services.stack import make_stack

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "policy.yml"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "jitbot"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def policy_file(tmp_path: Path, policy_text: str) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(policy_text)
    return path


@pytest.fixture
def db_file(tmp_path: Path, loaded_policy: LoadedPolicy) -> Path:
    """A SQLite database, a minute apart: alice's prod-admin (active), bob's readonly (auto-approved,
    active), erin's prod-admin (pending at layer 1)."""
    path = tmp_path / "jitbot.db"

    async def build() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        clock = ManualClock()
        s = await make_stack(db, loaded_policy, clock)
        prod = await s.requests.submit(requester="alice@example.com", eligibility="prod-admin",
                                       duration=timedelta(hours=1), justification="fix the outage", ticket="OPS-1")
        await s.approvals.decide(request_id=prod.id, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
        await s.approvals.decide(request_id=prod.id, layer=2, approver="dave@example.com", decision=Decision.APPROVE)
        clock.advance(timedelta(minutes=1))
        await s.requests.submit(requester="bob@example.com", eligibility="readonly", duration=timedelta(hours=2),
                                justification="read the logs")
        await s.worker.run_until_idle()
        clock.advance(timedelta(minutes=1))
        await s.requests.submit(requester="erin@example.com", eligibility="prod-admin",
                                duration=timedelta(hours=1), justification="deploy", ticket="OPS-2")
        await db.dispose()

    asyncio.run(build())
    return path


def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


# --- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [[], ["policy"], ["bogus"], ["policy", "validate"], ["audit", "export",
                                  "--format", "xml"], ["audit", "export", "--since", "last tuesday"],
                                  ["access", "list", "--activ"]])
def test_bad_arguments_exit_2_with_a_usage_message(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: jitbot" in err and "error:" in err


@pytest.mark.parametrize("argv", [[], ["policy", "validate"], ["policy", "show"], ["access", "list"],
                                  ["audit", "verify"], ["audit", "export"], ["connectors", "check"], ["worker"],
                                  ["access", "revoke"], ["access", "retry"],
                                  ["serve"], ["playground"]])
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: jitbot")


def test_bad_arguments_exit_2_as_a_process() -> None:
    result = run("audit", "export", "--format", "xml")
    assert result.returncode == 2
    assert "invalid choice: 'xml'" in result.stderr


def test_since_takes_a_date_a_timestamp_or_a_duration_ago() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert parse_since("2026-01-01", now=now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_since("2026-01-01T08:30:00+01:00", now=now) == datetime(2026, 1, 1, 7, 30, tzinfo=UTC)
    assert parse_since("7d", now=now) == datetime(2026, 2, 22, 12, tzinfo=UTC)


# --- policy --------------------------------------------------------------------------------------


def test_policy_validate_accepts_the_example_and_prints_its_warning(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "validate", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert "valid (4 eligibilities, 1 connectors, 1 warning)" in out
    assert "warning: " in err and "logs-viewer: no approval layers" in err


def test_policy_validate_flags_groups_the_memory_connector_does_not_declare(
        tmp_path: Path, policy_text: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yml"
    path.write_text(policy_text.replace("target: {group: readonly}", "target: {group: read-only}")
                    .replace("approvers: {groups: [security]}", "approvers: {groups: [securty]}"))
    assert main(["policy", "validate", str(path)]) == 0  # valid: warnings, failing only with --strict
    err = capsys.readouterr().err
    assert "readonly: target group 'read-only' does not exist on the memory connector 'demo'" in err
    assert "prod-admin: layer 2 approvers: group 'securty' does not exist on the memory connector 'demo'" in err
    assert "requestors" not in err  # engineers exists
    assert main(["policy", "validate", "--strict", str(path)]) == 1


def test_policy_validate_strict_fails_on_warnings() -> None:
    assert main(["policy", "validate", "--strict", str(EXAMPLE)]) == 1


def test_policy_validate_prints_every_problem_and_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(EXAMPLE.read_text().replace("max_duration: 8h", "max_duration: 8 hours") + "colour: blue\n")
    result = run("policy", "validate", str(bad))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert any(f"{bad}:" in line and "eligibilities[prod-admin].max_duration" in line for line in lines)
    assert any("colour: Extra inputs are not permitted" in line for line in lines)
    assert lines[-1].endswith("invalid (2 problems)")
    assert result.stdout == ""


def test_policy_validate_refuses_bad_connector_settings(tmp_path: Path, policy_text: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yml"
    path.write_text(policy_text.replace("      readonly: []", "      readonly: [mallory@example.com]"))
    assert main(["policy", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:5: connectors.demo: " in err and "unknown user 'mallory@example.com'" in err
    assert err.splitlines()[-1] == f"{path}: invalid (1 problem)"


def test_policy_validate_reports_schema_and_connector_problems_in_one_run(tmp_path: Path, policy_text: str,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yml"
    path.write_text(policy_text.replace("      readonly: []", "      readonly: [mallory@example.com]")
                    .replace("max_duration: 4h", "max_duration: 4 hours"))
    assert main(["policy", "validate", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert any("eligibilities[readonly].max_duration: '4 hours' is not a duration" in line for line in err)
    assert any(f"{path}:5: connectors.demo: " in line and "unknown user 'mallory@example.com'" in line
               for line in err)
    assert err[-1] == f"{path}: invalid (2 problems)"


def test_policy_validate_checks_the_call_wrappers_pacing_keys(tmp_path: Path, policy_text: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yml"
    path.write_text(policy_text.replace("    type: memory\n", "    type: memory\n    max_concurrency: 4\n"))
    assert main(["policy", "validate", str(path)]) == 0
    path.write_text(policy_text.replace("    type: memory\n", "    type: memory\n    max_concurrency: lots\n"
                                                            "    rate_per_second: 0\n"))
    assert main(["policy", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "connectors.demo.max_concurrency: must be a whole number of at least 1, got 'lots'" in err
    assert "connectors.demo.rate_per_second: must be a number above 0, got 0" in err


_SLACK_ENV = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s" * 32, "JITBOT_POLICY": ""}


@pytest.mark.parametrize("command", [["serve"], ["worker", "--log-messages"]])
def test_serve_and_worker_refuse_bad_connector_settings_as_validate_does(tmp_path: Path, policy_text: str,
                                                                         command: list[str]) -> None:
    """One line, the one ``policy validate`` prints, exit 2, no traceback; and no database created."""
    path = tmp_path / "p.yml"
    path.write_text(policy_text.replace("      readonly: []", "      readonly: [mallory@example.com]"))
    validate = run("policy", "validate", str(path))
    [line] = [x for x in validate.stderr.splitlines() if "connectors.demo" in x]
    db = tmp_path / "jitbot.db"
    result = run(*command, "--policy", str(path), env={**_SLACK_ENV, "DATABASE_URL": url(db)})
    assert result.returncode == 2, result.stderr
    assert line in result.stderr and "Traceback" not in result.stderr
    assert not db.exists()


def test_serve_without_a_policy_file_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "jitbot.db"
    result = run("serve", "--policy", str(tmp_path / "missing.yml"), env={**_SLACK_ENV, "DATABASE_URL": url(db)})
    assert result.returncode == 2
    assert "cannot read the policy file" in result.stderr and "Traceback" not in result.stderr
    assert not db.exists()


def test_policy_validate_of_a_missing_file_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "validate", "/nonexistent/policy.yml"]) == 1
    assert "cannot read the policy file" in capsys.readouterr().err


def test_policy_show_tabulates_eligibilities_layers_and_durations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "show", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "audit channel: #jit-audit" in out
    header = next(line for line in out.splitlines() if line.startswith("ELIGIBILITY"))
    assert header.split() == ["ELIGIBILITY", "GRANTS", "REQUESTORS", "DEFAULT", "MAX", "WARN", "TICKET",
                              "APPROVALS"]
    prod = next(line for line in out.splitlines() if line.startswith("prod-admin"))
    assert prod.split()[:7] == ["prod-admin", "demo:group:prod-admins", "@engineers", "2h", "8h", "15m", "yes"]
    assert "1: @leads ×1 (4h) → 2: @security ×1 (4h)" in prod
    assert "auto-approved" in next(line for line in out.splitlines() if line.startswith("logs-viewer"))


# --- access and audit ----------------------------------------------------------------------------


def test_access_list_json_shows_status_and_expiry(db_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["access", "list", "--json", "--database", url(db_file)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["eligibility"], r["requester"], r["status"]) for r in rows] == [  # newest first
        ("prod-admin", "erin@example.com", "pending"), ("readonly", "bob@example.com", "active"),
        ("prod-admin", "alice@example.com", "active")]
    # approved at 08:00 for 2h, granted a minute later: the wait comes out of the approved window
    assert rows[2]["expires_at"] == "2026-01-05T10:00:00+00:00" and rows[2]["ticket"] == "OPS-1"
    assert rows[0]["expires_at"] is None and rows[0]["layer"] == "1/2"


def test_access_list_active_reads_database_url_from_the_environment(db_file: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", url(db_file))
    assert main(["access", "list", "--active"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["ID", "ELIGIBILITY", "REQUESTER", "STATUS"]
    assert len(out) == 3 and all(" active " in line for line in out[1:])
    assert "bob@example.com" in out[1] and "2026-01-05 11:01" in out[1]


def test_commands_refuse_to_create_a_missing_sqlite_database(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--database", url(tmp_path / "nope.db")]) == 1
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()


def test_audit_verify_accepts_an_intact_chain(db_file: Path) -> None:
    result = run("audit", "verify", "--database", url(db_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("audit log intact: ")


def test_audit_verify_names_the_first_row_edited_by_hand(db_file: Path) -> None:
    with sqlite3.connect(db_file) as conn:
        conn.execute("UPDATE event SET actor = 'mallory@example.com' WHERE id = 3")
    result = run("audit", "verify", "--database", url(db_file))
    assert result.returncode == 1
    assert "BROKEN at event id 3: content does not match its hash (row was edited)" in result.stderr
    assert "(2 earlier events verified)" in result.stderr


def test_audit_verify_notices_a_deleted_row(db_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(db_file) as conn:
        conn.execute("DELETE FROM event WHERE id = 2")
    assert main(["audit", "verify", "--database", url(db_file)]) == 1
    assert "BROKEN at event id 3: does not link to the previous event" in capsys.readouterr().err


def _anchor_line(db_file: Path) -> str:
    with sqlite3.connect(db_file) as conn:
        count, head = conn.execute("SELECT count(*), (SELECT hash FROM event ORDER BY id DESC LIMIT 1) "
                                   "FROM event").fetchone()
    return f"jitbot-audit-anchor v1 count={count} head={head} at=2026-01-05T10:05:00Z"


def test_audit_verify_checks_a_clean_log_against_anchors_copied_from_slack(db_file: Path, tmp_path: Path) -> None:
    pasted = tmp_path / "anchors.txt"
    posted = "Audit log anchor (keep it: `jitbot audit verify --anchor` checks the log against it):"
    pasted.write_text(f"jitbot APP 10:05\n{posted} `{_anchor_line(db_file)}` _(by jitbot)_\n")
    result = run("audit", "verify", "--anchors", str(pasted), "--database", url(db_file))
    assert result.returncode == 0, result.stderr
    assert "every request and grant has its events" in result.stdout
    assert "1 anchor matched; the latest saw" in result.stdout


@pytest.mark.parametrize("cut", ["WHERE id > (SELECT max(id) - 3 FROM event)", ""])
def test_audit_verify_catches_events_deleted_from_the_end_with_an_anchor(db_file: Path, cut: str,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The last events deleted (all of them with an empty ``cut``): the remaining chain links up, but the
    anchor posted before saw more."""
    anchor = _anchor_line(db_file)
    with sqlite3.connect(db_file) as conn:
        conn.execute(f"DELETE FROM event {cut}")
    assert main(["audit", "verify", "--anchor", anchor, "--database", url(db_file)]) == 1
    err = capsys.readouterr().err
    assert "audit log INCOMPLETE: the log has" in err and "were deleted from its end" in err


def test_audit_verify_catches_a_request_whose_events_were_cut(db_file: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Without anchors the last event (erin's ``requested``) cut off is still missed by no one: her
    request row has no event that created it."""
    with sqlite3.connect(db_file) as conn:
        conn.execute("DELETE FROM event WHERE id = (SELECT max(id) FROM event)")
    assert main(["audit", "verify", "--database", url(db_file)]) == 1
    assert "has no event that created it" in capsys.readouterr().err


def test_audit_verify_refuses_a_malformed_anchor(db_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--anchor", "jitbot-audit-anchor v1 count=3 head=zz", "--database",
                 url(db_file)]) == 2
    assert "not an anchor line" in capsys.readouterr().err


def test_audit_export_jsonl_writes_every_event_in_order(db_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "export", "--format", "jsonl", "--database", url(db_file)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "requested" and events[0]["detail"]["ticket"] == "OPS-1"
    assert all(e["prev_hash"] == p["hash"] for p, e in zip(events, events[1:], strict=False))


def test_audit_export_csv_to_a_file_since_a_date(db_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.csv"
    result = run("audit", "export", "--format", "csv", "--since", "2026-01-01", "--output", str(out),
                 "--database", url(db_file))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert rows and rows[0]["kind"] == "requested" and json.loads(rows[0]["detail"])["ticket"] == "OPS-1"
    assert f"wrote {len(rows)} events" in result.stderr
    later = run("audit", "export", "--since", "2026-01-06", "--database", url(db_file))
    assert later.returncode == 0 and later.stdout == ""


# --- connectors and worker -----------------------------------------------------------------------


def test_connectors_check_reports_the_memory_connector(policy_file: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["connectors", "check", "--policy", str(policy_file)]) == 0
    assert capsys.readouterr().out.startswith("demo (memory)\n  ✓ directory: 6 users, 5 groups declared\n")


def test_connectors_check_of_an_unknown_name_exits_2(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["connectors", "check", "okta", "--policy", str(policy_file)]) == 2
    assert "no connector 'okta'" in capsys.readouterr().err


def test_connectors_check_fails_on_bad_connector_settings(tmp_path: Path, policy_text: str) -> None:
    path = tmp_path / "p.yml"
    path.write_text(policy_text.replace("  demo:\n    type: memory\n", "  demo:\n    type: memory\n"
                                        "  corp:\n    type: okta\n    org_url: http://insecure\n"))
    result = run("connectors", "check", env={"JITBOT_POLICY": str(path)})
    assert result.returncode == 1
    assert "✓ directory" in result.stdout and "corp (okta)\n  ✗ configuration: okta connector 'corp'" in result.stdout


def test_worker_without_a_slack_token_refuses_to_start_unless_told_to_log_messages(
        policy_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    assert main(["worker", "--policy", str(policy_file)]) == 2
    err = capsys.readouterr().err
    assert "SLACK_BOT_TOKEN is not set" in err and "--log-messages" in err


def test_worker_runs_due_work_until_sigterm(tmp_path: Path, policy_file: Path,
                                            loaded_policy: LoadedPolicy) -> None:
    db_file = tmp_path / "worker.db"

    async def submit_without_a_worker() -> None:
        db = Database(url(db_file))
        s = await make_stack(db, loaded_policy, ManualClock(datetime.now(UTC) - timedelta(seconds=1)))
        await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                duration=timedelta(hours=1), justification="read the logs")
        await db.dispose()

    asyncio.run(submit_without_a_worker())
    script = Path(sys.executable).parent / "jitbot"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]
    proc = subprocess.Popen([*cmd, "worker", "--log-messages", "--interval", "0.2", "--policy", str(policy_file),
                             "--database", url(db_file)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline, status = time.monotonic() + 30, None
        pending = 1
        while time.monotonic() < deadline and (status != "active" or pending) and proc.poll() is None:
            time.sleep(0.2)
            with sqlite3.connect(db_file) as conn:
                status = conn.execute("SELECT status FROM access_request").fetchone()[0]
                pending = conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert status == "active", err
    assert proc.returncode == 0, err
    assert "worker stopped after" in err and "notify requester" in err
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT count(*) FROM worker_heartbeat").fetchone()[0] == 1


def test_policy_validate_warns_about_what_the_slack_menu_would_cut(tmp_path: Path, policy_text: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Slack's option description holds 75 characters: a 77-character description used to make the /jit
    modal invalid (no modal, no message) while validate said nothing. Now it is cut, and validate says so."""
    path = tmp_path / "p.yml"
    path.write_text(policy_text.replace("description: Production admin", "description: " + "d" * 77)
                    .replace("description: Read-only console", "description: " + "r" * 75))
    assert main(["policy", "validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert (f"warning: {path}: prod-admin: the description is 77 characters; the /jit menu shows at most 75 "
            "(the rest is cut)") in err.splitlines()
    assert "readonly: the description" not in err
    assert main(["policy", "validate", "--strict", str(path)]) == 1
