"""Writing outbox messages: ``enqueue`` inside the caller's transaction; the rows are written when it
commits, and a running dispatcher of this process claims the new heads in that same commit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from bot.services.outbox import sql
from bot.services.outbox.delivery import Ref
from bot.services.outbox.lanes import LANES, is_lane
from storage.core_tx import BEFORE_COMMIT, Writer, pending
from storage.db import Database
from storage.prepared import dbapi_connection, prepared

if TYPE_CHECKING:
    from bot.services.clock import Clock


class Taker(Protocol):
    """What enqueue() needs of a running dispatcher of this process (``dispatcher.OutboxDispatcher``)
    to hand it the heads it can take at once."""

    clock: Clock
    owner: str
    lease: timedelta

    def room(self) -> int: ...
    def follows(self, key: str) -> bool: ...
    def held_elsewhere(self, key: str) -> bool: ...
    def saw_held_elsewhere(self, keys: set[str]) -> None: ...

# session.info keys: storage/db.py hands the claimed messages over and tells of the keys left unclaimed
TAKER, CLAIMED, UNCLAIMED = "outbox_taker", "outbox_claimed", "outbox_unclaimed"
HELD = "outbox_held"  # keys left to another process's chain, looked at again shortly (KeyClaims.look_again)


def enqueue(session: Writer, *, at: datetime, order_key: str, kind: str, payload: dict[str, Any]) -> None:
    """Add a message to the outbox inside the caller's transaction.

    The rows are written by one INSERT when the transaction commits (``_write_outbox``), in the order
    they were enqueued; a rolled-back transaction writes none. A ``lane:`` key must be one of ``LANES``
    (``ValueError``): no claim would ever take an undeclared lane's messages.
    """
    if is_lane(order_key) and order_key not in LANES:
        raise ValueError(f"outbox lane {order_key!r} is not declared in bot/services/outbox/lanes.py LANES")
    info = pending(session)
    info.setdefault(_PENDING_ROWS, []).append(
        {"created_at": at, "order_key": order_key, "kind": kind, "payload": payload, "status": "pending",
         "attempts": 0, "next_attempt_at": at})
    info["outbox"] = True  # Database.transaction() wakes the dispatcher after the commit


_PENDING_ROWS = "outbox_rows"
_KEYS = ("created_at", "order_key", "kind", "payload", "status", "attempts", "next_attempt_at")  # as enqueue's rows
# insert=True: runs before the audit chain's hook (bot/services/auditing/audit.py), whatever the import order, so
# the chain lock taken there is held for the events' INSERT and the commit only, not for this too.
@event.listens_for(Session, "before_commit", insert=True)
def _write_outbox(session: Session) -> None:
    rows = session.info.pop(_PENDING_ROWS, None)
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite":  # statements straight on the DB-API connection (storage/prepared.py)
        _write_sqlite(session.info, dialect, dbapi_connection(session), rows)
        return
    taker: Taker | None = session.info.get(TAKER)
    if taker is None:
        session.execute(sql.INSERT, rows)
        return
    written = session.execute(sql.INSERT_IDS, rows).all()  # in the order of ``rows``
    _take(session.info, taker, written, rows, lambda params: list(session.execute(sql.CLAIM_NEW, params).scalars()),
          lambda params: list(session.execute(sql.HELD_BY, params).all()))


def _write_core(info: dict[str, Any], dialect: Dialect, connection: Any) -> None:
    """A Core transaction's messages on SQLite (storage/core_tx.py), as ``_write_outbox`` writes a session's."""
    rows = info.pop(_PENDING_ROWS, None)
    if rows:
        _write_sqlite(info, dialect, connection, rows)


BEFORE_COMMIT.insert(0, _write_core)  # before the audit chain's, as above


def _write_sqlite(info: dict[str, Any], dialect: Dialect, connection: Any, rows: list[dict[str, Any]]) -> None:
    taker: Taker | None = info.get(TAKER)
    if taker is None:
        prepared(sql.INSERT, dialect, _KEYS).insert_rows(connection, rows)
        return
    # one multi-row INSERT: SQLite numbers the rows one after the other, so by id they are in the order of ``rows``
    written = sorted(prepared(sql.INSERT_IDS_SQLITE, dialect, _KEYS).insert_rows(connection, rows),
                     key=lambda w: w.id)
    _take(info, taker, written, rows,
          lambda params: [r.id for r in prepared(sql.CLAIM_NEW, dialect).run(connection, params)], None)


def _take(info: dict[str, Any], taker: Taker, written: Sequence[Any], rows: list[dict[str, Any]],
          claim_new: Callable[[dict[str, Any]], list[int]],
          held_by: Callable[[dict[str, Any]], list[Any]] | None) -> None:
    """A running dispatcher of this process takes the heads it can right here, instead of a claim
    transaction of its own after the commit (Database.transaction hands them over once committed).
    ``written``: the new rows' (id, order_key), in the order of ``rows`` (the messages as enqueued: a
    claimed message is handed over from them, its payload not read back). ``held_by``: PostgreSQL's
    check of keys whose head another process's chain holds."""
    enqueued = {w.id: row for w, row in zip(written, rows, strict=True)}
    written = sorted(written, key=lambda w: w.id)
    # only the first new message of a key can be its head; no more than the dispatcher has room for
    # PostgreSQL: lanes are left to the dispatcher, which claims them one chain at a time (outbox_sql.py)
    firsts = [i for key, i in {w.order_key: w.id for w in reversed(written)}.items()
              if held_by is None or not is_lane(key)]
    firsts = sorted(firsts)[:max(taker.room(), 0)]
    now = taker.clock.now()
    params = {"b_ids": firsts, "b_now": now, "b_until": now + taker.lease, "b_owner": taker.owner}
    claimed = [Claimed(i, enqueued[i]["order_key"], enqueued[i]["kind"], enqueued[i]["payload"], 0, 1,
                       params["b_until"])  # a new row (token 0) claimed once
               for i in sorted(claim_new(params))] if firsts else []
    info[CLAIMED] = claimed
    # A message behind one claimed here is claimed by that one's chain; the dispatcher is told of the
    # keys whose new messages sit behind an older one (``OutboxDispatcher.notice``, after the commit),
    # except those whose head another process's chain holds: that chain takes them (and should its
    # last record just miss them, a look 0.1 s after the commit does: ``KeyClaims.look_again``).
    unclaimed = {w.order_key for w in written} - {m.order_key for m in claimed}
    info[HELD] = []
    elsewhere = [k for k in unclaimed if not taker.follows(k)]
    if elsewhere and held_by is not None:
        recent = {k for k in elsewhere if taker.held_elsewhere(k)}  # a paced lane seen held a moment ago
        ask = [k for k in elsewhere if k not in recent]
        held = {key for key, owner in held_by({"b_keys": ask, "b_now": now})
                if owner != taker.owner} if ask else set()
        taker.saw_held_elsewhere(held)
        unclaimed -= held | recent
        info[HELD] = sorted(k for k in held if not is_lane(k))
    info[UNCLAIMED] = sorted(unclaimed)
    info["outbox"] = False


