"""The tamper-evident audit log: every event row carries SHA-256(canonical event + previous hash)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.tables import Event

GENESIS = "0" * 64


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended (the stored ``Event`` row less its id and hash)."""

    at: datetime
    request_id: str | None
    actor: str
    kind: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any]
    prev_hash: str


_EVENT = Event.__table__  # type: ignore[attr-defined]
_INSERT = insert(_EVENT)
_HEAD = select(_EVENT.c.hash).order_by(_EVENT.c.id.desc()).limit(1)


def canonical(event: Event | NewEvent) -> str:
    body = {
        "at": event.at.isoformat(timespec="microseconds"),
        "request_id": event.request_id,
        "actor": event.actor,
        "kind": event.kind,
        "from": event.from_state,
        "to": event.to_state,
        "detail": event.detail,
        "prev": event.prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


def event_hash(event: Event | NewEvent) -> str:
    return hashlib.sha256(canonical(event).encode()).hexdigest()


async def append_event(
    db: Database,
    session: AsyncSession,
    *,
    at: datetime,
    kind: str,
    actor: str,
    request_id: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: dict[str, Any] | None = None,
) -> str:
    """Append one event to the chain inside the caller's transaction; returns its hash.

    The chain head is read once per transaction (under the chain lock) and then kept in the session,
    so a batch of events costs one query, not one per event.
    """
    prev = session.info.get("audit_head")
    if prev is None:
        await db.lock_audit_chain(session)
        prev = (await session.execute(_HEAD)).scalar()
    event = NewEvent(at=at, request_id=request_id, actor=actor, kind=kind, from_state=from_state,
                     to_state=to_state, detail=detail or {}, prev_hash=prev or GENESIS)
    digest = event_hash(event)
    # A Core INSERT, built once: this runs for every state change, and the ORM's unit of work costs more
    # than the statement. Events are inserted in call order, so ids follow the chain.
    await session.execute(_INSERT, {**asdict(event), "hash": digest})
    session.info["audit_head"] = digest
    return digest


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str = ""


async def verify_chain(db: Database, *, batch: int = 5000) -> VerifyResult:
    """Walk the chain in id order; report the first row whose hash or link does not match."""
    prev, checked, last_id = GENESIS, 0, 0
    while True:
        async with db.sessions() as session:
            rows = (await session.execute(
                select(Event).where(Event.id > last_id).order_by(Event.id).limit(batch)  # type: ignore[arg-type,operator]
            )).scalars().all()
        if not rows:
            return VerifyResult(True, checked)
        for row in rows:
            assert row.id is not None
            if row.prev_hash != prev:
                return VerifyResult(False, checked, row.id, "does not link to the previous event "
                                    "(a row was deleted, inserted or reordered)")
            if event_hash(row) != row.hash:
                return VerifyResult(False, checked, row.id, "content does not match its hash (row was edited)")
            prev, last_id, checked = row.hash, row.id, checked + 1


def _flat(row: Event) -> dict[str, Any]:
    return {"id": row.id, "at": row.at.isoformat(), "request_id": row.request_id, "actor": row.actor,
            "kind": row.kind, "from": row.from_state, "to": row.to_state,
            "detail": json.dumps(row.detail, sort_keys=True), "prev_hash": row.prev_hash, "hash": row.hash}


async def export_events(db: Database, *, fmt: str = "jsonl", since: datetime | None = None) -> str:
    """The audit log as JSON lines or CSV, oldest first."""
    async with db.sessions() as session:
        stmt = select(Event).order_by(Event.id)  # type: ignore[arg-type]
        if since is not None:
            stmt = stmt.where(Event.at >= since)
        rows = (await session.execute(stmt)).scalars().all()
    if fmt == "jsonl":
        return "".join(json.dumps({**_flat(r), "detail": r.detail}, sort_keys=True) + "\n" for r in rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(_flat(Event(at=datetime.min, actor="", kind="", prev_hash="",
                                                                  hash=""))))
        writer.writeheader()
        for r in rows:
            writer.writerow(_flat(r))
        return out.getvalue()
    raise ValueError(f"unknown format {fmt!r}; use jsonl or csv")
