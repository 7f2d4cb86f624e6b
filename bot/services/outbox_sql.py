"""The outbox's SQL, built once (Core, not ORM: these run for every message written, claimed and sent).

Claims: a key's head (its oldest pending message) is claimed by one dispatcher at a time; ``CLAIM_NEXT``
and ``CLAIM_LANE`` follow a chain in the transaction that records its last delivery; ``CLAIM_NEW`` is
run by the transaction that writes the messages (bot/services/outbox.py, ``_write_outbox``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, exists, func, insert, or_, select, update

from bot.services.claims import locked_ids
from storage.tables import MessageRef, OutboxMessage

OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
ADD_REF = insert(MessageRef.__table__)  # type: ignore[attr-defined]
MARK_SENT = (update(OUTBOX).where(OUTBOX.c.id == bindparam("b_id"))
              .values(status="sent", sent_at=bindparam("b_now"), attempts=bindparam("b_attempts"), claimed_until=None))
# The next message of each of several keys (the oldest pending one), if it is due and unclaimed: one
# statement for a whole group-committed batch of deliveries.
CLAIM_NEXT = (
    update(OUTBOX)
    .where(OUTBOX.c.id.in_(select(func.min(OUTBOX.c.id))
                            .where(OUTBOX.c.order_key.in_(bindparam("b_keys", expanding=True)),
                                   OUTBOX.c.status == "pending")
                            .group_by(OUTBOX.c.order_key).scalar_subquery()),
           OUTBOX.c.next_attempt_at <= bindparam("b_now"),
           or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < bindparam("b_now")))
    .values(claimed_until=bindparam("b_until"), claimed_by=bindparam("b_owner"))
    .returning(*OUTBOX.c)
)

# The following pending messages of a lane, oldest first. Only a key's head is ever claimed or backed off,
# so the pending messages after it are all due and unclaimed: the ones returned are the next in order.
CLAIM_LANE = (
    update(OUTBOX)
    .where(OUTBOX.c.id.in_(select(OUTBOX.c.id)
                            .where(OUTBOX.c.order_key == bindparam("b_key"), OUTBOX.c.status == "pending",
                                   OUTBOX.c.id > bindparam("b_after"))
                            .order_by(OUTBOX.c.id).limit(bindparam("b_limit")).scalar_subquery()),
           OUTBOX.c.next_attempt_at <= bindparam("b_now"),
           or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < bindparam("b_now")))
    .values(claimed_until=bindparam("b_until"), claimed_by=bindparam("b_owner"))
    .returning(*OUTBOX.c)
)
FINISH = (update(OUTBOX).where(OUTBOX.c.id == bindparam("b_id"))
          .values(status=bindparam("b_status"), attempts=bindparam("b_attempts"), last_error=bindparam("b_error"),
                  next_attempt_at=bindparam("b_next"), claimed_until=None))


def claim_heads(*, skip_locked: bool) -> Any:
    """Claim the due heads of order keys: pending, due, unclaimed (or lease ran out), no earlier pending
    message of the same key. One UPDATE … WHERE id IN (SELECT …) RETURNING every column."""
    earlier = OUTBOX.alias("earlier")
    free = or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < bindparam("b_now"))
    inner = (
        select(OUTBOX.c.id)
        .where(OUTBOX.c.status == "pending", OUTBOX.c.next_attempt_at <= bindparam("b_now"), free,
               ~exists().where(and_(earlier.c.order_key == OUTBOX.c.order_key, earlier.c.status == "pending",
                                    earlier.c.id < OUTBOX.c.id)))
        .order_by(OUTBOX.c.id)
        .limit(bindparam("b_limit"))
    )
    ids = locked_ids(inner, skip_locked=skip_locked, of=OUTBOX)  # PostgreSQL: SKIP LOCKED, run once
    return (update(OUTBOX).where(OUTBOX.c.id.in_(ids), free)
            .values(claimed_until=bindparam("b_until"), claimed_by=bindparam("b_owner"))
            .returning(*OUTBOX.c))


CLAIM_HEADS_SQLITE = claim_heads(skip_locked=False)
CLAIM_HEADS_PG = claim_heads(skip_locked=True)

INSERT = insert(OUTBOX)
INSERT_IDS = insert(OUTBOX).returning(OUTBOX.c.id, OUTBOX.c.order_key, sort_by_parameter_order=True)
# New messages that are the head of their key (no earlier pending message), claimed by the transaction
# that writes them. Only its own uncommitted rows are updated: it never waits for another claimer.
earlier = OUTBOX.alias("earlier")
CLAIM_NEW = (
    update(OUTBOX)
    .where(OUTBOX.c.id.in_(bindparam("b_ids", expanding=True)), OUTBOX.c.next_attempt_at <= bindparam("b_now"),
           ~exists().where(and_(earlier.c.order_key == OUTBOX.c.order_key, earlier.c.status == "pending",
                                earlier.c.id < OUTBOX.c.id)))
    .values(claimed_until=bindparam("b_until"), claimed_by=bindparam("b_owner"))
    .returning(*OUTBOX.c)
)


REFS = (select(MessageRef).where(MessageRef.request_id == bindparam("b_id"))  # type: ignore[arg-type]
         .order_by(MessageRef.id))  # type: ignore[arg-type]
REFS_OF = REFS.where(MessageRef.purpose == bindparam("b_purpose"))
