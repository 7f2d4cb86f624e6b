"""The outbox's SQL, built once (Core, not ORM: these run for every message written, claimed and sent).

Claims: a key's head (its oldest pending message) is claimed by one dispatcher at a time; ``CLAIM_NEXT``
and ``CLAIM_LANE`` follow a chain in the transaction that records its last delivery; ``CLAIM_NEW`` is
run by the transaction that writes the messages (bot/services/outbox/dispatcher.py, ``_write_outbox``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, and_, bindparam, exists, func, insert, or_, select, text, union_all, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from bot.services.claims import locked_ids
from bot.services.outbox.lanes import LANES
from storage.tables import MessageRef, OutboxMessage


class not_a_lookup(FunctionElement[str]):  # noqa: N801 (named as an SQL function)
    """The column as it is, except that SQLite's planner must not look rows up by it: ``+column`` there
    (the same value, and no index is used for it)."""

    inherit_cache = True
    type = String()


@compiles(not_a_lookup)
def _as_it_is(element: not_a_lookup, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(not_a_lookup, "sqlite")
def _unary_plus(element: not_a_lookup, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.clauses, **kw))


OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
earlier = OUTBOX.alias("earlier")
ADD_REF = insert(MessageRef.__table__)  # type: ignore[attr-defined]
# Every claim sets the lease and its owner and raises the row's token by one (a fence: a dispatcher records
# a message's outcome only under the token its claim returned, bot/services/access/fencing.py).
CLAIM: dict[str, Any] = {"claimed_until": bindparam("b_until"), "claimed_by": bindparam("b_owner"),
                         "claim_token": OUTBOX.c.claim_token + 1}
_FENCED = OUTBOX.c.claim_token == bindparam("b_token")  # the claim recording the outcome is still the row's
MARK_SENT = (update(OUTBOX).where(OUTBOX.c.id == bindparam("b_id"), _FENCED)
              .values(status="sent", sent_at=bindparam("b_now"), attempts=bindparam("b_attempts"), claimed_until=None,
                      claimed_by=None))
# The tokens of claimed messages: a dispatcher whose claim is old looks before it posts (``still_ours``).
TOKENS = select(OUTBOX.c.id, OUTBOX.c.claim_token).where(OUTBOX.c.id.in_(bindparam("b_ids", expanding=True)))
# The next message of each of several keys (the oldest pending one), if it is due and unclaimed: one
# statement for a whole group-committed batch of deliveries.
CLAIM_NEXT = (
    update(OUTBOX)
    .where(OUTBOX.c.id.in_(select(func.min(OUTBOX.c.id))
                            .where(OUTBOX.c.order_key.in_(bindparam("b_keys", expanding=True)),
                                   OUTBOX.c.status == "pending")
                            .group_by(OUTBOX.c.order_key).scalar_subquery()),
           OUTBOX.c.status == "pending", OUTBOX.c.next_attempt_at <= bindparam("b_now"),
           or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < bindparam("b_now")))
    .values(CLAIM)
    .returning(*OUTBOX.c)
)

# Lanes (one channel's posts, written by every transaction) have at most one chain at a time, across
# replicas: commits do not claim them on PostgreSQL (two commits in flight would each see the other's
# message as not there yet and claim both as heads), a lane's head is claimed only while none of its
# messages is held by a live claim, and on PostgreSQL under an advisory lock (``LANE_LOCK``), so two
# claimers cannot both see the lane free. The chain that holds the lane then takes what follows.
LANE_HELD = exists().where(and_(earlier.c.order_key == OUTBOX.c.order_key, earlier.c.status == "pending",
                                earlier.c.claimed_until >= bindparam("b_now")))
CLAIM_LANE_HEAD = (
    update(OUTBOX)
    .where(OUTBOX.c.id == select(func.min(OUTBOX.c.id)).where(OUTBOX.c.order_key == bindparam("b_key"),
                                                              OUTBOX.c.status == "pending").scalar_subquery(),
           OUTBOX.c.status == "pending", OUTBOX.c.next_attempt_at <= bindparam("b_now"),
           or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < bindparam("b_now")), ~LANE_HELD)
    .values(CLAIM)
    .returning(*OUTBOX.c)
)
# PostgreSQL: which of some keys have their head (oldest pending message) claimed under a live lease, and
# by whom — a chain is following them. One seek per key on (order_key, status, id): a lane's backlog is
# not read (that was 150 index entries a call with a busy audit lane). A lane line that committed out
# of order can leave the head unclaimed behind a held line; the claim that follows is refused by
# CLAIM_LANE_HEAD, which looks at every line.
HELD_BY = text(
    "SELECT k.key AS order_key, h.claimed_by FROM unnest(CAST(:b_keys AS varchar[])) AS k(key) "
    "CROSS JOIN LATERAL (SELECT o.claimed_by, o.claimed_until FROM outbox AS o WHERE o.order_key = k.key "
    "AND o.status = 'pending' ORDER BY o.id LIMIT 1) AS h WHERE h.claimed_until >= :b_now")
LANE_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:k))")


def waiting_lanes(lanes: tuple[str, ...]) -> Any:
    """Which of ``lanes`` wait for a claim: their head (oldest pending message) due and unclaimed, or its
    lease run out. The claim pass claims them with CLAIM_LANE_HEAD, which claims nothing else: a lane
    whose head is backed off or held waits for it. Per lane, one seek on (order_key, status, id) and one
    primary-key lookup: neither the lane's backlog nor the rest of the outbox is read."""

    def waiting(lane: str) -> Any:
        # ORDER BY id LIMIT 1, not min(id): PostgreSQL's generic plan aggregated every pending entry of the lane
        head = (select(OUTBOX.c.id).where(OUTBOX.c.order_key == lane, OUTBOX.c.status == "pending")
                .order_by(OUTBOX.c.id).limit(1).scalar_subquery())
        return select(OUTBOX.c.order_key).where(
            OUTBOX.c.id == head, OUTBOX.c.status == "pending", OUTBOX.c.next_attempt_at <= bindparam("b_now"),
            or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < bindparam("b_now")))

    # one SELECT a lane (SQLite scanned the pending messages for ``id IN (head, head)``)
    return waiting(lanes[0]) if len(lanes) == 1 else union_all(*(waiting(lane) for lane in lanes))


