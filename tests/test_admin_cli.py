"""``jitbot access revoke|retry``: the administrators' Slack commands from the command line — the same
rule (an admin of the policy, now), each use audited under that name, and the revocation carried out
by the worker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.cli import main
from bot.policy_file import LoadedPolicy
from bot.services.clock import ManualClock
from storage.db import Database
from storage.tables import Event, Grant
from tests.services.stack import Stack, make_stack


@pytest.fixture
def policy_file(tmp_path: Path, policy_text: str) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(policy_text)
    return path


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def _stack(path: Path, loaded: LoadedPolicy) -> Stack:
    # the command line runs on the system clock: so does this stack (its own moves only when told)
    return await make_stack(Database(_url(path)), loaded, ManualClock(datetime.now(UTC)), migrate=not path.exists())


def _active_readonly(path: Path, loaded: LoadedPolicy) -> str:
    """Bob's read-only access (auto-approved), granted by a worker pass; its request id."""
    async def build() -> str:
        s = await _stack(path, loaded)
        req = await s.requests.submit(requester="bob@example.com", eligibility="readonly",
                                      duration=timedelta(hours=2), justification="read the logs")
        await s.worker.run_until_idle()
        await s.rt.db.dispose()
        return req.id

    return asyncio.run(build())


async def _state(path: Path, request_id: str) -> tuple[str, list[tuple[str, str]]]:
    db = Database(_url(path))
    try:
        async with db.sessions() as s:
            status = (await s.execute(select(Grant.status).where(Grant.request_id == request_id))).scalar_one()  # type: ignore[call-overload]
            events = [(e.kind, e.actor) for e in (await s.execute(
                select(Event).where(Event.request_id == request_id).order_by(Event.id))).scalars()]  # type: ignore[arg-type]
        return str(status), events
    finally:
        await db.dispose()


def test_an_admin_revokes_from_the_command_line_and_the_worker_carries_it_out(
        tmp_path: Path, policy_file: Path, loaded_policy: LoadedPolicy, capsys: pytest.CaptureFixture[str]) -> None:
    db_file = tmp_path / "jitbot.db"
    rid = _active_readonly(db_file, loaded_policy)
    args = ["--policy", str(policy_file), "--database", _url(db_file)]
    status, before = asyncio.run(_state(db_file, rid))
    assert status == "active"

    # who you are is required, and must be an admin of the policy: nothing changes otherwise
    assert main(["access", "revoke", rid, *args]) == 2
    assert "--as EMAIL" in capsys.readouterr().err
    assert main(["access", "revoke", rid, "--as", "bob@example.com", *args]) == 1
    assert "Only JIT administrators can do that." in capsys.readouterr().err
    assert asyncio.run(_state(db_file, rid)) == ("active", before)

    # an admin: marked for revocation, audited under the admin's name; --wait with no worker running
    # says it was not done in time (and leaves it marked for the next worker)
    assert main(["access", "revoke", rid.lower(), "--as", "Root@Example.com", "--wait", "0.5", *args]) == 1
    out, err = capsys.readouterr()
    assert "being revoked by the running worker" in out and "was not revoked within 0.5 s" in err
    status, events = asyncio.run(_state(db_file, rid))
    assert status == "revoking" and events[len(before):] == [("revoked_requested", "root@example.com")]
    # again: refused, not recorded twice
    assert main(["access", "revoke", rid, "--as", "root@example.com", *args]) == 1
    assert "already ending" in capsys.readouterr().err
    assert len(asyncio.run(_state(db_file, rid))[1]) == len(events)

    async def worker_pass() -> None:
        s = await _stack(db_file, loaded_policy)
        await s.worker.run_until_idle()
        await s.rt.db.dispose()

    asyncio.run(worker_pass())
    status, events = asyncio.run(_state(db_file, rid))
    assert status == "ended" and events[-1][0] == "revoked", events


