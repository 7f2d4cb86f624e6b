"""Which kinds of the worker's work are due now: one read before a full pass.

A full pass used to run every kind's claim or read in its own transaction — grant retries, lapses,
reminders, escalations, break-glass review reminders, expiry warnings — whether or not anything was due:
with revocations, the heartbeat and the outbox, an idle replica made 13 commits a second. The probe
asks all of them at once (one EXISTS per kind, each a seek on that kind's (status, due) index) and the
pass runs only the kinds it finds due. Revocations do not wait for it: every pass runs them first.

Each condition is the one its runner selects by (bot/services/grants.py ``run_grants`` /
``run_warnings``, requests.py ``lapse_due``, reminders.py, breakglass.py); a runner whose condition
changes must change here too — the tests of each kind run through full passes and fail if the probe
misses it. The probe may say a kind is due when its runner then finds nothing (a grant this process is
already carrying out): that costs the runner's read, as before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, or_, select

from bot.domain.requests import Status
from storage.db import Database
from storage.tables import AccessRequest, Grant

_REQ = AccessRequest.__table__  # type: ignore[attr-defined]
_GRANT = Grant.__table__  # type: ignore[attr-defined]
_NOW: Any = bindparam("b_now")
_FREE = or_(_GRANT.c.claimed_until.is_(None), _GRANT.c.claimed_until < _NOW)
_PENDING = _REQ.c.status == Status.PENDING.value
BREAKGLASS = "breakglass"  # bot/services/breakglass.py KIND (imported there from here)

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


async def due_kinds(db: Database, now: datetime) -> frozenset[str]:
    """The kinds of work with something due at ``now`` (a snapshot: what falls due after it is the next
    pass's)."""
    async with db.core_reads() as reads:
        row = (await reads.rows(PROBE, {"b_now": now}))[0]
    return frozenset(kind for kind, due in zip(CONDITIONS, row, strict=True) if due)