# The declared lanes waiting for a claim (the claim pass claims their heads with CLAIM_LANE_HEAD).
WAITING_LANES = waiting_lanes(LANES)
# The following pending messages of a lane, oldest first, for the chain that holds it: every pending
# message of the lane not claimed (only the lane's head is ever claimed by others or backed off).
CLAIM_LANE = (
    update(OUTBOX)
    .where(OUTBOX.c.id.in_(select(OUTBOX.c.id)
                            .where(OUTBOX.c.order_key == bindparam("b_key"), OUTBOX.c.status == "pending",
                                   or_(OUTBOX.c.claimed_until.is_(None),
                                       OUTBOX.c.claimed_until < bindparam("b_now")))
                            .order_by(OUTBOX.c.id).limit(bindparam("b_limit")).scalar_subquery()),
           OUTBOX.c.status == "pending", OUTBOX.c.next_attempt_at <= bindparam("b_now"),
           or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < bindparam("b_now")))
    .values(CLAIM)
    .returning(*OUTBOX.c)
)
FINISH = (update(OUTBOX).where(OUTBOX.c.id == bindparam("b_id"), _FENCED)
          .values(status=bindparam("b_status"), attempts=bindparam("b_attempts"), last_error=bindparam("b_error"),
                  next_attempt_at=bindparam("b_next"), claimed_until=None, claimed_by=None))


def claim_heads(*, skip_locked: bool, keyed: bool = False) -> Any:
    """Claim the due heads of order keys: pending, due, unclaimed (or lease ran out), no earlier pending
    message of the same key; not lanes (see CLAIM_LANE_HEAD). One UPDATE … WHERE id IN (SELECT …) RETURNING
    every column. ``keyed``:
    only the heads of the keys in ``b_keys`` (read through the (order_key, status, id) index, so its
    cost does not grow with the rest of the outbox)."""
    earlier = OUTBOX.alias("earlier")
    free = or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < bindparam("b_now"))
    only = [OUTBOX.c.order_key.in_(bindparam("b_keys", expanding=True))] if keyed else [
        ~OUTBOX.c.order_key.like("lane:%")]  # lanes: CLAIM_LANE_HEAD
    inner = (
        select(OUTBOX.c.id)
        .where(*only, OUTBOX.c.status == "pending", OUTBOX.c.next_attempt_at <= bindparam("b_now"), free,
               ~exists().where(and_(earlier.c.order_key == OUTBOX.c.order_key, earlier.c.status == "pending",
                                    earlier.c.id < OUTBOX.c.id)))
        # Keyed: a few keys, read through (order_key, status, id). Otherwise due first, read through
        # (status, next_attempt_at): ordered by id alone, both databases walked the primary key from the
        # oldest message, through every message ever sent (205,000 rows, 26 ms a claim on PostgreSQL with
        # 200,000 sent; 20 ms on SQLite), where this reads the pending ones only.
        .order_by(*((OUTBOX.c.id,) if keyed else (OUTBOX.c.next_attempt_at, OUTBOX.c.id)))
        .limit(bindparam("b_limit"))
    )
    ids = locked_ids(inner, skip_locked=skip_locked, of=OUTBOX)  # PostgreSQL: SKIP LOCKED, run once
    return (update(OUTBOX).where(OUTBOX.c.id.in_(ids), OUTBOX.c.status == "pending", free)
            .values(CLAIM)
            .returning(*OUTBOX.c))


