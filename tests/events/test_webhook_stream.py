"""The event stream to a Standard Webhooks receiver: every audit event arrives signed (checked with the
standardwebhooks library's verifier), as a CloudEvent, in order, each id once; a sink that is down
queues and catches up; a replay sends again under the same ids; two replicas send each event once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from bot.domain.policy_sections import EventSink
from bot.events import cursor
from bot.events.metrics import sink_lag
from bot.events.stream import EventStream, Sink, build_sink
from bot.services.auditing.audit import append_event
from bot.services.clock import ManualClock
from storage.db import Database
from tests.conftest import DbFactory
from tests.events.receivers import SECRET, WebhookReceiver


class Ticks:
    """A monotonic clock the test moves (backoffs are waited out by moving it, never by sleeping)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = await WebhookReceiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def webhook(url: str, name: str = "siem") -> EventSink:
    return EventSink.model_validate({"name": name, "type": "webhook", "url": url, "secret": SECRET,
                                     "timeout": "5s", "source": "urn:jitbot:test"})


async def write(db: Database, clock: ManualClock, *events: tuple[str, str]) -> None:
    """One transaction per (request id, kind)."""
    for request_id, kind in events:
        async with db.transaction() as session:
            await append_event(session, at=clock.now(), kind=kind, actor="ana@example.com", request_id=request_id,
                               detail={"eligibility": "prod-db"})


