"""``jitbot audit verify``: the hash chain, against the anchors kept outside the database, and against the
request and grant rows the events describe.

What each check finds is stated in docs/security.md ("The audit log"). In short:

- the chain (bot/services/auditing/audit.py): a row edited, inserted, reordered or deleted anywhere but at the end;
- each anchor (bot/services/auditing/audit_anchor.py): events deleted from the end, or the chain rewritten, up to
  the point the anchor saw;
- the rows: a request or grant whose events are gone — a request without the event that created it
  (``requested``, ``break_glass``) or without one that moved it to its present status; a grant that went
  live without its ``granted`` event; a grant that ended without an event about it (or its request) at or
  after its end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from bot.services.auditing.audit import VerifyResult, verify_chain
from bot.services.auditing.audit_anchor import Anchor
from storage.db import Database
from storage.tables import AccessRequest, Event, Grant

CREATED = frozenset({"requested", "break_glass"})
MISSING_SHOWN = 20
_NEVER = datetime.min.replace(tzinfo=UTC)  # problems listed one by one; the rest are counted


@dataclass
class LogReport:
    chain: VerifyResult
    anchors: int = 0  # anchors given and matched
    latest: Anchor | None = None  # the anchor that reaches furthest
    problems: list[str] = field(default_factory=list)  # anchors past the end, rows without their events
    missing: int = 0  # rows without their events, all of them (``problems`` lists the first few)

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.problems


@dataclass
class _Seen:
    """What the chain says about each request and grant (collected while it is verified)."""

    created: set[str] = field(default_factory=set)
    states: set[tuple[str, str]] = field(default_factory=set)  # (request id, to_state)
    granted: set[str] = field(default_factory=set)
    last_about_grant: dict[str, datetime] = field(default_factory=dict)
    last_about_request: dict[str, datetime] = field(default_factory=dict)

    def visit(self, row: Event) -> None:
        if row.request_id is None:
            return
        if row.kind in CREATED:
            self.created.add(row.request_id)
        if row.to_state:
            self.states.add((row.request_id, row.to_state))
        if row.request_id not in self.last_about_request or row.at > self.last_about_request[row.request_id]:
            self.last_about_request[row.request_id] = row.at
        grant = row.detail.get("grant") if isinstance(row.detail, dict) else None
        if isinstance(grant, str):
            if row.kind == "granted":
                self.granted.add(grant)
            if grant not in self.last_about_grant or row.at > self.last_about_grant[grant]:
                self.last_about_grant[grant] = row.at


async def verify_log(db: Database, anchors: Sequence[Anchor] = (), *, batch: int = 5000) -> LogReport:
    """The chain checked link by link and against ``anchors``; then every request and grant row against
    the events about it. ``ok`` only when all of it holds."""
    expect: dict[int, list[tuple[str, str]]] = {}
    for a in anchors:
        expect.setdefault(a.count, []).append((a.head, a.label()))
    seen = _Seen()
    chain = await verify_chain(db, batch=batch, visit=seen.visit, expect=expect)
    report = LogReport(chain)
    if not chain.ok:
        return report
    report.anchors = sum(1 for a in anchors if a.count <= chain.checked)
    report.latest = max(anchors, key=lambda a: (a.count, a.at), default=None)
    for a in sorted(anchors, key=lambda a: a.count):
        if a.count > chain.checked:
            report.problems.append(
                f"the log has {chain.checked} events but {a.label()} saw {a.count}: "
                f"{a.count - chain.checked} or more events were deleted from its end")
    missing = [m async for m in _rows_without_events(db, seen, batch=batch)]
    report.missing = len(missing)
    report.problems += missing[:MISSING_SHOWN]
    if len(missing) > MISSING_SHOWN:
        report.problems.append(f"… and {len(missing) - MISSING_SHOWN} more rows without their events")
    return report


async def _rows_without_events(db: Database, seen: _Seen, *, batch: int) -> AsyncIterator[str]:
    last = ""
    while True:
        async with db.sessions() as session:
            requests = (await session.execute(
                select(AccessRequest.id, AccessRequest.status)  # type: ignore[call-overload]
                .where(AccessRequest.id > last).order_by(AccessRequest.id).limit(batch))).all()
        if not requests:
            break
        for request_id, status in requests:
            if request_id not in seen.created:
                yield f"request {request_id} has no event that created it (requested or break_glass)"
            elif (request_id, status) not in seen.states:
                yield f"request {request_id} is {status}, but no event moved it there"
        last = requests[-1][0]
    last = ""
    while True:
        async with db.sessions() as session:
            grants = (await session.execute(
                select(Grant.id, Grant.request_id, Grant.status, Grant.granted_at, Grant.ended_at)  # type: ignore[call-overload]
                .where(Grant.id > last).order_by(Grant.id).limit(batch))).all()
        if not grants:
            break
        for grant_id, request_id, status, granted_at, ended_at in grants:
            if granted_at is not None and grant_id not in seen.granted:
                yield f"grant {grant_id} ({request_id}) went live at {granted_at:%Y-%m-%d %H:%M:%S} UTC " \
                      "without a granted event"
            # its end event names it (expired, revoked, cleanup_done); any event of its request from then on
            # is accepted too, so that a new way of ending a grant is not taken for a deletion
            about = max(seen.last_about_grant.get(grant_id, _NEVER), seen.last_about_request.get(request_id, _NEVER))
            if status == "ended" and ended_at is not None and about < ended_at:
                yield f"grant {grant_id} ({request_id}) ended at {ended_at:%Y-%m-%d %H:%M:%S} UTC " \
                      "without an event recording its end"
        last = grants[-1][0]
