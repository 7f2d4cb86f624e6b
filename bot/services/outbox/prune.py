"""Deleting delivered outbox messages once they are old: the outbox is a queue, not a record.

What happened is in the audit log (the ``event`` table, hash-chained) and where each Slack message lives
is in ``message_ref``; a ``sent`` outbox row is only the delivery's bookkeeping, and without pruning the
table grows by every message ever posted (five or more a request). Once an hour, across replicas
(``kvstate.take_turn``), the worker's sweep deletes ``sent`` rows older than the retention
(``JITBOT_OUTBOX_RETENTION_DAYS``, default 14; 0 keeps them), in batches of ``BATCH`` rows, each its own
short transaction, at most ``MAX_BATCHES`` a run: a backlog (the first run on an old database) is worked
off over the following hours without holding the write lock for long. ``pending`` and ``dead`` rows are
never deleted (``dead`` ones are what operators look at after a configuration mistake).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, select

from bot.services import kvstate
from bot.services.runtime import Runtime
from storage.tables import OutboxMessage

log = logging.getLogger(__name__)

SCHEDULE_KEY = "outbox:prune"
EVERY = timedelta(hours=1)
BATCH = 1000
MAX_BATCHES = 50

_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
# Read through ix_outbox_due (status, next_attempt_at): a sent message's last attempt was due before it
# was sent, so the index bounds the rows looked at to the old ones.
_OLD_SENT = (select(_OUTBOX.c.id)
             .where(_OUTBOX.c.status == "sent", _OUTBOX.c.next_attempt_at < bindparam("b_cutoff"),
                    _OUTBOX.c.sent_at < bindparam("b_cutoff"))
             .order_by(_OUTBOX.c.next_attempt_at).limit(bindparam("b_batch")))
_DELETE = delete(_OUTBOX).where(_OUTBOX.c.id.in_(_OLD_SENT.scalar_subquery()))


class OutboxPrune:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def run_if_due(self) -> int | None:
        """Prune when an hour has passed since any replica last did; None when not due (or retention is off)."""
        retention = self.rt.outbox_retention
        if retention is None:
            return None
        now = self.rt.clock.now()
        if not await kvstate.take_turn(self.rt.db, SCHEDULE_KEY, now=now, every=EVERY, by=self.rt.instance_id):
            return None
        return await self.prune(cutoff=now - retention)

    async def prune(self, *, cutoff: datetime) -> int:
        """Delete up to ``MAX_BATCHES`` × ``BATCH`` sent messages sent before ``cutoff``; how many were."""
        deleted = 0
        for _ in range(MAX_BATCHES):
            async with self.rt.db.transaction() as session:
                result = await session.execute(_DELETE, {"b_cutoff": cutoff, "b_batch": BATCH})
                count = int(result.rowcount)  # type: ignore[attr-defined]
            deleted += count
            if count < BATCH:
                break
        if deleted:
            log.info("outbox: deleted %d delivered message(s) sent before %s UTC", deleted, f"{cutoff:%Y-%m-%d %H:%M}")
        return deleted
