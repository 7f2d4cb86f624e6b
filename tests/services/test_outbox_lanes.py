"""Lanes: one channel's posts, paced to Slack's per-channel limit, digested when they pile up."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from bot.fakes import FakeSlack
from bot.services.clock import ManualClock
from bot.services.outbox.dispatcher import AUDIT_LANE, Delivery, OutboxDispatcher, RetryLater, enqueue
from bot.slack.notifier import SlackNotifier
from storage.tables import OutboxMessage
from tests.conftest import DbFactory

TOKEN = "xoxb-lanes"


class Monotonic:
    """A monotonic clock for the pacing; sleeping moves it on (no real waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


class LaneNotifier:
    def __init__(self) -> None:
        self.posts: list[list[int]] = []  # each post: the line numbers it carried
        self.refuse: dict[int, float] = {}  # the nth call (from 1) is refused with this Retry-After
        self.calls = 0

    async def deliver(self, kind: str, payload: dict[str, Any]) -> Delivery:
        return await self.deliver_batch(kind, [payload])

    async def deliver_batch(self, kind: str, payloads: list[dict[str, Any]]) -> Delivery:
        assert kind == "audit"
        self.calls += 1
        if self.calls in self.refuse:
            raise RetryLater("slack rate limited", after=self.refuse[self.calls])
        self.posts.append([p["n"] for p in payloads])
        return Delivery()


async def _lines(db: Any, clock: ManualClock, numbers: range) -> None:
    async with db.transaction() as session:
        for n in numbers:
            enqueue(session, at=clock.now(), order_key=AUDIT_LANE, kind="audit",
                    payload={"n": n, "text": f"line {n}", "event": "note", "actor": "test"})


async def _paced_lane(db_factory: DbFactory, clock: ManualClock
                      ) -> tuple[Any, Monotonic, LaneNotifier, OutboxDispatcher]:
    """A migrated database and a dispatcher whose lane posts once a second, on a clock that sleeps move."""
    db = db_factory()
    await db.migrate()
    mono, notifier = Monotonic(), LaneNotifier()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1", lane_interval=1.0, lane_batch=100,
                                  monotonic=mono, sleep=mono.sleep)
    return db, mono, notifier, dispatcher


async def _statuses(db: Any) -> list[tuple[str, int]]:
    async with db.sessions() as session:
        rows = await session.execute(select(OutboxMessage.status, OutboxMessage.attempts).order_by(OutboxMessage.id))
        return [(s, a) for s, a in rows.all()]


async def test_a_paced_lane_posts_once_per_interval_and_bundles_what_piled_up(
        db_factory: DbFactory, clock: ManualClock) -> None:
    db, mono, notifier, dispatcher = await _paced_lane(db_factory, clock)
    await _lines(db, clock, range(250))
    assert await dispatcher.drain() == 250
    # the head goes at once, alone; then one post per second, each as full as the batch allows
    assert [len(p) for p in notifier.posts] == [1, 100, 100, 49]
    assert [n for post in notifier.posts for n in post] == list(range(250))  # in order, each once
    assert mono.sleeps == [1.0, 1.0, 1.0]
    assert await _statuses(db) == [("sent", 1)] * 250


async def test_lines_that_arrive_while_the_lane_waits_join_the_next_post(db_factory: DbFactory,
                                                                        clock: ManualClock) -> None:
    db, mono, notifier, dispatcher = await _paced_lane(db_factory, clock)
    await _lines(db, clock, range(1))
    await dispatcher.drain()
    mono.now += 0.25  # a quarter of a second later, more lines: the head waits out the rest of the second
    await _lines(db, clock, range(1, 4))

    async def sleep_while_lines_arrive(seconds: float) -> None:
        await _lines(db, clock, range(4, 6))
        await mono.sleep(seconds)

    dispatcher._sleep = sleep_while_lines_arrive
    await dispatcher.drain()
    assert notifier.posts == [[0], [1, 2, 3, 4, 5]]
    assert mono.sleeps == [0.75]


async def test_a_rate_limited_digest_goes_back_whole_and_keeps_its_order(db_factory: DbFactory,
                                                                         clock: ManualClock) -> None:
    db, mono, notifier, dispatcher = await _paced_lane(db_factory, clock)
    await _lines(db, clock, range(5))
    notifier.refuse = {2: 30.0}  # the digest of lines 1-4 draws 429 + Retry-After: 30
    assert await dispatcher.drain() == 1
    assert await _statuses(db) == [("sent", 1)] + [("pending", 1)] * 4
    clock.advance(timedelta(seconds=29))
    assert await dispatcher.drain() == 0  # not before Retry-After
    clock.advance(timedelta(seconds=1))
    assert await dispatcher.drain() == 4
    assert notifier.posts == [[0], [1, 2, 3, 4]]
    assert await _statuses(db) == [("sent", 1)] + [("sent", 2)] * 4