@event.listens_for(Session, "after_soft_rollback")
def _drop_outbox(session: Session, _previous: Any) -> None:
    session.info.pop(_PENDING_ROWS, None)
    session.info.pop(CLAIMED, None)
    session.info.pop(UNCLAIMED, None)
    session.info.pop(HELD, None)


@dataclass(slots=True)
class Claimed:
    """A claimed outbox message: what delivering and recording it needs."""

    id: int
    order_key: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    token: int = 0  # the claim_token the claim set: its outcome is recorded only under it (outbox_sql.py)
    until: datetime | None = None  # the claim's lease

    @classmethod
    def of(cls, row: Any) -> Claimed:
        return cls(row.id, row.order_key, row.kind, row.payload, row.attempts, row.claim_token, row.claimed_until)


async def message_refs(db: Database, request_id: str, purpose: str | None = None) -> list[Ref]:
    """Where the messages about ``request_id`` (optionally of one purpose) were delivered."""
    async with db.core_reads() as reads:
        rows = await (reads.rows(sql.REFS, {"b_id": request_id}) if purpose is None else
                      reads.rows(sql.REFS_OF, {"b_id": request_id, "b_purpose": purpose}))
    return [Ref(r.request_id, r.purpose, r.channel, r.ts, r.recipient) for r in rows]
