"""The worker's probe (bot/services/background/due_probe.py): a kind is due exactly when its runner would find a row.

Each kind's own tests (reminders, escalations, lapses, break-glass reviews, warnings, grant retries) run
through full passes and fail when the probe misses their kind; these pin the edges on rows written
directly: due at ``now`` (not a microsecond later), the status or kind the runner selects, a live claim.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from bot.services.background.due_probe import CONDITIONS, due_kinds
from storage.tables import AccessRequest, Grant
from tests.conftest import DbFactory

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)


def _request(rid: str, **values: Any) -> dict[str, Any]:
    """A request row; every due column given (None unless set): one INSERT takes rows of one shape."""
    return {"layer_deadline": None, "next_reminder_at": None, "escalate_at": None, "review_remind_at": None,
            # one requester per row: one pending request per person and eligibility (uq_request_one_pending)
            "id": rid, "eligibility": "access", "kind": "access", "requester": f"{rid.lower()}@example.com",
            "duration_s": 3600, "justification": "work", "status": "pending", "created_at": NOW,
            "updated_at": NOW, **values}


def _grant(gid: str, **values: Any) -> dict[str, Any]:
    return {"next_attempt_at": None, "warn_at": None, "claimed_until": None, "claimed_by": None,
            "id": gid, "request_id": "R-base", "connector": "demo", "target_kind": "group",
            "target_id": "target", "user_email": "a@example.com", "status": "active", **values}


async def _probe(db_factory: DbFactory, requests: list[dict[str, Any]], grants: list[dict[str, Any]],
                 now: datetime = NOW) -> frozenset[str]:
    db = db_factory()
    await db.migrate()
    async with db.transaction() as session:
        await session.execute(insert(AccessRequest.__table__), [_request("R-base", status="active"), *requests])  # type: ignore[attr-defined]
        if grants:
            await session.execute(insert(Grant.__table__), grants)  # type: ignore[attr-defined]
    return await due_kinds(db, now)


async def test_nothing_due_in_a_quiet_database(db_factory: DbFactory) -> None:
    # every due column set, all in the future; finished rows with due columns in the past
    later = NOW + TICK
    requests = [_request("R-1", layer_deadline=later, next_reminder_at=later, escalate_at=later),
                _request("R-2", kind="breakglass", status="active", review_remind_at=later),
                _request("R-3", status="denied", layer_deadline=NOW, next_reminder_at=NOW, escalate_at=NOW)]
    grants = [_grant("G-1", status="granting", next_attempt_at=later), _grant("G-2", warn_at=later),
              _grant("G-3", status="ended", warn_at=NOW, next_attempt_at=NOW)]
    assert await _probe(db_factory, requests, grants) == frozenset()


async def test_each_kind_is_due_from_its_due_time_on(db_factory: DbFactory) -> None:
    requests = [_request("R-lapse", layer_deadline=NOW), _request("R-remind", next_reminder_at=NOW - TICK),
                _request("R-escalate", escalate_at=NOW - timedelta(days=1)),
                _request("R-review", kind="breakglass", status="expired", review_remind_at=NOW)]
    grants = [_grant("G-retry", status="granting", next_attempt_at=NOW), _grant("G-warn", warn_at=NOW)]
    assert await _probe(db_factory, requests, grants) == frozenset(CONDITIONS)


async def test_a_grant_under_a_live_claim_is_not_due(db_factory: DbFactory) -> None:
    claim = {"claimed_until": NOW + timedelta(minutes=5), "claimed_by": "other-replica"}
    grants = [_grant("G-retry", status="granting", next_attempt_at=NOW, **claim),
              _grant("G-warn", warn_at=NOW, **claim)]
    assert await _probe(db_factory, [], grants) == frozenset()


async def test_a_grant_whose_claim_ran_out_is_due_again(db_factory: DbFactory) -> None:
    expired = {"claimed_until": NOW - TICK, "claimed_by": "dead-replica"}
    grants = [_grant("G-retry", status="granting", next_attempt_at=NOW, **expired)]
    assert await _probe(db_factory, [], grants) == {"granted"}


async def test_a_review_reminder_is_only_for_break_glass(db_factory: DbFactory) -> None:
    requests = [_request("R-1", status="expired", review_remind_at=NOW)]  # an ordinary request
    assert await _probe(db_factory, requests, []) == frozenset()
