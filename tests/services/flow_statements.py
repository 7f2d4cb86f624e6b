"""Counting the SQL statements SQLite runs for one complete access flow, by statement and by call site.

SQLite's own trace hook (``sqlite3.Connection.set_trace_callback``) sees every statement, the ones the
fast path runs on the DB-API cursor (storage/core_tx.py, storage/prepared.py) included, which
SQLAlchemy's ``before_cursor_execute`` event does not. The call site is the innermost frame in ``bot/``.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from greenlet import getcurrent  # type: ignore[import-untyped]
from sqlalchemy import event

from bot.domain.requests import Decision
from bot.policy_file import LoadedPolicy, parse_policy
from bot.services.clock import ManualClock
from storage.db import Database
from tests.services.stack import Stack, make_stack

# The flow of bench/throughput.py: one eligibility, one approval layer, an audit channel.
FLOW_POLICY = """
audit_channel: C0AUDIT
connectors:
  demo:
    type: memory
    users: [{email: u1@example.com}, {email: u2@example.com}, {email: lead1@example.com}, {email: lead2@example.com}]
    groups:
      engineers: [u1@example.com, u2@example.com]
      leads: [lead1@example.com, lead2@example.com]
      target: []
eligibilities:
  - name: ops
    connector: demo
    target: {group: target}
    requestors: {groups: [engineers]}
    max_duration: 8h
    default_duration: 1h
    approvals:
      - approvers: {groups: [leads]}
"""

_BOT = str(Path(__file__).resolve().parents[2] / "bot") + "/"
_VALUES = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")


def flow_policy() -> LoadedPolicy:
    return parse_policy(FLOW_POLICY, source="flow-policy.yml", env={})


def _shape(sql: str) -> str:
    """The statement with its values taken out (SQLite's trace gives it with the values bound)."""
    return " ".join(_VALUES.sub("?", sql).split())


class StatementTrace:
    """Every statement SQLite runs on ``db``'s connections while ``on``: its shape and its call site."""

    def __init__(self, db: Database) -> None:
        self.on = False
        self.statements: list[tuple[str, str]] = []
        for engine in {db.engine.sync_engine, db.read_engine.sync_engine}:
            event.listen(engine, "connect", self._connect)

    def _connect(self, dbapi_conn: Any, _record: Any) -> None:
        connection: sqlite3.Connection = dbapi_conn.driver_connection
        connection.set_trace_callback(self._traced)

    def _traced(self, sql: str) -> None:
        if not self.on or sql.startswith("--"):  # "-- TRIGGER": a trigger's statements, not the caller's
            return
        frame: Any = sys._getframe(1)
        runner = getcurrent()
        while frame is not None and not frame.f_code.co_filename.startswith(_BOT):
            frame = frame.f_back
            if frame is None and runner.parent is not None:  # a session's statement runs in a greenlet
                runner = runner.parent
                frame = runner.gr_frame
        site = (f"{frame.f_code.co_filename[len(_BOT):]}:{frame.f_lineno} {frame.f_code.co_name}"
                if frame is not None else "?")
        self.statements.append((_shape(sql), site))

    def table(self, top: int = 15, width: int = 90) -> str:
        by_text = Counter(text[:width] for text, _ in self.statements)
        by_site = Counter(site for _, site in self.statements)
        lines = [f"{len(self.statements)} statements", "count  statement"]
        lines += [f"{n:5d}  {text}" for text, n in by_text.most_common(top)]
        lines += ["count  call site"] + [f"{n:5d}  {site}" for site, n in by_site.most_common(top)]
        return "\n".join(lines)


async def _drain(s: Stack) -> None:
    """Every message delivered: the chains the writing commits handed over, then anything still due."""
    await asyncio.wait_for(s.worker.dispatcher.quiesce(), timeout=30)
    while await s.worker.dispatch_tick():
        pass


async def _carried_out(s: Stack) -> None:
    running = list(s.worker.grants._running.values())
    if running:
        await asyncio.wait_for(asyncio.gather(*running), timeout=30)


async def run_flow(s: Stack, requester: str) -> None:
    """/jit (the modal's choices), submit, the DMs, an approval, the grant carried out by the worker that
    adopted it, the requester's release, the revocation, and every message delivered."""
    await s.requests.requestable(requester)
    request = await s.requests.submit(requester=requester, eligibility="ops", duration=timedelta(hours=1),
                                      justification="deploy")
    await _drain(s)
    request_id = request.id
    await s.approvals.decide(request_id=request_id, layer=1, approver="lead1@example.com",
                             decision=Decision.APPROVE)
    await _carried_out(s)
    await _drain(s)
    await s.grants.end_early(request_id=request_id, actor=requester, reason="done")
    await s.worker.schedule_tick(only=frozenset({"granted"}))  # the pass the release's wake runs
    await _drain(s)


async def count_flow(db: Database, clock: ManualClock) -> StatementTrace:
    """One warm-up flow, then the statements of a second, measured one."""
    trace = StatementTrace(db)
    s = await make_stack(db, flow_policy(), clock)
    s.rt.grant_taker = s.worker.grants.adopt  # as in ``serve``: the approving process carries the grant out
    db.outbox_taker = s.worker.dispatcher  # and each commit hands its new messages to the dispatcher
    await run_flow(s, "u1@example.com")
    trace.on = True
    await run_flow(s, "u2@example.com")
    trace.on = False
    return trace
