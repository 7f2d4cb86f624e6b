"""Real ``jitbot`` processes for the tests that run them (replicas, Socket Mode): a fresh PostgreSQL database,
spawn, poll, stop; the policy and users those `serve` processes share."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bot.fakes import FakeSlack
from bot.slack import ids
from tests import pg

ROOT = Path(__file__).resolve().parents[2]


async def create_database() -> tuple[str, str]:
    """A new, empty database on the test server: (name, SQLAlchemy URL)."""
    name = "jitbot_r_" + secrets.token_hex(5)
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return name, pg.database_dsn(name).replace("postgresql://", "postgresql+asyncpg://", 1)


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def scalar(db_name: str, sql: str, *args: Any) -> Any:
    """One value read from database ``db_name`` (what a test checks of its processes' work)."""
    conn = await asyncpg.connect(pg.database_dsn(db_name))
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def fetch(db_name: str, sql: str, *args: Any) -> list[Any]:
    """The rows of ``sql`` in database ``db_name``."""
    conn = await asyncpg.connect(pg.database_dsn(db_name))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """One ``jitbot`` command in its own process; output goes to a log file shown on failure."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.log = log
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OKTA_", "SLACK_", "JITBOT_"))}
        clean.pop("DATABASE_URL", None)
        clean["PYTHONPATH"] = str(ROOT)
        self._out = log.open("wb")
        self.popen = subprocess.Popen([sys.executable, "-c", "from bot.cli import main; raise SystemExit(main())",
                                       *args], env={**clean, **env}, cwd=cwd, stdout=self._out,
                                      stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float, what: str,
                procs: list[Proc] | None = None) -> None:
    """Poll ``check`` until it holds; fail with the processes' output after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await check():
            return
        for p in procs or []:
            if p.popen.poll() is not None:
                raise AssertionError(f"{what}: process exited ({p.popen.returncode}):\n{p.output()[-4000:]}")
        if loop.time() > deadline:
            logs = "\n---\n".join(p.output()[-3000:] for p in procs or [])
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        await asyncio.sleep(0.05)


async def healthy(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as res:
            return res.status == 200
    except aiohttp.ClientError:
        return False


# A policy for ``jitbot serve`` processes (replicas, Socket Mode): one eligibility, one approval layer.
SERVE_USERS = {"U1ALICE": "alice", "U2BOB": "bob", "U3CAROL": "carol"}
AUDIT = "C0AUDIT"
SERVE_POLICY = f"""
audit_channel: "{AUDIT}"
admins: {{users: [carol@example.com]}}
connectors:
  demo:
    type: memory
    users:
      - {{email: alice@example.com, name: Alice}}
      - {{email: bob@example.com, name: Bob}}
      - {{email: carol@example.com, name: Carol}}
    groups:
      engineers: [alice@example.com]
      leads: [bob@example.com, carol@example.com]
      app-admins: []
eligibilities:
  - name: app-admin
    description: Application admin
    connector: demo
    target: {{group: app-admins}}
    requestors: {{groups: [engineers]}}
    max_duration: 4h
    approvals:
      - approvers: {{groups: [leads]}}
"""


def approve_message(slack: FakeSlack, user: str) -> Any:
    """``user``'s DM that still has an Approve button, or None."""
    for m in slack.dm_messages(user):
        for b in m.blocks or []:
            if b.get("type") == "actions" and any(e.get("action_id") == ids.APPROVE for e in b["elements"]):
                return m
    return None
