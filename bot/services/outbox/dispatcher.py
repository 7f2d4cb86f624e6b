"""The outbox: messages are written with the state change that causes them and delivered later.

Delivery is at least once and in order per ``order_key`` (the request id): the dispatcher only
claims the oldest pending message of each key. A ``RetryLater`` from the notifier (Slack down,
HTTP 429 + Retry-After) keeps the message pending until its due time; a ``PermanentFailure``
(e.g. ``channel_not_found``) marks it dead with the reason, so it never blocks later messages.

A *lane* (an order key starting with ``lane:``, e.g. ``AUDIT_LANE``) is one channel's posts. With a
``lane_interval`` its chain posts at most once per interval (Slack takes about one message per second
per channel); the messages that pile up meanwhile, up to ``lane_batch`` and as many as fit in one post,
go to the notifier's ``deliver_batch`` as one post (a digest). Quiet, a lane delivers one message at a
time. A lane has one chain at a time, across replicas (bot/services/outbox/sql.py). Lanes are declared
in ``LANES`` (bot/services/outbox/lanes.py); ``enqueue`` refuses any other ``lane:`` key.

Writing, and claiming at commit: bot/services/outbox/write.py; claims by key of what commits left
unclaimed: bot/services/outbox/keys.py; notifiers and what they answer: bot/services/outbox/delivery.py
(re-exported here).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from bot.services.clock import Clock
from bot.services.outbox import sql
from bot.services.outbox.delivery import (
    BatchNotifier,
    Delivery,
    FollowUp,
    Notifier,
    PermanentFailure,
    RecordingNotifier,
    Ref,
    RetryLater,
    deliver_all,
    deliver_each,
    fitting,
)
from bot.services.outbox.fence import still_ours
from bot.services.outbox.keys import CallLater, Cancellable, KeyClaims
from bot.services.outbox.lanes import AUDIT_LANE, is_lane
from bot.services.outbox.write import Claimed, enqueue, message_refs
from storage.db import Database

log = logging.getLogger(__name__)


__all__ = ["AUDIT_LANE", "BatchNotifier", "Claimed", "Delivery", "FollowUp", "Notifier", "OutboxDispatcher",
           "PermanentFailure", "RecordingNotifier", "Ref", "RetryLater", "deliver_all", "deliver_each", "enqueue",
           "fitting", "is_lane", "message_refs"]


class OutboxDispatcher(KeyClaims):
    def __init__(self, db: Database, notifier: Notifier, clock: Clock, *, lease: timedelta = timedelta(minutes=2),
                 max_backoff: float = 60.0, owner: str = "", concurrency: int = 32, lane_batch: int = 1000,
                 lane_interval: float = 0.0, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 call_later: CallLater | None = None) -> None:
        self.db, self.notifier, self.clock, self.owner = db, notifier, clock, owner
        self.concurrency = concurrency
        self.lease, self.max_backoff = lease, max_backoff
        # lanes: up to lane_batch messages per post, one post per lane_interval seconds (real time: it
        # paces against Slack's own limit, whatever the injected clock says)
        self.lane_batch, self.lane_interval = lane_batch, lane_interval
        self._monotonic, self._sleep = monotonic, sleep
        self._call_later = call_later  # the quarter-interval waits of ``notice`` (the loop's call_later)
        # ``run`` claims nothing while this says so (the worker's clock beyond the skew bound: clock_guard.py)
        self.paused: Callable[[], bool] = lambda: False
        self._lane_next: dict[str, float] = {}  # lane -> monotonic time it may post again
        # Unpaced, a lane has no reason to bundle: it posts each message as it is (threaded lines).
        self._lane_limit = lane_batch if lane_interval > 0 else 1
        self._to_record: list[tuple[list[Claimed], list[Ref], asyncio.Future[list[Claimed]]]] = []
        self._follow_ups: list[FollowUp] = []  # handed on by the deliveries in ``_to_record``
        self._recorder: asyncio.Task[None] | None = None
        self._handed: set[asyncio.Task[int]] = set()  # chains of messages claimed by their own commit
        self._active: set[asyncio.Task[int]] = set()  # chains started by the run loop
        self._in_flight = 0  # claims and chains of the continuous loop not finished yet
        self._live: dict[str, int] = {}  # order key -> chains of this process following it
        self._dirty: set[str] = set()  # live keys that got messages behind their chain (see ``notice``)
        self._recheck: set[str] = set()  # keys whose heads to claim now (``_claim_rechecks``)
        self._rechecker: asyncio.Task[None] | None = None
        self._lane_waits: dict[str, Cancellable] = {}  # lanes to claim by key shortly (``notice``)
        self._held_keys: set[str] = set()  # keys left to other processes' chains, looked at again together
        self._held_timer: Cancellable | None = None  # (``look_again``)
        self._held_until: dict[str, float] = {}  # paced lane -> monotonic time (``held_elsewhere``)
        self._closed = False  # set when the run loop ends: no claims by key after that
        self.counts: Counter[str] = Counter()  # claim passes, claims by key, records (logged when run ends)
        self._idle = asyncio.Event()
        self._idle.set()

    def _enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def quiesce(self) -> None:
        """Wait until the continuous loop has recorded everything it claimed (tests, the playground)."""
        while self._in_flight:
            await self._idle.wait()

    def _spawn(self, msg: Claimed) -> asyncio.Task[int]:
        """Start the chain that follows ``msg``'s key; the key counts as live until the chain ends."""
        self._enter()
        self._live[msg.order_key] = self._live.get(msg.order_key, 0) + 1
        return asyncio.create_task(self._tracked_chain(msg))

    async def _tracked_chain(self, msg: Claimed) -> int:
        key = msg.order_key
        try:
            return await self.chain(msg)
        except Exception:
            log.exception("outbox chain of %s failed; what it held goes again when its lease ends", key)
            return 0
        finally:
            self._leave()
            if (left := self._live[key] - 1) > 0:
                self._live[key] = left
            else:
                del self._live[key]
                if key in self._dirty:  # messages came while its last record was under way: claim them
                    self._dirty.discard(key)
                    self._claim_keys([key])

    async def claim(self, limit: int) -> list[Claimed]:
        """Claim up to ``limit`` due messages, each the oldest pending one of its order key."""
        now = self.clock.now()
        stmt = sql.CLAIM_HEADS_SQLITE if self.db.is_sqlite else sql.CLAIM_HEADS_PG
        lease = {"b_now": now, "b_until": now + self.lease, "b_owner": self.owner}
        self.counts["claim passes"] += 1
        async with self.db.core_transaction() as tx:
            rows = await tx.rows(stmt, {"b_limit": limit, **lease})
            if len(rows) < limit:
                lanes = await tx.scalars(sql.WAITING_LANES, {"b_now": now})
                rows += await self._claim_lanes(tx, sorted(lanes)[:limit - len(rows)], lease)
        return sorted((Claimed.of(row) for row in rows), key=lambda m: m.id)

    async def dispatch_once(self, limit: int = 50) -> int:
        """Deliver what is due; returns how many messages were sent."""
        # A claim holds at most one message per order key (the oldest pending one); each claimed key is
        # then followed to its end by one chain, so every request's messages stay in order.
        claimed = await self.claim(limit)
        if self.concurrency <= 1:
            return sum([await self.chain(msg) for msg in claimed])
        gate = asyncio.Semaphore(self.concurrency)

        async def one(msg: Claimed) -> int:
            async with gate:
                return await self.chain(msg)

        return sum(await asyncio.gather(*(one(m) for m in claimed)))

    def room(self) -> int:
        """Chains this dispatcher may still start: ``concurrency`` bounds them, handed-over ones included."""
        return self.concurrency - len(self._active) - len(self._handed)

    def accept(self, claimed: list[Claimed]) -> None:
        """Deliver messages a committed transaction claimed for this dispatcher (``_write_outbox``)."""
        for m in claimed:
            task = self._spawn(m)
            self._handed.add(task)
            task.add_done_callback(self._handed.discard)

    async def run(self, wake: asyncio.Event, *, interval: float = 1.0) -> None:
        """Deliver continuously: up to ``concurrency`` order keys at once, new heads claimed as soon as
        a commit adds messages (``wake``) or a chain ends; at least every ``interval`` seconds. While it
        runs, this process's commits claim their own new heads and hand them over (``accept``)."""
        active: set[asyncio.Task[int]] = set()
        self._active = active
        saturated = False  # the last claim filled every free slot: more may be waiting
        self._closed = False  # (again, when the worker restarts the loop after a failure)
        self.db.outbox_taker = self
        try:
            while True:
                wake.clear()
                free = self.room()
                self._enter()
                next_pass = time.monotonic() + interval  # a claim pass at least this often, however busy
                try:
                    claimed = await self.claim(free) if free > 0 and not self.paused() else []
                    saturated = free <= 0 or len(claimed) == free
                    for m in claimed:
                        active.add(self._spawn(m))
                finally:
                    self._leave()
                while True:  # claim again on new messages, on a tick, or when a slot frees while saturated
                    waker = asyncio.create_task(wake.wait())
                    try:
                        handed = set(self._handed)  # their ends free slots too
                        done, _ = await asyncio.wait({*active, *handed, waker},
                                                     timeout=max(0.0, next_pass - time.monotonic()),
                                                     return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waker.cancel()
                    finished = [t for t in active if t.done()]
                    for task in finished:
                        active.discard(task)
                        if not task.cancelled() and task.exception() is not None:
                            log.error("outbox chain failed", exc_info=task.exception())
                    # a message can become due without a commit (a backoff ends, a dead replica's lease
                    # runs out): the pass every interval finds it even while chains end all the time
                    if wake.is_set() or not done or time.monotonic() >= next_pass \
                            or ((finished or done & handed) and saturated):
                        break
        finally:
            self._closed = True
            for handle in self._lane_waits.values():
                handle.cancel()
                self._leave()
            self._lane_waits.clear()
            if self._held_timer is not None:
                self._held_timer.cancel()
                self._held_timer, self._held_keys = None, set()
                self._leave()
            if self.db.outbox_taker is self:
                self.db.outbox_taker = None
            active |= self._handed
            if active:  # let messages in flight be recorded, so that none is sent twice after a restart
                await asyncio.wait(active, timeout=10)
                for task in active:
                    task.cancel()
            log.info("outbox dispatcher stopped: %s", ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())))

    async def drain(self, *, max_rounds: int = 100) -> int:
        """Deliver until nothing is due now (tests, shutdown)."""
        total = 0
        for _ in range(max_rounds):
            n = await self.dispatch_once()
            total += n
            if n == 0:
                break
        return total

    async def chain(self, msg: Claimed | None) -> int:
        """Deliver a claimed message, then the next ones of its order key while they are due."""
        sent = 0
        batch = [msg] if msg is not None else []
        while batch:
            ok, batch = await self._deliver(batch)
            sent += ok
        return sent

    async def _paced(self, batch: list[Claimed]) -> list[Claimed]:
        """Wait for the lane's next turn; what arrived meanwhile joins the batch."""
        key = batch[0].order_key
        wait = self._lane_next.get(key, 0.0) - self._monotonic()
        if wait > 0:
            await self._sleep(wait)
            if len(batch) < self.lane_batch:
                now = self.clock.now()
                try:
                    async with self.db.core_transaction() as tx:
                        rows = await tx.rows(sql.CLAIM_LANE, {
                            "b_key": key, "b_limit": self.lane_batch - len(batch),
                            "b_now": now, "b_until": now + self.lease, "b_owner": self.owner})
                except Exception:  # what it holds is sent; the rest follows with the next turn
                    log.exception("outbox lane %s: claiming what followed failed", key)
                    rows = []
                batch = batch + sorted((Claimed.of(r) for r in rows), key=lambda m: m.id)
        self._lane_next[key] = self._monotonic() + self.lane_interval
        return batch

    async def _deliver(self, batch: list[Claimed]) -> tuple[int, list[Claimed]]:
        held: list[Claimed] = []  # claimed lane messages that do not fit in this post: the next one's
        if self.lane_interval > 0 and is_lane(batch[0].order_key):
            batch = await self._paced(batch)
            if len({m.kind for m in batch}) == 1:
                n = fitting(self.notifier, batch[0].kind, [m.payload for m in batch])
                batch, held = batch[:n], batch[n:]
        now = self.clock.now()
        if any(m.until is not None and now >= m.until - self.lease / 2 for m in batch):
            # an old claim (this process was paused, or waited): posted only if still this dispatcher's
            batch = await still_ours(self.db, batch)
            if not batch:
                return 0, []
        first = batch[0]
        kinds = {m.kind for m in batch}
        try:
            if len(kinds) == 1:
                delivery = await deliver_all(self.notifier, first.kind, [m.payload for m in batch])
            else:  # a lane holds one kind of message; if not, one by one
                delivery = await deliver_each(self.notifier, [(m.kind, m.payload) for m in batch])
        except RetryLater as exc:
            backoff = exc.after if exc.after is not None else min(self.max_backoff, 2 ** min(first.attempts, 6))
            backoff *= 1.0 if exc.after is not None else 0.75 + random.random() / 2
            log.warning("outbox %s (%s, %d message(s)) retry in %.1fs: %s", first.id, first.kind, len(batch),
                        backoff, exc)
            await self._finish(batch, status="pending", error=str(exc), next_at=now + timedelta(seconds=backoff))
            if held:  # not tried: they wait behind the lane's head
                await self._finish(held, status="pending", error="", next_at=now, tried=False)
            return 0, []
        except PermanentFailure as exc:
            log.error("outbox %s (%s, %d message(s)) failed permanently: %s", first.id, first.kind, len(batch), exc)
            await self._finish(batch, status="dead", error=str(exc), next_at=None)
            if held:  # they were not tried: back to pending, for the claim that follows
                await self._finish(held, status="pending", error="", next_at=now, tried=False)
            return 0, []
        self._follow_ups.extend(delivery.follow_ups)  # written by the record ``_record_sent`` queues next
        following = await self._record_sent(batch, delivery.refs)
        return len(batch), sorted(held + following, key=lambda m: m.id) if held else following

    async def _record_sent(self, batch: list[Claimed], refs: list[Ref]) -> list[Claimed]:
        """Record sent messages and claim the next of their key (up to ``lane_batch`` for a lane).
        Records of messages sent meanwhile share one transaction (group commit): on SQLite every
        transaction queues for the one writer."""
        done: asyncio.Future[list[Claimed]] = asyncio.get_running_loop().create_future()
        self._to_record.append((batch, refs, done))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_batches())
        return await done

    async def _record_batches(self) -> None:
        while self._to_record:
            entries, self._to_record = self._to_record, []
            # this record's claims see every commit made so far: a key's earlier notices are answered
            self._dirty.difference_update(b[0].order_key for b, _, _ in entries)
            try:
                now = self.clock.now()
                lease = {"b_now": now, "b_until": now + self.lease, "b_owner": self.owner}
                following: list[list[Claimed]] = []
                self.counts["records"] += 1
                follow_ups, self._follow_ups = self._follow_ups, []
                async with self.db.core_transaction() as tx:
                    for f in follow_ups:  # written with the record: handed on exactly once
                        enqueue(tx, at=now, order_key=f.order_key, kind=f.kind, payload=f.payload)
                    refs = [{"request_id": r.request_id, "purpose": r.purpose, "recipient": r.recipient,
                             "channel": r.channel, "ts": r.ts} for _, rs, _ in entries for r in rs]
                    await tx.many(sql.ADD_REF, refs)
                    await tx.many(sql.MARK_SENT, [{"b_id": m.id, "b_now": now, "b_attempts": m.attempts + 1,
                                                   "b_token": m.token} for batch, _, _ in entries for m in batch])
                    # the next message of each key, claimed in the same transaction (a chain is one key)
                    keys = sorted({b[0].order_key for b, _, _ in entries if not is_lane(b[0].order_key)})
                    rows = await tx.rows(sql.CLAIM_NEXT, {"b_keys": keys, **lease}) if keys else []
                    by_key = {row.order_key: Claimed.of(row) for row in rows}
                    for batch, _, _ in entries:
                        key = batch[0].order_key
                        if not is_lane(key):
                            head = by_key.pop(key, None)
                            following.append([head] if head is not None else [])
                            continue
                        lane = await tx.rows(sql.CLAIM_LANE, {"b_key": key, "b_limit": self._lane_limit, **lease})
                        following.append(sorted((Claimed.of(r) for r in lane), key=lambda m: m.id))
            except Exception as exc:  # the messages stay claimed until their lease ends, then go again
                # (and their follow-ups are handed on by that delivery: none written without its record)
                for _, _, done in entries:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, _, done), after in zip(entries, following, strict=True):
                if not done.done():
                    done.set_result(after)

    async def _finish(self, batch: list[Claimed], *, status: str, error: str, next_at: datetime | None,
                      tried: bool = True) -> None:
        async with self.db.core_transaction() as tx:
            await tx.many(sql.FINISH, [{"b_id": m.id, "b_status": status, "b_attempts": m.attempts + tried,
                                        "b_token": m.token, "b_error": error[:500], "b_next": next_at}
                                       for m in batch])