CLAIM_HEADS_SQLITE = claim_heads(skip_locked=False)
CLAIM_HEADS_PG = claim_heads(skip_locked=True)
CLAIM_KEYS_SQLITE = claim_heads(skip_locked=False, keyed=True)
CLAIM_KEYS_PG = claim_heads(skip_locked=True, keyed=True)

INSERT = insert(OUTBOX)
INSERT_IDS = insert(OUTBOX).returning(OUTBOX.c.id, OUTBOX.c.order_key, sort_by_parameter_order=True)
# SQLite: SQLAlchemy cannot batch an insert whose RETURNING rows must come in parameter order, and runs one
# INSERT per row; unordered, a transaction's messages are one multi-row INSERT (ids in VALUES order, as
# SQLite assigns them one after the other; the caller sorts the returned rows by id).
INSERT_IDS_SQLITE = insert(OUTBOX).returning(OUTBOX.c.id, OUTBOX.c.order_key)
# New messages that are the head of their key (no earlier pending message), claimed by the transaction
# that writes them. Only its own uncommitted rows are updated: it never waits for another claimer.
CLAIM_NEW = (
    update(OUTBOX)
    .where(OUTBOX.c.id.in_(bindparam("b_ids", expanding=True)), OUTBOX.c.next_attempt_at <= bindparam("b_now"),
           ~exists().where(and_(earlier.c.order_key == OUTBOX.c.order_key, earlier.c.status == "pending",
                                earlier.c.id < OUTBOX.c.id)))
    .values(CLAIM)
    .returning(OUTBOX.c.id)  # the rest the writer has in hand (outbox_write._take)
)


REFS_TABLE = MessageRef.__table__  # type: ignore[attr-defined]
REFS = (select(REFS_TABLE.c.request_id, REFS_TABLE.c.purpose, REFS_TABLE.c.channel, REFS_TABLE.c.ts,
               REFS_TABLE.c.recipient).where(REFS_TABLE.c.request_id == bindparam("b_id")).order_by(REFS_TABLE.c.id))
REFS_OF = REFS.where(REFS_TABLE.c.purpose == bindparam("b_purpose"))

# A layer's asks: its ask keys' range, a seek on (order_key, status, id) that reads that layer's messages
# only (a LIKE prefix is no seek: SQLite's LIKE ignores case, and PostgreSQL uses an index for it only under
# the "C" collation and with the pattern known when planning; these read every pending message through
# ix_outbox_due), and the pattern, which the keys in the range all match (notices.asks_params). SQLite,
# without statistics, prefers the equality on status (ix_outbox_due) to the range: status is no lookup there.
_ASKS = (not_a_lookup(OUTBOX.c.status) == "pending", OUTBOX.c.kind == "approval_request",
         OUTBOX.c.order_key >= bindparam("b_lo"), OUTBOX.c.order_key < bindparam("b_hi"),
         OUTBOX.c.order_key.like(bindparam("b_prefix")))
# A decided layer's asks still waiting (not claimed by a chain in flight): withdrawn — recorded as sent,
# nothing posted — in the deciding transaction (bot/services/notices.py, ``update_approvals``).
WITHDRAW_ASKS = (update(OUTBOX).where(*_ASKS,
                                      or_(OUTBOX.c.claimed_until.is_(None),
                                          OUTBOX.c.claimed_until < bindparam("b_now")))
                 .values(status="sent", sent_at=bindparam("b_now"), last_error="withdrawn: the layer was decided",
                         claimed_until=None, claimed_by=None))
# How many of a layer's asks are still to be delivered (in flight or waiting): its update waits for them.
ASKS_LEFT = select(func.count()).select_from(OUTBOX).where(*_ASKS)
