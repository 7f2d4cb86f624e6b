"""Break-glass: granted at once, announced loudly, reviewed after the fact, reminded daily until then."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.domain.requests import PolicyViolation
from bot.services.breakglass import BreakGlassService, ReviewOutcome
from bot.services.clock import ManualClock
from storage.tables import AccessRequest, Event
from tests.conftest import DbFactory
from tests.services.policies import extended_policy
from tests.services.stack import Stack, make_stack


async def _break(s: Stack, who: str = "alice@example.com", minutes: int = 30) -> AccessRequest:
    return await BreakGlassService(s.rt).invoke(requester=who, eligibility="db-admin",
                                                duration=timedelta(minutes=minutes),
                                                justification="primary is down, nobody answers")


async def _row(s: Stack, request_id: str) -> AccessRequest:
    async with s.rt.db.sessions() as session:
        return (await session.execute(select(AccessRequest).where(AccessRequest.id == request_id))).scalar_one()


async def test_break_glass_grants_at_once_and_alerts(db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    req = await _break(s)
    await s.worker.run_until_idle()
    assert await s.is_member("alice@example.com", "db-admins")
    row = await _row(s, req.id)
    assert row.kind == "breakglass" and row.status == "active"
    alerts = [a["text"] for a in s.notifier.of_kind("alert")]
    assert any("BREAK-GLASS" in t and "alice@example.com" in t for t in alerts)
    assert sorted(r["reviewer"] for r in s.notifier.of_kind("review_request")) == ["bob@example.com",
                                                                                    "carol@example.com"]
    assert s.notifier.of_kind("approval_request") == []
    async with s.rt.db.sessions() as session:
        kinds = [e.kind for e in (await session.execute(select(Event).order_by(Event.id))).scalars()]
    assert kinds[:3] == ["break_glass", "approved", "granted"]
    clock.advance(timedelta(minutes=30))
    await s.worker.run_until_idle()
    assert not await s.is_member("alice@example.com", "db-admins")


@pytest.mark.parametrize(("who", "eligibility", "minutes", "match"), [
    ("alice@example.com", "db-admin", 61, "at most 1h"),
    ("dave@example.com", "db-admin", 30, "not eligible"),  # a delegate, not a requestor
    ("alice@example.com", "readonly", 30, "does not allow break-glass"),
])
async def test_break_glass_is_refused_outside_its_rules(db_factory: DbFactory, clock: ManualClock, who: str,
                                                       eligibility: str, minutes: int, match: str) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    with pytest.raises(PolicyViolation, match=match):
        await BreakGlassService(s.rt).invoke(requester=who, eligibility=eligibility,
                                             duration=timedelta(minutes=minutes), justification="outage")
    async with s.rt.db.sessions() as session:
        assert (await session.execute(select(AccessRequest))).first() is None


async def test_review_records_who_and_refuses_the_user_and_strangers(db_factory: DbFactory,
                                                                    clock: ManualClock) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    bg = BreakGlassService(s.rt)
    req = await _break(s)
    with pytest.raises(PolicyViolation, match="your own"):
        await bg.review(request_id=req.id, reviewer="alice@example.com", outcome=ReviewOutcome.ACKNOWLEDGED)
    with pytest.raises(PolicyViolation, match="not a reviewer"):
        await bg.review(request_id=req.id, reviewer="erin@example.com", outcome=ReviewOutcome.ACKNOWLEDGED)
    text = await bg.review(request_id=req.id, reviewer="carol@example.com", outcome=ReviewOutcome.FLAGGED)
    assert "flagged" in text
    with pytest.raises(PolicyViolation, match="Already flagged by carol@example.com"):
        await bg.review(request_id=req.id, reviewer="bob@example.com", outcome=ReviewOutcome.ACKNOWLEDGED)
    row = await _row(s, req.id)
    assert (row.reviewed_by, row.review_outcome, row.review_remind_at) == ("carol@example.com", "flagged", None)
    await s.worker.run_until_idle()
    assert any("FLAGGED" in a["text"] for a in s.notifier.of_kind("alert"))
    assert s.notifier.of_kind("review_update")[-1]["outcome"] == "Flagged by carol@example.com"
    assert await bg.unreviewed() == []


async def test_unreviewed_break_glass_is_reminded_daily_until_reviewed(db_factory: DbFactory,
                                                                      clock: ManualClock) -> None:
    s = await make_stack(db_factory(), extended_policy(), clock)
    bg = BreakGlassService(s.rt)
    req = await _break(s)
    await s.worker.run_until_idle()
    s.notifier.delivered.clear()
    clock.advance(timedelta(hours=23, minutes=59))
    await s.worker.run_until_idle()
    assert s.notifier.of_kind("review_request") == []
    clock.advance(timedelta(minutes=1))
    await s.worker.run_until_idle()
    reminders = s.notifier.of_kind("review_request")
    assert sorted(r["reviewer"] for r in reminders) == ["bob@example.com", "carol@example.com"]
    assert all(r["note"].startswith("Reminder") for r in reminders)
    assert [r.id for r in await bg.unreviewed()] == [req.id]
    await bg.review(request_id=req.id, reviewer="bob@example.com", outcome=ReviewOutcome.ACKNOWLEDGED)
    s.notifier.delivered.clear()
    clock.advance(timedelta(days=2))
    await s.worker.run_until_idle()
    assert s.notifier.of_kind("review_request") == []