def test_retry_needs_a_failed_grant(tmp_path: Path, policy_file: Path, loaded_policy: LoadedPolicy,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    db_file = tmp_path / "jitbot.db"
    rid = _active_readonly(db_file, loaded_policy)
    args = ["--policy", str(policy_file), "--database", _url(db_file)]
    assert main(["access", "retry", rid, "--as", "root@example.com", *args]) == 1  # it is active, not failed
    assert capsys.readouterr().err.startswith("jitbot: ")
    assert main(["access", "retry", "R-NOSUCH", "--as", "root@example.com", *args]) == 1
    assert "There is no request R-NOSUCH" in capsys.readouterr().err
    # a database that is not there is said, not created
    elsewhere = tmp_path / "typo.db"
    assert main(["access", "revoke", rid, "--as", "root@example.com", "--policy", str(policy_file),
                 "--database", _url(elsewhere)]) == 1
    assert "no database at" in capsys.readouterr().err and not elsewhere.exists()


def test_access_show_prints_a_requests_whole_story(tmp_path: Path, loaded_policy: LoadedPolicy,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    db_file = tmp_path / "jitbot.db"
    rid = _active_readonly(db_file, loaded_policy)
    assert main(["access", "show", rid.lower(), "--database", _url(db_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{rid}  readonly  active")
    assert "grant G-" in out and "attempts     0" in out
    assert "requested" in out and "granted" in out and "approved→active" in out
    assert main(["access", "show", rid, "--json", "--database", _url(db_file)]) == 0
    import json

    story = json.loads(capsys.readouterr().out)
    assert [e["kind"] for e in story["events"]][-1] == "granted" and story["grants"][0]["status"] == "active"
    assert main(["access", "show", "R-NOSUCH", "--database", _url(db_file)]) == 1
    assert "no request R-NOSUCH" in capsys.readouterr().err


def test_the_audit_event_of_a_command_line_action_records_the_os_user_and_host(
        tmp_path: Path, policy_file: Path, loaded_policy: LoadedPolicy, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import pwd
    import socket

    db_file = tmp_path / "jitbot.db"
    rid = _active_readonly(db_file, loaded_policy)
    assert main(["access", "revoke", rid, "--as", "root@example.com", "--policy", str(policy_file),
                 "--database", _url(db_file)]) == 0

    async def detail() -> dict[str, object]:
        db = Database(_url(db_file))
        async with db.sessions() as s:
            event = (await s.execute(select(Event).where(Event.kind == "revoked_requested"))).scalar_one()  # type: ignore[arg-type]
        await db.dispose()
        return dict(event.detail)

    got = asyncio.run(detail())
    assert got["via"] == "cli" and got["host"] == socket.gethostname()
    assert got["os_user"] == pwd.getpwuid(os.getuid()).pw_name


def test_an_idp_outage_during_an_admin_command_is_one_line_never_a_traceback(
        tmp_path: Path, policy_text: str, loaded_policy: LoadedPolicy, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.base import Transient
    from connectors.memory import MemoryConnector

    db_file = tmp_path / "jitbot.db"
    rid = _active_readonly(db_file, loaded_policy)
    path = tmp_path / "groups.yml"
    path.write_text(policy_text.replace("admins: {users: [root@example.com]}", "admins: {groups: [security]}"))

    async def down(self: MemoryConnector, group: str) -> object:
        raise Transient("503 from the directory", user_message="The directory is having trouble.")

    monkeypatch.setattr(MemoryConnector, "list_members", down)
    assert main(["access", "revoke", rid, "--as", "dave@example.com", "--policy", str(path),
                 "--database", _url(db_file)]) == 1
    err = capsys.readouterr().err
    assert "identity provider did not answer for security" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_unexpected_error_is_one_line_never_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.access_show

    def boom(args: object) -> int:
        raise RuntimeError("something broke\nbadly")

    monkeypatch.setattr(bot.access_show, "cmd_access_show", boom)
    assert main(["access", "show", "R-X", "--database", _url(tmp_path / "x.db")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jitbot: unexpected error: RuntimeError: something broke badly") and "Traceback" not in err