async def test_every_event_reaches_the_webhook_signed_in_order_once(
        db_factory: DbFactory, clock: ManualClock, receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    db = db_factory()
    await db.migrate()
    stream = EventStream(db, lambda: (webhook(receiver.url),), clock, http=http, owner="a", monotonic=Ticks())
    assert await stream.pass_once() == 0  # the sink starts after the newest event: none yet
    await write(db, clock, ("R-1", "requested"), ("R-2", "requested"), ("R-1", "approved"), ("R-1", "granted"),
                ("R-2", "denied"))
    assert await stream.pass_once() == 5
    assert receiver.refused == [] and receiver.duplicates == []
    assert receiver.ids() == sorted(receiver.ids()) and len(receiver.ids()) == 5
    first = receiver.events[0]
    assert first["headers"]["webhook-id"] == f"evt_{first['event']['id']}"
    assert first["headers"]["Content-Type"].startswith("application/cloudevents+json")
    event = first["event"]
    assert event["specversion"] == "1.0" and event["source"] == "urn:jitbot:test"
    assert event["type"] == "dev.jitbot.access.requested" and event["subject"] == "R-1"
    assert event["time"].endswith("Z") and event["data"]["actor"] == "ana@example.com"
    assert len(event["data"]["hash"]) == 64
    assert [e["event"]["type"].rsplit(".", 1)[1] for e in receiver.events] == [
        "requested", "requested", "approved", "granted", "denied"]
    calls = receiver.calls
    assert await stream.pass_once() == 0 and receiver.calls == calls  # nothing new: nothing sent
    await stream.close()


async def test_a_down_sink_queues_and_catches_up_in_order(
        db_factory: DbFactory, clock: ManualClock, receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    db = db_factory()
    await db.migrate()
    ticks = Ticks()
    sinks = (webhook(receiver.url),)
    stream = EventStream(db, lambda: sinks, clock, http=http, owner="a", monotonic=ticks)
    await stream.pass_once()
    receiver.up = False
    await write(db, clock, ("R-1", "requested"), ("R-1", "granted"))
    assert await stream.pass_once() == 0 and receiver.calls == 1  # tried the first, refused
    assert (await sink_lag(db, sinks, clock.now()))["siem"][0] == 2
    assert await stream.pass_once() == 0 and receiver.calls == 1  # backing off: not tried again yet
    for _ in range(3):  # still down for hours: the events wait, however long
        ticks.now += 3600
        clock.advance(timedelta(hours=1))
        await write(db, clock, ("R-2", "requested"))
        assert await stream.pass_once() == 0
    assert (await sink_lag(db, sinks, clock.now())) == {"siem": (5, 3 * 3600.0)}
    receiver.up = True
    ticks.now += 3600
    assert await stream.pass_once() == 5
    assert receiver.ids() == sorted(receiver.ids()) and len(set(receiver.ids())) == 5
    assert receiver.duplicates == [] and receiver.refused == []
    assert (await sink_lag(db, sinks, clock.now())) == {"siem": (0, 0.0)}
    await stream.close()


async def test_a_failure_mid_batch_keeps_what_went_through_and_resends_from_the_first_not_taken(
        db_factory: DbFactory, clock: ManualClock, receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    db = db_factory()
    await db.migrate()
    ticks = Ticks()
    stream = EventStream(db, lambda: (webhook(receiver.url),), clock, http=http, owner="a", monotonic=ticks)
    await stream.pass_once()
    await write(db, clock, *[(f"R-{i}", "requested") for i in range(4)])
    receiver.fail_calls = {2}
    assert await stream.pass_once() == 1  # the first went through, the second failed
    ticks.now += 600
    assert await stream.pass_once() == 3  # from the second on, not from the first
    assert receiver.duplicates == [] and len(receiver.ids()) == 4 and receiver.ids() == sorted(receiver.ids())
    assert receiver.calls == 5
    await stream.close()


async def test_replay_sends_again_under_the_same_ids_and_receivers_dedupe(
        db_factory: DbFactory, clock: ManualClock, receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    db = db_factory()
    await db.migrate()
    stream = EventStream(db, lambda: (webhook(receiver.url),), clock, http=http, owner="a", monotonic=Ticks())
    await stream.pass_once()
    await write(db, clock, *[(f"R-{i}", "requested") for i in range(5)])
    await stream.pass_once()
    ids = receiver.ids()
    moved = await cursor.rewind(db, "siem", since=ids[2])
    assert moved is not None and moved.last_id == ids[2] - 1
    assert await stream.pass_once() == 3
    assert receiver.duplicates == [f"evt_{i}" for i in ids[2:]]
    assert receiver.ids() == ids
    await stream.close()


async def test_a_replay_during_a_send_is_not_overwritten_by_the_sender(
        db_factory: DbFactory, clock: ManualClock, receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    db = db_factory()
    await db.migrate()
    ids: list[int] = []

    class Rewinding:
        """Wraps the real sink: once armed, its next send is followed by a replay from event 1."""

        def __init__(self, inner: Sink) -> None:
            self.inner, self.name, self.armed = inner, "siem", False

        async def send(self, cloudevent: dict[str, Any]) -> None:
            await self.inner.send(cloudevent)
            ids.append(int(cloudevent["id"]))
            if self.armed:
                self.armed = False
                await cursor.rewind(db, "siem", since=1)

        async def close(self) -> None:
            await self.inner.close()

    sinks: list[Rewinding] = []

    def make(config: EventSink, session: aiohttp.ClientSession) -> Sink:
        sinks.append(Rewinding(build_sink(config, session)))
        return sinks[-1]

    stream = EventStream(db, lambda: (webhook(receiver.url),), clock, http=http, owner="a", monotonic=Ticks(),
                         make_sink=make)
    await stream.pass_once()
    await write(db, clock, *[(f"R-{i}", "requested") for i in range(3)])
    await stream.pass_once()
    await write(db, clock, *[(f"R-{i}", "granted") for i in range(2)])
    sinks[0].armed = True
    await stream.pass_once()
    # the batch of 4 and 5 could not move the cursor (rewound meanwhile): the same pass sent 1 to 5 again
    assert ids == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    assert (await cursor.read(db, "siem")).last_id == 5  # type: ignore[union-attr]
    assert receiver.ids() == [1, 2, 3, 4, 5]
    await stream.close()


async def test_two_replicas_send_each_event_once(
        db_factory: DbFactory, clock: ManualClock, receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    db_a, db_b = db_factory(), db_factory()
    await db_a.migrate()
    sinks = (webhook(receiver.url),)
    a = EventStream(db_a, lambda: sinks, clock, http=http, owner="a", monotonic=Ticks())
    b = EventStream(db_b, lambda: sinks, clock, http=http, owner="b", monotonic=Ticks())
    await a.pass_once()
    await write(db_a, clock, *[(f"R-{i}", "requested") for i in range(6)])
    await asyncio.gather(a.pass_once(), b.pass_once(), a.pass_once(), b.pass_once())
    assert receiver.duplicates == [] and len(receiver.ids()) == 6 and receiver.ids() == sorted(receiver.ids())
    await a.close()
    await b.close()


async def test_a_hanging_sink_holds_up_no_other(
        db_factory: DbFactory, clock: ManualClock, receiver: WebhookReceiver, http: aiohttp.ClientSession) -> None:
    db = db_factory()
    await db.migrate()
    release = asyncio.Event()

    class Hanging:
        name = "stuck"

        async def send(self, cloudevent: dict[str, object]) -> None:
            await release.wait()

        async def close(self) -> None:
            pass

    sinks = (webhook(receiver.url), webhook("http://127.0.0.1:9/never", name="stuck"))
    stream = EventStream(db, lambda: sinks, clock, http=http, owner="a", monotonic=Ticks(),
                         make_sink=lambda c, h: Hanging() if c.name == "stuck" else build_sink(c, h))
    await stream.pass_once()
    await write(db, clock, ("R-1", "requested"), ("R-1", "granted"))
    started = stream.start_due()
    assert len(started) == 2
    done, pending = await asyncio.wait(started, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1 and len(pending) == 1 and len(receiver.ids()) == 2
    again = stream.start_due()  # the stuck sink's drain is still under way: not started twice
    assert len(again) == 1 and await again[0] == 0
    release.set()
    await asyncio.gather(*pending)
    await stream.close()
