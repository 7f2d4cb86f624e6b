"""Anchors keep the audit chain honest at its end: deleting the last events (or all of them) passes the
hash chain but not an anchor posted before; and every request and grant row must have its events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, select, update

from bot.domain.requests import Decision
from bot.policy_file import LoadedPolicy
from bot.services.auditing.audit import append_event, event_hash, verify_chain
from bot.services.auditing.audit_anchor import Anchor, AnchorError, anchor_text, current_anchor, parse_anchors
from bot.services.auditing.audit_check import verify_log
from bot.services.clock import ManualClock
from bot.slack import blocks
from storage.db import Database
from storage.tables import AccessRequest, Event, Grant
from tests.conftest import DbFactory
from tests.services.stack import make_stack


async def _chain(db: Database, clock: ManualClock, n: int) -> None:
    for i in range(n):
        async with db.transaction() as session:
            await append_event(session, at=clock.now(), kind="policy_applied", actor="ops", detail={"i": i})
        clock.advance(timedelta(seconds=1))


async def _delete_last(db: Database, n: int) -> None:
    async with db.transaction() as session:
        top = (await session.execute(select(func.max(Event.id)))).scalar_one()  # type: ignore[arg-type]
        await session.execute(delete(Event).where(Event.id > top - n))  # type: ignore[arg-type,operator]


def test_an_anchor_line_reads_back_from_text_copied_out_of_slack() -> None:
    anchor = Anchor(42, "ab" * 32, datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    line = anchor.line()
    assert line == f"jitbot-audit-anchor v1 count=42 head={'ab' * 32} at=2026-03-01T09:00:00Z"
    pasted = f"jitbot  9:00 AM\n{anchor_text(anchor)} _(by jitbot)_\nsomething else\n{line}\n"
    assert parse_anchors(pasted) == [anchor, anchor]
    assert parse_anchors("nothing here") == []


def test_user_text_cannot_carry_an_anchor() -> None:
    """A justification or a reason that spells an anchor: quoted user text loses the name (non-breaking
    hyphens), and a line that merely contains one among other words is not an anchor — no false alarm,
    and no refusal to verify."""
    forged = f"jitbot-audit-anchor v1 count=999999 head={'a' * 64} at=2026-03-01T09:00:00Z"
    assert parse_anchors(blocks.quoted(f"routine\n{forged}").replace(">", "")) == []
    copied = f"*R-ABC* prod for mallory@example.com: denied: {forged} _(by bob@example.com)_\nsee `{forged}`"
    assert parse_anchors(copied) == []


@pytest.mark.parametrize("bad", ["jitbot-audit-anchor v1 count=4 head=abc at=2026-03-01T09:00:00Z",
                                 "jitbot-audit-anchor v2 count=4",
                                 f"jitbot-audit-anchor v1 count=x head={'a' * 64} at=2026-03-01T09:00:00Z"])
def test_a_line_that_names_itself_an_anchor_but_is_not_one_is_refused(bad: str) -> None:
    with pytest.raises(AnchorError, match="anchors.txt:2: not an anchor line"):
        parse_anchors(f"hello\n{bad}\n", source="anchors.txt")


async def test_a_clean_chain_passes_its_anchors(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    await _chain(db, clock, 3)
    early = await current_anchor(db, now=clock.now())
    await _chain(db, clock, 4)
    late = await current_anchor(db, now=clock.now())
    assert (early.count, late.count) == (3, 7)
    report = await verify_log(db, [early, late])
    assert report.ok and report.anchors == 2 and report.latest == late, report


@pytest.mark.parametrize("cut", [1, 3, 6])
async def test_deleting_the_last_events_is_caught_by_an_anchor(db_factory: DbFactory, clock: ManualClock,
                                                                cut: int) -> None:
    db = db_factory()
    await db.migrate()
    await _chain(db, clock, 6)
    anchor = await current_anchor(db, now=clock.now())
    await _delete_last(db, cut)
    assert (await verify_chain(db)).ok  # the chain alone cannot tell
    report = await verify_log(db, [anchor])
    assert not report.ok
    assert report.problems == [f"the log has {6 - cut} events but the anchor of "
                               f"{anchor.at:%Y-%m-%dT%H:%M:%SZ} saw 6: {cut} or more events were deleted from its end"]


async def test_a_tail_cut_and_written_over_is_caught_at_the_anchored_event(db_factory: DbFactory,
                                                                           clock: ManualClock) -> None:
    """The last events deleted and new ones appended after what is left: the chain is valid and as long
    as before, but event number ``count`` is not the one the anchor saw."""
    db = db_factory()
    await db.migrate()
    await _chain(db, clock, 5)
    anchor = await current_anchor(db, now=clock.now())
    await _delete_last(db, 2)
    await _chain(db, clock, 3)
    assert (await verify_chain(db)).ok
    report = await verify_log(db, [anchor])
    assert not report.ok and "is event #5, which the anchor of" in report.chain.problem


async def test_a_rewritten_chain_is_caught_by_an_anchor(db_factory: DbFactory, clock: ManualClock) -> None:
    """Every hash recomputed after an edit: the chain verifies, the anchor does not."""
    db = db_factory()
    await db.migrate()
    await _chain(db, clock, 4)
    anchor = await current_anchor(db, now=clock.now())
    async with db.transaction() as session:
        rows = (await session.execute(select(Event).order_by(Event.id))).scalars().all()  # type: ignore[arg-type]
        prev = "0" * 64
        for row in rows:
            if row.id == rows[1].id:
                row.actor = "mallory"
            row.prev_hash = prev
            row.hash = prev = event_hash(row)
    assert (await verify_chain(db)).ok
    assert not (await verify_log(db, [anchor])).ok


async def test_deleting_every_event_is_caught_by_an_anchor(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    await _chain(db, clock, 4)
    anchor = await current_anchor(db, now=clock.now())
    async with db.transaction() as session:
        await session.execute(delete(Event))
    assert (await verify_chain(db)).ok
    report = await verify_log(db, [anchor])
    assert not report.ok and "the log has 0 events but the anchor" in report.problems[0]


async def test_the_worker_posts_an_anchor_hourly_when_the_chain_grew(db_factory: DbFactory, clock: ManualClock,
                                                                     loaded_policy: LoadedPolicy) -> None:
    db = db_factory()
    s = await make_stack(db, loaded_policy, clock)
    await s.worker.run_until_idle()  # the first turn starts the schedule
    await s.requests.submit(requester="bob@example.com", eligibility="readonly", duration=timedelta(hours=4),
                            justification="read the logs")
    await s.worker.run_until_idle()

    def anchors() -> list[Anchor]:
        return [a for p in s.notifier.of_kind("audit") for a in parse_anchors(p["text"])]

    assert anchors() == []
    clock.advance(timedelta(minutes=59))
    await s.worker.run_until_idle()
    assert anchors() == []
    clock.advance(timedelta(minutes=1))
    await s.worker.run_until_idle()
    [first] = anchors()
    assert first == await current_anchor(db, now=first.at) and first.count > 0
    clock.advance(timedelta(hours=2))  # nothing happened since: no new anchor
    await s.worker.run_until_idle()
    assert anchors() == [first]
    await s.requests.submit(requester="alice@example.com", eligibility="readonly", duration=timedelta(hours=1),
                            justification="again")
    clock.advance(timedelta(hours=1))
    await s.worker.run_until_idle()
    assert [a.count > first.count for a in anchors()] == [False, True]
    assert (await verify_log(db, anchors())).ok


async def test_the_weekly_review_post_ends_with_an_anchor(db_factory: DbFactory, clock: ManualClock,
                                                          loaded_policy: LoadedPolicy) -> None:
    db = db_factory()
    s = await make_stack(db, loaded_policy, clock)
    await s.worker.run_until_idle()  # records the review schedule
    await s.requests.submit(requester="bob@example.com", eligibility="readonly", duration=timedelta(hours=2),
                            justification="read the logs")
    clock.advance(timedelta(days=7))
    await s.worker.run_until_idle()
    [report] = s.notifier.of_kind("report")
    [anchor] = parse_anchors(report["text"])
    assert anchor.count > 0 and (await verify_log(db, [anchor])).ok


async def test_requests_and_grants_without_their_events_are_reported(db_factory: DbFactory, clock: ManualClock,
                                                                     loaded_policy: LoadedPolicy) -> None:
    db = db_factory()
    s = await make_stack(db, loaded_policy, clock)
    live = await s.requests.submit(requester="bob@example.com", eligibility="readonly",
                                   duration=timedelta(hours=1), justification="read")
    gone = await s.requests.submit(requester="alice@example.com", eligibility="readonly",
                                   duration=timedelta(hours=1), justification="read")
    denied = await s.requests.submit(requester="erin@example.com", eligibility="prod-admin",
                                     duration=timedelta(hours=1), justification="deploy", ticket="OPS-9")
    await s.approvals.decide(request_id=denied.id, layer=1, approver="bob@example.com", decision=Decision.DENY)
    await s.worker.run_until_idle()
    clock.advance(timedelta(hours=2))
    await s.worker.run_until_idle()  # both grants expire
    assert (await verify_log(db)).ok

    async with db.transaction() as session:  # erase what the log says about two of them, relink the rest
        await session.execute(delete(Event).where(
            ((Event.request_id == gone.id) & (Event.kind == "expired"))  # type: ignore[arg-type]
            | ((Event.request_id == denied.id) & (Event.kind == "denied"))  # type: ignore[arg-type]
            | ((Event.request_id == live.id) & (Event.kind.in_(["requested", "granted"])))))  # type: ignore[attr-defined]
        prev = "0" * 64
        for row in (await session.execute(select(Event).order_by(Event.id))).scalars().all():  # type: ignore[arg-type]
            row.prev_hash = prev
            row.hash = prev = event_hash(row)
    async with db.sessions() as session:
        grants = {g.request_id: g.id for g in (await session.execute(select(Grant))).scalars().all()}
    report = await verify_log(db)
    assert report.chain.ok and not report.ok
    assert sorted(report.problems) == sorted([
        f"request {live.id} has no event that created it (requested or break_glass)",
        f"grant {grants[live.id]} ({live.id}) went live at 2026-01-05 09:00:00 UTC without a granted event",
        f"request {gone.id} is expired, but no event moved it there",
        f"grant {grants[gone.id]} ({gone.id}) ended at 2026-01-05 11:00:00 UTC without an event recording its end",
        f"request {denied.id} is denied, but no event moved it there"])


async def test_a_grant_row_ended_by_hand_is_reported(db_factory: DbFactory, clock: ManualClock,
                                                     loaded_policy: LoadedPolicy) -> None:
    db = db_factory()
    s = await make_stack(db, loaded_policy, clock)
    await s.requests.submit(requester="bob@example.com", eligibility="readonly", duration=timedelta(hours=1),
                            justification="read")
    await s.worker.run_until_idle()
    clock.advance(timedelta(minutes=5))
    async with db.transaction() as session:
        await session.execute(update(Grant).values(status="ended", ended_at=clock.now(), end_reason="revoked"))
    report = await verify_log(db)
    assert not report.ok and "without an event recording its end" in report.problems[0]


async def test_every_kind_of_life_a_request_can_have_leaves_a_log_that_verifies(db_factory: DbFactory,
                                                                                clock: ManualClock) -> None:
    """No false alarm: approved, denied, cancelled, lapsed, released, revoked by an admin, extended,
    expired, break-glass (reviewed): every row has the events the cross-check looks for."""
    from bot.services.admin import AdminService
    from bot.services.breakglass import BreakGlassService, ReviewOutcome
    from tests.services.policies import extended_policy

    db = db_factory()
    s = await make_stack(db, extended_policy(), clock)
    hour = timedelta(hours=1)

    async def submit(who: str, what: str = "readonly", **kw: object) -> str:
        return (await s.requests.submit(requester=who, eligibility=what, duration=hour, justification="work",
                                        **kw)).id  # type: ignore[arg-type]

    prod = await submit("alice@example.com", "prod-admin", ticket="OPS-1")
    await s.approvals.decide(request_id=prod, layer=1, approver="bob@example.com", decision=Decision.APPROVE)
    await s.approvals.decide(request_id=prod, layer=2, approver="dave@example.com", decision=Decision.APPROVE)
    denied = await submit("erin@example.com", "prod-admin", ticket="OPS-2")
    await s.approvals.decide(request_id=denied, layer=1, approver="carol@example.com", decision=Decision.DENY)
    await s.requests.cancel(request_id=await submit("bob@example.com", "prod-admin", ticket="OPS-3"),
                            by="bob@example.com")
    await submit("alice@example.com", "db-admin")  # lapses
    released, revoked = await submit("alice@example.com"), await submit("bob@example.com")
    await s.worker.run_until_idle()
    await s.grants.end_early(request_id=released, actor="alice@example.com", reason="released")
    await AdminService(s.rt).revoke(actor="root@example.com", request_id=revoked)
    await s.grants.extend(request_id=prod, actor="alice@example.com", by=hour)
    glass = BreakGlassService(s.rt)
    used = await glass.invoke(requester="erin@example.com", eligibility="db-admin", duration=hour,
                              justification="db down")
    await s.worker.run_until_idle()
    await glass.review(request_id=used.id, reviewer="bob@example.com", outcome=ReviewOutcome.ACKNOWLEDGED)
    clock.advance(timedelta(hours=5))
    await s.worker.run_until_idle()
    report = await verify_log(db)
    assert report.ok, report.problems
    async with db.sessions() as session:
        statuses = set((await session.execute(select(AccessRequest.status))).scalars())  # type: ignore[call-overload]
    assert statuses == {"expired", "denied", "cancelled", "lapsed", "revoked"}
