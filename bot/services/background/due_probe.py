"""Which kinds of the worker's work are due now: one read before a full pass (and ``NEXT_DUE``, the
read after an idle one: when the next grant falls due).

A full pass used to run every kind's claim or read in its own transaction — grant retries, lapses,
reminders, escalations, break-glass review reminders, expiry warnings — whether or not anything was due:
with revocations, the heartbeat and the outbox, an idle replica made 13 commits a second. The probe
asks all of them at once (one EXISTS per kind, each a seek on that kind's (status, due) index) and the
pass runs only the kinds it finds due. Revocations do not wait for it: every pass runs them first.

Each condition is the one its runner selects by (bot/services/access/grants.py ``run_grants`` /
``run_warnings``, requests.py ``lapse_due``, reminders.py, breakglass.py); a runner whose condition
changes must change here too — the tests of each kind run through full passes and fail if the probe
misses it. The probe may say a kind is due when its runner then finds nothing (a grant this process is
already carrying out): that costs the runner's read, as before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, or_, select

from bot.domain.requests import BREAKGLASS, Status
from storage.db import Database
from storage.tables import AccessRequest, Grant

_REQ = AccessRequest.__table__  # type: ignore[attr-defined]
_GRANT = Grant.__table__  # type: ignore[attr-defined]
_NOW: Any = bindparam("b_now")
_FREE = or_(_GRANT.c.claimed_until.is_(None), _GRANT.c.claimed_until < _NOW)
_PENDING = _REQ.c.status == Status.PENDING.value

# kind (TickReport's field) -> the condition its runner selects by
CONDITIONS = {
    "granted": (_GRANT.c.status == "granting", _GRANT.c.next_attempt_at <= _NOW, _FREE),
    "lapsed": (_PENDING, _REQ.c.layer_deadline <= _NOW),
    "reminded": (_PENDING, _REQ.c.next_reminder_at <= _NOW),
    "escalated": (_PENDING, _REQ.c.escalate_at <= _NOW),
    "review_reminded": (_REQ.c.kind == BREAKGLASS, _REQ.c.review_remind_at <= _NOW),
    "warned": (_GRANT.c.status == "active", _GRANT.c.warn_at <= _NOW, _FREE),
}
PROBE = select(*(exists().where(*where).label(kind) for kind, where in CONDITIONS.items()))

# The earliest moment a grant falls due for revocation or for its (retried or scheduled) grant: three
# seeks, one per status, on the (status, due) indexes. After a pass that found nothing, the worker wakes
# then rather than at the next tick (``Worker._wake_when_due``).
# Grants being granted or revoked under a live claim (this worker's, a handed-over grant's, another
# replica's) are not due for this worker: counted, every pass while grants were in flight woke the worker
# for a pass that found them claimed. A claim whose lease runs out is found by the tick.
NEXT_DUE = select(*(select(func.min(col)).where(_GRANT.c.status == status, *free).scalar_subquery()
                    for status, col, free in (("active", _GRANT.c.expires_at, ()),
                                              ("revoking", _GRANT.c.next_attempt_at, (_FREE,)),
                                              ("granting", _GRANT.c.next_attempt_at, (_FREE,)))))


async def due_kinds(db: Database, now: datetime) -> frozenset[str]:
    """The kinds of work with something due at ``now`` (a snapshot: what falls due after it is the next
    pass's)."""
    async with db.core_reads() as reads:
        row = (await reads.rows(PROBE, {"b_now": now}))[0]
    return frozenset(kind for kind, due in zip(CONDITIONS, row, strict=True) if due)
