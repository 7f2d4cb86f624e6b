"""Real ``jitbot`` processes for the tests that run them (replicas, Socket Mode): a fresh PostgreSQL database,
spawn, poll, stop; the policy and users those `serve` processes share, and ``start_serve`` for one of them."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bot.fakes import FakeSlack, SlackSender
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


# The people of every ``jitbot serve`` test: the same in its policy and in its fake Slack.
SERVE_USERS = {"U1ALICE": "alice", "U2BOB": "bob", "U3CAROL": "carol"}
AUDIT = "C0AUDIT"
APP_ADMIN = """
- name: app-admin
  description: Application admin
  connector: demo
  target: {group: app-admins}
  requestors: {groups: [engineers]}
  max_duration: 4h
  approvals:
    - approvers: {groups: [leads]}
"""


def serve_policy(eligibilities: str = APP_ADMIN, *, groups: Sequence[str] = ("app-admins",),
                 leads: Sequence[str] = ("bob", "carol"), connectors: str = "") -> str:
    """A policy for ``jitbot serve`` processes: audit to ``AUDIT``, carol an admin, a ``demo`` memory connector
    holding the ``SERVE_USERS``, ``engineers`` (alice), ``leads`` (these users) and an empty group for each
    of ``groups``; then the ``connectors`` and ``eligibilities`` given, as YAML written from its own margin."""
    users = "".join(f"      - {{email: {name}@example.com, name: {name.title()}}}\n" for name in SERVE_USERS.values())
    targets = "".join(f"      {group}: []\n" for group in groups)
    return f"""
audit_channel: "{AUDIT}"
admins: {{users: [carol@example.com]}}
connectors:
  demo:
    type: memory
    users:
{users}    groups:
      engineers: [alice@example.com]
      leads: [{", ".join(f"{name}@example.com" for name in leads)}]
{targets}{_indented(connectors)}eligibilities:
{_indented(eligibilities)}"""


def _indented(yaml_block: str) -> str:
    text = textwrap.dedent(yaml_block).strip("\n")
    return textwrap.indent(text, "  ") + "\n" if text else ""


# One eligibility (app-admin), one approval layer (leads).
SERVE_POLICY = serve_policy()


def serve_slack(token: str, *, app_token: str | None = None) -> FakeSlack:
    """A fake Slack (not started) with the ``SERVE_USERS``, each with the email the policy knows, and the
    ``AUDIT`` channel; with Socket Mode if an ``app_token`` is given."""
    slack = FakeSlack(token=token, app_token=app_token)
    for uid, name in SERVE_USERS.items():
        slack.add_user(uid, name, real_name=name.title(), email=f"{name}@example.com")
    slack.add_channel(AUDIT, "jit-audit")
    return slack


@dataclass(frozen=True)
class Serve:
    """A running ``jitbot serve``: its process, its port, its environment (for a ``jitbot`` command run beside
    it) and a sender that signs requests to it as Slack does."""

    proc: Proc
    port: int
    env: dict[str, str]
    sender: SlackSender

    async def until(self, check: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> None:
        """Poll ``check`` until it holds; fail at once if the process exits, and after ``timeout`` seconds."""
        await until(check, timeout=timeout, what=what, procs=[self.proc])


@asynccontextmanager
async def start_serve(slack: FakeSlack, tmp_path: Path, *, policy: str, secret: str, database_url: str,
                      env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                      what: str = "serve") -> AsyncIterator[Serve]:
    """Start ``slack``, then ``jitbot serve`` on a free port against it (``policy`` written to
    ``tmp_path/policy.yml``, signing ``secret``, ``env`` added, ``args`` after the port); yield once
    ``/healthz`` answers (a timeout names ``what``). The process's output is in ``tmp_path/serve.log``.
    On the way out: the sender closed, the process stopped, Slack stopped."""
    policy_file = tmp_path / "policy.yml"
    policy_file.write_text(policy)
    port = free_port()
    async with slack:
        proc_env = {"SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": secret, "SLACK_API_URL": slack.url,
                    "DATABASE_URL": database_url, "JITBOT_POLICY": str(policy_file), **(env or {})}
        proc = Proc(["serve", "--port", str(port), *args], proc_env, tmp_path / "serve.log", tmp_path)
        sender = SlackSender(slack, f"http://127.0.0.1:{port}/slack/events", secret)
        try:
            await until(lambda: healthy(port), timeout=30, what=what, procs=[proc])
            yield Serve(proc, port, proc_env, sender)
        finally:
            await sender.aclose()
            proc.stop()


def approve_message(slack: FakeSlack, user: str) -> Any:
    """``user``'s DM that still has an Approve button, or None."""
    for m in slack.dm_messages(user):
        for b in m.blocks or []:
            if b.get("type") == "actions" and any(e.get("action_id") == ids.APPROVE for e in b["elements"]):
                return m
    return None
