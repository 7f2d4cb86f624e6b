"""Runs the policy's event sinks: each sends the audit events after its cursor, oldest first.

Per sink, a pass reads the events after the cursor (a plain read: nothing to do costs no write), takes
the lease, sends them one by one in id order and moves the cursor past each batch that went through. A
sink that fails (``RetryLater``) keeps its cursor at the first event it did not take and is tried again
after a backoff (doubling up to ``max_backoff``, or the receiver's Retry-After) — however long it stays
down. Sinks run side by side, in their own task, apart from the Slack outbox and the worker: a slow or
dead receiver delays nothing but itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import aiohttp

from bot.domain.policy_sections import EventSink
from bot.events import cursor
from bot.events.cloudevent import to_cloudevent
from bot.events.syslog import SyslogSink
from bot.events.webhook import WebhookSink
from bot.services.clock import Clock
from bot.services.outbox.delivery import RetryLater
from storage.db import Database

log = logging.getLogger(__name__)


class Sink(Protocol):
    name: str

    async def send(self, cloudevent: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


def build_sink(config: EventSink, http: aiohttp.ClientSession) -> Sink:
    return WebhookSink(config, http) if config.type == "webhook" else SyslogSink(config)


@dataclass
class _State:
    config: EventSink
    sink: Sink
    failures: int = 0
    retry_at: float = 0.0  # monotonic
    task: asyncio.Task[int] | None = None  # its drain under way (``start_due``)
    counts: dict[str, int] = field(default_factory=lambda: {"sent": 0, "failed": 0})


class EventStream:
    """Sends audit events to sinks. ``configs`` is asked each pass (the policy may be reloaded)."""

    def __init__(self, db: Database, configs: Callable[[], tuple[EventSink, ...]], clock: Clock, *,
                 http: aiohttp.ClientSession, owner: str, lease: timedelta = timedelta(minutes=1),
                 batch: int = 100, max_backoff: float = 300.0,
                 make_sink: Callable[[EventSink, aiohttp.ClientSession], Sink] = build_sink,
                 monotonic: Callable[[], float] | None = None) -> None:
        self.db, self.configs, self.clock, self.owner = db, configs, clock, owner
        self.http, self.lease, self.batch, self.max_backoff = http, lease, batch, max_backoff
        self._make_sink = make_sink
        self._monotonic = monotonic or time.monotonic
        self._states: dict[str, _State] = {}
        self._closing: set[asyncio.Future[None]] = set()  # sinks of a replaced configuration, closing

    def _current(self) -> list[_State]:
        wanted = {c.name: c for c in self.configs()}
        for name in list(self._states):
            if name not in wanted or self._states[name].config != wanted[name]:
                state = self._states.pop(name)
                closing = asyncio.ensure_future(state.sink.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        for name, config in wanted.items():
            if name not in self._states:
                self._states[name] = _State(config, self._make_sink(config, self.http))
        return [self._states[n] for n in wanted]

    async def pass_once(self) -> int:
        """Drain every due sink that has no drain under way (``start_due``) and wait for them; returns how
        many events were taken."""
        return sum(await asyncio.gather(*self.start_due()))

    async def _drain(self, state: _State) -> int:
        name = state.config.name
        sent = 0
        try:
            while True:
                at = (await cursor.start(self.db, name)).last_id
                events = await cursor.events_after(self.db, at, self.batch)
                if not events:
                    return sent
                if not await cursor.take(self.db, name, owner=self.owner, at=at, now=self.clock.now(),
                                         lease=self.lease):
                    return sent  # another replica sends them, or a replay moved the cursor: next pass
                taken = at
                try:
                    for row in events:
                        await state.sink.send(to_cloudevent(row, source=state.config.source))
                        assert row.id is not None
                        taken = row.id
                        sent += 1
                finally:
                    if taken != at:
                        await cursor.advance(self.db, name, owner=self.owner, start=at, to=taken,
                                             now=self.clock.now(), lease=self.lease)
                state.failures = 0
        except RetryLater as exc:
            state.failures += 1
            state.counts["failed"] += 1
            backoff = exc.after if exc.after is not None else \
                min(self.max_backoff, 2.0 ** min(state.failures, 12)) * (0.75 + random.random() / 2)
            state.retry_at = self._monotonic() + backoff
            log.warning("event sink %s: %s; trying again in %.0fs", name, exc, backoff)
            return sent
        finally:
            state.counts["sent"] += sent

    def sinks(self) -> dict[str, Sink]:
        """The sinks as built for the current configuration."""
        return {s.config.name: s.sink for s in self._current()}

    def start_due(self) -> list[asyncio.Task[int]]:
        """Start a drain, in its own task, for each sink that is due and has none under way: a sink that
        hangs (up to its timeout) holds up no other."""
        now, started = self._monotonic(), []
        for state in self._current():
            if state.retry_at <= now and (state.task is None or state.task.done()):
                state.task = asyncio.create_task(self._drain(state))
                started.append(state.task)
        return started

    async def run(self, stop: asyncio.Event, *, interval: float = 1.0) -> None:
        """Start the due sinks' drains every ``interval`` seconds until ``stop`` is set."""
        try:
            while not stop.is_set():
                try:
                    for task in self.start_due():
                        task.add_done_callback(_log_failure)
                except Exception:
                    log.exception("event stream pass failed")
                try:
                    await asyncio.wait_for(stop.wait(), interval)
                except TimeoutError:
                    pass
        finally:
            running = [s.task for s in self._states.values() if s.task is not None and not s.task.done()]
            if running:  # let sends under way finish and be recorded, so that fewer go twice after a restart
                await asyncio.wait(running, timeout=10)
                for task in running:
                    task.cancel()
            await self.close()

    async def close(self) -> None:
        states, self._states = self._states, {}
        for state in states.values():
            await state.sink.close()


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:  # the database unreachable: the next pass
        log.error("event sink drain failed", exc_info=task.exception())


class Running:
    """A stream running in its own task (``start``); ``stop`` ends it after the send under way."""

    def __init__(self, stream: EventStream) -> None:
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(stream.run(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        try:
            await asyncio.wait_for(self.task, 15)
        except TimeoutError:
            log.warning("event stream did not stop in 15s; cancelled (what it sent goes again after a restart)")


def start(db: Database, configs: Callable[[], tuple[EventSink, ...]], clock: Clock, *,
          http: aiohttp.ClientSession, owner: str) -> Running:
    """``serve`` and ``worker``: run the stream in its own task."""
    return Running(EventStream(db, configs, clock, http=http, owner=owner))
