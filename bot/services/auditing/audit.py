"""The tamper-evident audit log: every event row carries SHA-256(canonical event + previous hash)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, event, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from storage.core_tx import BEFORE_COMMIT, Writer, pending
from storage.db import Database
from storage.prepared import dbapi_connection, prepared
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
_EVENT_KEYS = ("at", "request_id", "actor", "kind", "from_state", "to_state", "detail", "prev_hash", "hash")
_HEAD_SQL = "SELECT hash FROM event ORDER BY id DESC LIMIT 1"  # SQLite, on the DB-API connection
# PostgreSQL: a transaction's events wait here; a deferred trigger links each into ``event`` at commit,
# under the chain lock (storage/migrations/versions/0007_…). Not a model: it exists on PostgreSQL only.
_PENDING_PG = Table(
    "event_pending", MetaData(), Column("at", DateTime(timezone=True)), Column("request_id", String),
    Column("actor", String), Column("kind", String), Column("from_state", String), Column("to_state", String),
    Column("detail", Text), Column("head", Text), Column("tail", Text))
_INSERT_PENDING_PG = insert(_PENDING_PG)


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


def split_canonical(fields: dict[str, Any]) -> tuple[str, str]:
    """``canonical`` of an event whose previous hash is not known yet, as (head, tail): the canonical
    text is head + prev_hash + tail (the database links it at commit: migration 0007)."""
    token = secrets.token_hex(16)  # stands in for the hash; cannot occur in the rest by chance
    head, sep, tail = canonical(NewEvent(**fields, prev_hash=token)).partition(f'"prev":"{token}"')
    assert sep and token not in head + tail
    return head + '"prev":"', '"' + tail


async def append_event(
    session: Writer,
    *,
    at: datetime,
    kind: str,
    actor: str,
    request_id: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add one event to the chain inside the caller's transaction: it is written, linked to the chain's
    head, when the transaction commits, and not at all if it rolls back (``_chain_events``)."""
    if at.tzinfo is None:  # refused as the UTC columns refuse it (storage/types.py)
        raise ValueError("naive datetime given to the audit log")
    # hashed as it is stored and read back (UTC), or verify_chain would find the row edited
    at = at.astimezone(UTC)
    pending(session).setdefault(_PENDING, []).append(
        {"at": at, "request_id": request_id, "actor": actor, "kind": kind, "from_state": from_state,
         "to_state": to_state, "detail": detail or {}})


_PENDING = "audit_events"


@event.listens_for(Session, "before_commit")
def _chain_events(session: Session) -> None:
    """Link the transaction's events to the chain's head and insert them, just before the commit.

    On SQLite (one writer: the transaction holds the database lock) the head is read and the events
    inserted here. On PostgreSQL they go to ``event_pending`` and the database links them while the
    transaction commits: a deferred trigger takes the chain's advisory lock, reads the head and inserts
    each into ``event`` (migration 0007), so the lock is held only inside the server's commit — never
    while this process's task waits for its turn on the event loop, or for its CPU quota."""
    events = session.info.pop(_PENDING, None)
    if not events:
        return
    if session.get_bind().dialect.name != "sqlite":
        # linked at commit by the database (no lock held here, none across a round trip to this process)
        rows = []
        for fields in events:
            head, tail = split_canonical(fields)
            rows.append({**fields, "detail": json.dumps(fields["detail"]), "head": head, "tail": tail})
        session.execute(_INSERT_PENDING_PG, rows)
        return
    _chain_sqlite(events, session.get_bind().dialect, dbapi_connection(session))


def _chain_sqlite(events: list[dict[str, Any]], dialect: Dialect, connection: Any) -> None:
    """SQLite: link ``events`` to the chain's head and insert them, straight on the transaction's DB-API
    connection (storage/prepared.py)."""
    prev = _sqlite_head(connection) or GENESIS
    rows = []
    for fields in events:  # in call order: ids follow the chain
        new = NewEvent(**fields, prev_hash=prev)
        prev = event_hash(new)
        # the fields as they are (``dataclasses.asdict`` would deep-copy each detail: 0.1 ms a flow)
        rows.append({**fields, "prev_hash": new.prev_hash, "hash": prev})
    prepared(_INSERT, dialect, _EVENT_KEYS).insert_rows(connection, rows)


def _chain_core(info: dict[str, Any], dialect: Dialect, connection: Any) -> None:
    """A Core transaction's events on SQLite (storage/core_tx.py), as ``_chain_events`` links a session's."""
    events = info.pop(_PENDING, None)
    if events:
        _chain_sqlite(events, dialect, connection)


BEFORE_COMMIT.append(_chain_core)  # after the outbox's (outbox_write.py inserts its hook first)


def _sqlite_head(connection: Any) -> str | None:
    """The chain's head hash, read on the transaction's own DB-API connection: a plain string needs
    none of SQLAlchemy's statement machinery, which costs several times the query (three a flow)."""
    cursor = connection.cursor()
    try:
        cursor.execute(_HEAD_SQL)
        row = cursor.fetchone()
    finally:
        cursor.close()
    return row[0] if row else None


@event.listens_for(Session, "after_soft_rollback")
def _drop_events(session: Session, _previous: Any) -> None:
    session.info.pop(_PENDING, None)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str = ""
    head: str = GENESIS  # the hash of the last event verified


async def verify_chain(db: Database, *, batch: int = 5000, visit: Callable[[Event], None] | None = None,
                       expect: Mapping[int, Sequence[tuple[str, str]]] | None = None) -> VerifyResult:
    """Walk the chain in id order; report the first row whose hash or link does not match.

    ``visit`` sees every event that verified, in order. ``expect`` maps a position in the chain (the
    count of events up to and including it) to the hashes the event there must have, each with a label
    to name it by (anchors: bot/services/auditing/audit_anchor.py); a different hash there is reported as the
    broken row. Positions past the end are the caller's to report (``checked`` says where it ends)."""
    expect = expect or {}
    prev, checked, last_id = GENESIS, 0, 0
    while True:
        async with db.sessions() as session:
            rows = (await session.execute(
                select(Event).where(Event.id > last_id).order_by(Event.id).limit(batch)  # type: ignore[arg-type,operator]
            )).scalars().all()
        if not rows:
            return VerifyResult(True, checked, head=prev)
        for row in rows:
            assert row.id is not None
            if row.prev_hash != prev:
                return VerifyResult(False, checked, row.id, "does not link to the previous event "
                                    "(a row was deleted, inserted or reordered)", head=prev)
            if event_hash(row) != row.hash:
                return VerifyResult(False, checked, row.id, "content does not match its hash (row was edited)",
                                    head=prev)
            for head, label in expect.get(checked + 1, ()):
                if row.hash != head:
                    return VerifyResult(False, checked, row.id, f"is event #{checked + 1}, which {label} "
                                        "recorded with another hash (the chain up to it was rewritten, or rows "
                                        "before it deleted)", head=prev)
            if visit is not None:
                visit(row)
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
