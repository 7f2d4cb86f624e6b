"""Shared fixtures: a database on SQLite and on PostgreSQL (the server ``tests/pg.py`` names or starts)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from bot.policy_file import LoadedPolicy, parse_policy
from bot.services.clock import ManualClock
from storage.db import Database
from tests import pg


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if pg.started():
        terminalreporter.write_line(f"PostgreSQL: a throwaway server at {pg.dsn()}, stopped at the end of the session")


def pytest_unconfigure(config: pytest.Config) -> None:
    pg.stop()  # the throwaway server, if this session started one

POLICY = """
audit_channel: "#jit-audit"
admins: {users: [root@example.com]}
connectors:
  demo:
    type: memory
    users:
      - {email: alice@example.com, name: Alice}
      - {email: bob@example.com, name: Bob}
      - {email: carol@example.com, name: Carol}
      - {email: dave@example.com, name: Dave}
      - {email: erin@example.com, name: Erin}
      - {email: root@example.com, name: Root}
    groups:
      engineers: [alice@example.com, bob@example.com, erin@example.com]
      leads: [bob@example.com, carol@example.com]
      security: [dave@example.com, carol@example.com]
      prod-admins: [erin@example.com]
      readonly: []
eligibilities:
  - name: prod-admin
    description: Production admin
    connector: demo
    target: {group: prod-admins}
    requestors: {groups: [engineers]}
    max_duration: 8h
    default_duration: 2h
    warn_before: 15m
    require_ticket: true
    approvals:
      - approvers: {groups: [leads]}
        timeout: 4h
      - approvers: {groups: [security]}
        timeout: 4h
  - name: readonly
    description: Read-only console
    connector: demo
    target: {group: readonly}
    requestors: {groups: [engineers]}
    max_duration: 4h
    warn_before: 10m
"""


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture
def loaded_policy(policy_text: str) -> LoadedPolicy:
    return parse_policy(policy_text, source="test-policy.yml", env={})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def _pg_schema() -> str:
    schema = "t_" + secrets.token_hex(6)
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return schema


async def _drop_pg_schema(schema: str) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


DbFactory = Callable[[], Database]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DbFactory]:
    """Makes engines on one database: call it again to simulate a restart (new engine, same data)."""
    made: list[Database] = []
    schema: str | None = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'jitbot.db'}"
    else:
        schema = await _pg_schema()
        url = pg.url()

    def make() -> Database:
        db = Database(url, schema=schema)
        made.append(db)
        return db

    yield make
    for db in made:
        await db.dispose()
    if schema:
        await _drop_pg_schema(schema)