async def test_an_unpaced_lane_posts_line_by_line(db_factory: DbFactory, clock: ManualClock) -> None:
    db = db_factory()
    await db.migrate()
    notifier = LaneNotifier()
    dispatcher = OutboxDispatcher(db, notifier, clock, owner="w1")
    await _lines(db, clock, range(4))
    assert await dispatcher.drain() == 4
    assert notifier.posts == [[0], [1], [2], [3]]


async def test_paced_audit_lines_stay_within_slacks_channel_limit(db_factory: DbFactory, clock: ManualClock) -> None:
    """Against the fake Slack enforcing one post per second per channel (bursts of 3): paced, no post is
    refused and every line arrives in order; unpaced, the same lines draw 429s."""
    db = db_factory()
    await db.migrate()
    mono = Monotonic()
    async with FakeSlack(token=TOKEN, channel_post_limit=(1.0, 3), now=mono) as slack:
        slack.add_channel("C0AUDIT", "jit-audit")
        notifier = SlackNotifier(AsyncWebClient(token=TOKEN, base_url=slack.url), db, audit_channel="C0AUDIT")
        paced = OutboxDispatcher(db, notifier, clock, owner="w1", lane_interval=1.0, monotonic=mono,
                                 sleep=mono.sleep)
        for burst in range(6):
            await _lines(db, clock, range(burst * 10, burst * 10 + 10))
            await paced.drain()
        assert slack.rejected_posts("C0AUDIT") == 0
        text = "\n".join(m.text for m in slack.messages("C0AUDIT"))
        assert [int(line.rsplit("line ", 1)[1].split()[0]) for line in text.splitlines()] == list(range(60))
        assert len(slack.messages("C0AUDIT")) < 60 / 5

        unpaced = OutboxDispatcher(db, notifier, clock, owner="w1")
        await _lines(db, clock, range(60, 70))
        await unpaced.drain()
        assert slack.rejected_posts("C0AUDIT") > 0


async def test_a_digest_past_slacks_text_limit_is_split_never_cut(db_factory: DbFactory) -> None:
    db = db_factory()
    await db.migrate()
    async with FakeSlack(token=TOKEN) as slack:
        slack.add_channel("C0AUDIT", "jit-audit")
        notifier = SlackNotifier(AsyncWebClient(token=TOKEN, base_url=slack.url), db, audit_channel="C0AUDIT")
        payloads = [{"text": f"line {n} " + "x" * 2000, "event": "note", "actor": "test"} for n in range(30)]
        await notifier.deliver_batch("audit", payloads)
        posts = slack.messages("C0AUDIT")
        assert len(posts) == 2 and all(len(m.text) <= 40000 for m in posts)
        lines = [line for m in posts for line in m.text.splitlines()]
        assert [line.split()[1] for line in lines] == [str(n) for n in range(30)]
        assert "truncated" not in " ".join(lines)


class SizedNotifier(LaneNotifier):
    """A notifier whose digest holds at most ``room`` lines (as Slack's message size bounds a digest)."""

    room = 3

    def batch_fits(self, kind: str, payloads: list[dict[str, Any]]) -> int:
        return self.room


async def test_a_digest_holds_what_fits_in_one_post_and_the_rest_goes_next_turn(
        db_factory: DbFactory, clock: ManualClock) -> None:
    db, mono, _, dispatcher = await _paced_lane(db_factory, clock)
    notifier = SizedNotifier()
    dispatcher.notifier = notifier
    await _lines(db, clock, range(8))
    assert await dispatcher.drain() == 8
    assert notifier.posts == [[0], [1, 2, 3], [4, 5, 6], [7]]  # never two posts in one turn
    assert mono.sleeps == [1.0, 1.0, 1.0]
    assert await _statuses(db) == [("sent", 1)] * 8


async def test_lines_held_back_from_a_refused_digest_keep_their_place(db_factory: DbFactory,
                                                                      clock: ManualClock) -> None:
    db, mono, _, dispatcher = await _paced_lane(db_factory, clock)
    notifier = SizedNotifier()
    notifier.refuse = {2: 5.0}
    dispatcher.notifier = notifier
    await _lines(db, clock, range(6))
    assert await dispatcher.drain() == 1
    # lines 1-3 were refused (one attempt each); 4 and 5 were held back untried
    assert await _statuses(db) == [("sent", 1)] + [("pending", 1)] * 3 + [("pending", 0)] * 2
    clock.advance(timedelta(seconds=5))
    assert await dispatcher.drain() == 5
    assert notifier.posts == [[0], [1, 2, 3], [4, 5]]
