"""The PostgreSQL server the suite uses (tests/pg.py): its own throwaway one when ``JITBOT_TEST_PG`` is unset,
stopped and removed when the session ends; the named one, untouched, when it is set."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A temporary directory the server's unprivileged user can reach when the tests run as root
    (pytest's own lives in a root-only directory)."""
    path = Path(tempfile.mkdtemp(prefix="jitbot-pg-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JITBOT_TEST_PG"}
    return {**env, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT), **extra}  # the server's directory goes in tmp


def _postgres_processes_under(path: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "postgres" in cmdline and str(path) in cmdline:
            found.append(cmdline)
    return found


def test_a_session_without_jitbot_test_pg_starts_its_own_server_and_stops_it_at_the_end(tmp_path: Path) -> None:
    # A real pytest session that runs one PostgreSQL test and one SQLite-only test.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "tests/storage/test_pg_connection_check.py::test_reads_run_without_a_transaction_round_trip_and_writes_in_one",
         "tests/domain/test_durations.py"],
        cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and "skipped" not in done.stdout
    assert "PostgreSQL: a throwaway server at postgresql://postgres@127.0.0.1:" in done.stdout
    assert list(tmp_path.glob("jitbot-pg-*")) == []  # its data directory removed
    assert _postgres_processes_under(tmp_path) == []  # and no server left running


def test_the_throwaway_server_answers_on_tcp_and_other_databases_are_on_the_same_server(tmp_path: Path) -> None:
    script = """
import asyncio, asyncpg
from tests import pg
async def main():
    conn = await asyncpg.connect(pg.dsn())
    await conn.execute("CREATE DATABASE other")
    await conn.close()
    other = await asyncpg.connect(pg.database_dsn("other"))
    print(await other.fetchval("SELECT current_database()"), pg.address()[0], pg.started())
    await other.close()
asyncio.run(main())
pg.stop()
print(pg.started())
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["other", "127.0.0.1", "True", "False"]
    assert list(tmp_path.glob("jitbot-pg-*")) == []


def test_jitbot_test_pg_names_the_server_and_nothing_is_started(tmp_path: Path) -> None:
    script = """
from tests import pg
print(pg.dsn(), pg.url(), pg.database_dsn("other"), pg.url_at("127.0.0.1", 6000), *pg.address(), pg.started())
"""
    named = "postgresql://ci:secret@db.internal:6432/jit"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(tmp_path, JITBOT_TEST_PG=named),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        named, "postgresql+asyncpg://ci:secret@db.internal:6432/jit", "postgresql://ci:secret@db.internal:6432/other",
        "postgresql+asyncpg://ci:secret@127.0.0.1:6000/jit", "db.internal", "6432", "False"]
    assert list(tmp_path.iterdir()) == []
