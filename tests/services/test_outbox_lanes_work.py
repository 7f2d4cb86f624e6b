"""The claim pass finds the lanes waiting for a claim (``WAITING_LANES``) by each declared lane's head, a seek
on (order_key, status, id): the work does not grow with the outbox's other pending messages nor with the
lane's backlog. Work is counted, not timed (the helpers of test_outbox_asks_work.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, text

from bot.services.outbox import sql as outbox_sql
from bot.services.outbox.dispatcher import enqueue
from bot.services.outbox.lanes import AUDIT_LANE, LANES
from storage.core_tx import pending
from tests.conftest import DbFactory
from tests.services.test_outbox_asks_work import NOW, Counter, _pg_index_entries, _row, _sqlite_instructions


def _backlog(n: int) -> list[dict[str, Any]]:
    """``n`` pending messages: other requests' (a third of them claimed), and a quarter the lane's, behind its head."""
    rows = []
    for i in range(n):
        other = f"R-{i:08d}"
        kind, key = [("approval_request", f"{other}:L1:p{i}"), ("approval_update", f"{other}:L1"),
                     ("requester", f"{other}:requester"), ("audit", AUDIT_LANE)][i % 4]
        rows.append(_row(key, kind=kind, claimed=i % 3 == 0 and kind != "audit"))
    return rows


async def _waiting(db_factory: DbFactory, rows: Sequence[dict[str, Any]],
                   statement: Any = outbox_sql.WAITING_LANES) -> tuple[list[str], int]:
    """(the lanes ``statement`` finds among ``rows``, the work of finding them)."""
    db = db_factory()
    await db.migrate()
    async with db.engine.begin() as conn:
        # a clean table for each size (PostgreSQL: no dead index entries left by the other)
        await conn.execute(outbox_sql.OUTBOX.delete() if db.is_sqlite else text("TRUNCATE outbox"))
        await conn.execute(insert(outbox_sql.OUTBOX), list(rows))
        if not db.is_sqlite:
            await conn.execute(text("ANALYZE outbox"))
    counter: Counter = _sqlite_instructions if db.is_sqlite else _pg_index_entries
    found: list[str] = []
    async with db.engine.connect() as conn:

        async def look() -> None:
            found.extend((await conn.execute(statement, {"b_now": NOW})).scalars())

        work = await counter(conn, look)
    await db.dispose()
    return sorted(found), work


@pytest.mark.parametrize("lanes", [LANES, (AUDIT_LANE, "lane:quiet")])
async def test_the_waiting_lanes_are_found_without_reading_other_pending_messages(
        db_factory: DbFactory, lanes: tuple[str, ...]) -> None:
    statement = outbox_sql.waiting_lanes(lanes)
    few = await _waiting(db_factory, [_row(AUDIT_LANE, kind="audit"), *_backlog(200)], statement)
    many = await _waiting(db_factory, [_row(AUDIT_LANE, kind="audit"), *_backlog(3000)], statement)
    assert few[0] == many[0] == [AUDIT_LANE]
    assert few[1] > 0
    assert many[1] <= few[1] * 1.2 + 10, (few[1], many[1])


def _head(**changes: Any) -> dict[str, Any]:
    return {**_row(AUDIT_LANE, kind="audit"), **changes}


@pytest.mark.parametrize(("head", "waiting"), [
    (_head(), True),
    (_head(claimed_until=NOW - timedelta(seconds=1), claimed_by="gone"), True),  # its lease ran out
    (_head(claimed_until=NOW + timedelta(minutes=1), claimed_by="w2"), False),  # a chain holds the lane
    (_head(next_attempt_at=NOW + timedelta(seconds=5)), False),  # backed off: the lane waits for it
])
async def test_a_lane_waits_for_a_claim_when_its_head_is_due_and_unclaimed(
        db_factory: DbFactory, head: dict[str, Any], waiting: bool) -> None:
    behind = [_row(AUDIT_LANE, kind="audit") for _ in range(3)]  # due and unclaimed: taken by the head's chain
    sent = {**_row(AUDIT_LANE, kind="audit"), "status": "sent"}
    assert (await _waiting(db_factory, [sent, head, *behind]))[0] == ([AUDIT_LANE] if waiting else [])


async def test_no_lane_waits_without_pending_lane_messages(db_factory: DbFactory) -> None:
    assert (await _waiting(db_factory, [{**_row(AUDIT_LANE, kind="audit"), "status": "sent"},
                                        _row("R-1:requester", kind="requester")]))[0] == []


async def test_a_message_of_an_undeclared_lane_is_refused(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    assert "lane:other" not in LANES
    with pytest.raises(ValueError, match="lane:other"):
        async with db.transaction() as session:
            enqueue(session, at=NOW, order_key="lane:other", kind="audit", payload={})
    async with db.transaction() as session:
        enqueue(session, at=NOW, order_key=AUDIT_LANE, kind="audit", payload={})
        enqueue(session, at=NOW, order_key="R-1:requester", kind="requester", payload={})
        assert len(pending(session)["outbox_rows"]) == 2
    await db.dispose()
