"""The worker: every tick it claims what is due in the database and does it.

APScheduler only drives the ticks (and calendar jobs); the schedule itself is the due-time columns,
so a restart or a second replica loses nothing and doubles nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, fields
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.services.access.grants import GrantService
from bot.services.access.reconcile import ReconcileService
from bot.services.admin import AdminService
from bot.services.background.due_probe import NEXT_DUE, due_kinds
from bot.services.background.recovery_watch import RecoveryWatch
from bot.services.background.scheduled import ScheduledJobs
from bot.services.background.ticket_watch import TicketWatch
from bot.services.breakglass import BreakGlassService
from bot.services.claims import dead_instances, release_claims
from bot.services.outbox.dispatcher import OutboxDispatcher
from bot.services.outbox.keys import Cancellable
from bot.services.outbox.prune import OutboxPrune
from bot.services.requesting.bundles import BundleGuard
from bot.services.requesting.reminders import ReminderService
from bot.services.requesting.requests import RequestService
from bot.services.runtime import Runtime
from storage.tables import WorkerHeartbeat

log = logging.getLogger(__name__)
_HEARTBEAT = WorkerHeartbeat.__table__  # type: ignore[attr-defined]

DEAD_AFTER = timedelta(minutes=2)
SWEEP_GRACE = 10.0  # seconds ``stop`` waits for a sweep in progress
# What a wake (``Runtime.wake``) makes due now: the services that set it have just made a grant or a
# revocation due (a policy reload sets it too: anything else it made due comes with the tick, within a
# second). A pass always runs revocations; this adds grants.
WAKE_PASS = frozenset({"granted"})


@dataclass
class TickReport:
    lapsed: int = 0
    granted: int = 0
    warned: int = 0
    revoked: int = 0
    sent: int = 0
    reminded: int = 0
    escalated: int = 0
    review_reminded: int = 0
    scheduled: int = 0  # calendar jobs: weekly review post, transition notices and cut-overs

    @property
    def busy(self) -> bool:
        return any(astuple(self))

    def kinds(self) -> frozenset[str]:
        """The kinds of work this pass found due."""
        return frozenset(f.name for f in fields(self) if getattr(self, f.name))

    def add(self, other: TickReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Worker:
    def __init__(self, rt: Runtime, dispatcher: OutboxDispatcher, *, worker_id: str | None = None) -> None:
        self.rt = rt
        self.dispatcher = dispatcher
        self.requests = RequestService(rt)
        self.grants = GrantService(rt)
        self.reminders = ReminderService(rt)
        self.breakglass = BreakGlassService(rt)
        self.bundles = BundleGuard(rt)
        self.calendar = ScheduledJobs(rt)
        if worker_id:  # claims carry the instance id: the worker's name and its claims' owner are one
            rt.instance_id = worker_id
        self.worker_id = rt.instance_id
        dispatcher.owner = self.worker_id
        self._lock = asyncio.Lock()
        self._dispatch_lock = asyncio.Lock()
        self._scheduler: AsyncIOScheduler | None = None
        self._kicker: asyncio.Task[None] | None = None
        self._dispatching: asyncio.Task[None] | None = None
        self._sweeps: asyncio.Task[None] | None = None  # reconcile and recovery watch (``_start_sweeps``)
        self._interval = 1.0
        self._stopping = False
        self.ticks = 0
        self._full_passes = 0
        self._last_full = time.monotonic()
        # timers (injectable for tests): a wake when the next grant falls due before the next tick
        self.call_later: Callable[[float, Callable[[], None]], Cancellable] = \
            lambda delay, fn: asyncio.get_running_loop().call_later(delay, fn)
        self._due_timer: Cancellable | None = None
        self._timed_for: datetime | None = None  # the due time the last timer was for

    async def recover(self) -> int:
        """On start: free the claims this instance held before it died, and those of long-dead instances."""
        dead = await dead_instances(self.rt.db, now=self.rt.clock.now(), silent_for=DEAD_AFTER)
        return await release_claims(self.rt.db, owners=sorted({self.worker_id, *dead}))

    async def tick(self) -> TickReport:
        """One pass over everything that is due, its sweeps, then the outbox (tests and ``run_until_idle``)."""
        report = await self.schedule_tick()
        await self.sweeps_done()
        report.sent = await self.dispatch_tick()
        return report

    async def sweeps_done(self) -> None:
        """Wait for the sweeps the last full pass started (``tick``: tests, the playground)."""
        if self._sweeps is not None:
            await asyncio.shield(self._sweeps)

    def _start_sweeps(self) -> None:
        """The IdP sweeps run beside the passes, never inside one: reading a large group from the IdP, or
        an IdP that is slow or throttling, takes seconds to minutes, and revocations must not wait for it.
        (Across replicas they already run beside other replicas' passes: nothing here needs the lock.)
        One run at a time; a full pass while one is still going starts none."""
        if self._sweeps is None or self._sweeps.done():
            self._sweeps = asyncio.create_task(self._run_sweeps())

    async def _run_sweeps(self) -> None:
        for name, sweep in (("reconcile", ReconcileService(self.rt).run_if_due),  # IdP vs grants, every 15 min
                            ("recovery watch", RecoveryWatch(self.rt).run_if_due),  # sign-ins, every 5 min
                            ("ticket watch", TicketWatch(self.rt).run_if_due),  # end_with_ticket, every poll_every
                            ("outbox prune", OutboxPrune(self.rt).run_if_due),  # delivered messages, hourly
                            ("admin groups", AdminService(self.rt).refresh_if_due)):  # outage fallback, 15 min
            try:
                await sweep()
            except Exception:  # the next full pass starts it again
                log.exception("%s sweep failed", name)

    async def dispatch_tick(self) -> int:
        """Deliver due outbox messages. In production this runs in its own loop, so a slow or absent
        Slack never delays revocations."""
        async with self._dispatch_lock:
            await self.dispatcher.quiesce()  # what the continuous loop claimed is recorded first
            return await self.dispatcher.dispatch_once(limit=200)

    async def schedule_tick(self, *, only: frozenset[str] | None = None) -> TickReport:
        """Everything that is due in the database, revocations first; no Slack calls.

        ``only``: a follow-up pass (``_safe_tick``) runs revocations and just these kinds of work — the
        ones the pass before found due, which may have more waiting (a claim takes at most its limit).
        The rest was looked at a moment ago; what becomes due there comes with the next tick or a wake."""
        async with self._lock:
            report = TickReport()
            if not await self._clock_agrees(full=only is None):
                return report  # nothing judged by time, no heartbeat (bot/services/background/clock_guard.py)
            report.revoked = await self.grants.run_expiries()
            # all or nothing: a bundle that lost a member ends the others (their revocations are due now)
            report.revoked += await self.bundles.run()
            # a full pass runs the kinds the probe finds due (one read, not a transaction per kind)
            looked_at = only if only is not None else await due_kinds(self.rt.db, self.rt.clock.now())

            def due(kind: str) -> bool:
                return kind in looked_at

            if due("granted"):
                report.granted = await self.grants.run_grants()
            if due("lapsed"):
                report.lapsed = await self.requests.lapse_due()
            # Reminders before escalations: people who join a layer now get the escalation DM, not both.
            if due("reminded"):
                report.reminded = await self.reminders.run_reminders()
            if due("escalated"):
                report.escalated = await self.reminders.run_escalations()
            if due("review_reminded"):
                report.review_reminded = await self.breakglass.run_review_reminders()
            if due("warned"):
                report.warned = await self.grants.run_warnings()
            if only is None or "scheduled" in only:  # calendar jobs: the policy says when (not the probe)
                report.scheduled = await self.calendar.run_due()
            self.ticks += 1  # every pass (the heartbeat records it)
            if only is not None:
                return report
            self._full_passes += 1
            self._last_full = time.monotonic()
            self._start_sweeps()  # reconcile and recovery watch, each when due across replicas
            await self._heartbeat()
            if self._full_passes % 30 == 0:  # replicas that stopped beating long ago: their claims are free
                dead = await dead_instances(self.rt.db, now=self.rt.clock.now(), silent_for=DEAD_AFTER)
                await release_claims(self.rt.db, owners=[d for d in dead if d != self.worker_id])
            return report

    async def _clock_agrees(self, *, full: bool) -> bool:
        """Whether this replica's clock is within the skew bound of the database's: measured on each full
        pass (follow-up passes go by the last measure). While it is not, approvals made here hand their
        grants to the other replicas' passes instead of this worker."""
        guard = self.rt.clock_guard
        if guard is None:
            return True
        ok = await guard.check() if full else guard.ok
        if self._kicker is not None and not self._stopping:  # started, not stopping: adoption follows the clock
            self.rt.grant_taker = self.grants.adopt if ok else None
        return ok

    async def run_until_idle(self, max_ticks: int = 50) -> TickReport:
        """Tick until nothing more is due now (tests and the playground's clock jumps)."""
        total = TickReport()
        for _ in range(max_ticks):
            r = await self.tick()
            total.add(r)
            if not r.busy:
                break
        return total

    async def _heartbeat(self) -> None:
        """One upsert: two workers beating under one name for the first time (a replica started twice
        with the same instance id; tests' stacks) must not fail each other's pass with a duplicate key,
        as a read-then-insert did."""
        now = self.rt.clock.now()
        upsert = sqlite_insert if self.rt.db.is_sqlite else pg_insert
        version = self.rt.policy_version
        statement = upsert(_HEARTBEAT).values(worker_id=self.worker_id, beat_at=now, ticks=self.ticks,
                                              policy_version=version)
        async with self.rt.db.transaction() as session:
            await session.execute(statement.on_conflict_do_update(
                index_elements=[_HEARTBEAT.c.worker_id],
                set_={"beat_at": now, "ticks": self.ticks, "policy_version": version}))

    async def _safe_tick(self, only: frozenset[str] | None = None) -> None:
        """A pass (a full one unless ``only`` says which work to look at), then follow-up passes while it
        finds work: each one only over the kinds of work the pass before found due (and revocations,
        always). A full pass is revocations, the probe (bot/services/background/due_probe.py), the kinds it found
        due and the heartbeat — ~10 transactions before the probe; with two replicas each waking on its
        own approvals, the idle full pass after every busy one was a tenth of all commits."""
        try:
            report = await self.schedule_tick(only=only)
            while not self._stopping and report.busy:
                # A long run of busy passes (a mass expiry) still makes a full pass every interval: the
                # heartbeat (other replicas free a silent one's claims) and the rest of the schedule.
                full_due = time.monotonic() - self._last_full >= self._interval
                report = await self.schedule_tick(only=None if full_due else report.kinds())
            if not self._stopping:
                await self._wake_when_due()
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # stop() cancelled a tick that was still waiting for the lock: nothing had started
        except Exception:  # one bad tick must not stop the schedule; the next tick retries
            log.exception("worker tick failed")

    async def _wake_when_due(self) -> None:
        """After a pass that found nothing more: if a grant falls due before the next tick (it expires, or
        its grant or revocation is to be tried again), wake the worker then — a revocation waits for its
        expiry, not for the tick after it. Once per due time: a wake that found it not yet due (the clock
        is not the loop's) leaves it to the ticks."""
        async with self.rt.db.core_reads() as reads:
            due = min((d for d in (await reads.rows(NEXT_DUE, {"b_now": self.rt.clock.now()}))[0]
                       if d is not None), default=None)
        if due is None or due == self._timed_for:
            return
        delay = (due - self.rt.clock.now()).total_seconds()
        if delay >= self._interval:  # the tick comes first (and looks again)
            return
        if self._due_timer is not None:
            self._due_timer.cancel()
        self._timed_for = due
        self._due_timer = self.call_later(max(delay, 0.0), self.rt.wake.set)

    async def _kick_loop(self) -> None:
        try:
            freed = await self.recover()
            if freed:
                log.warning("released %d claim(s) left by an earlier run", freed)
        except Exception:
            log.exception("claim recovery failed; leases will expire instead")
        self._dispatching = asyncio.create_task(self._dispatch_loop())
        await self._safe_tick()
        while not self._stopping:
            await self.rt.wake.wait()
            self.rt.wake.clear()
            # A wake says a grant or a revocation is due now (an approval, a release, a failed grant):
            # the pass looks at those; the rest comes with the next tick.
            await self._safe_tick(only=WAKE_PASS)

    async def _dispatch_loop(self) -> None:
        guard = self.rt.clock_guard
        if guard is not None:  # outbox leases are judged by time too: no claims while the clock is off
            self.dispatcher.paused = lambda: not guard.ok
        while True:
            try:
                await self.dispatcher.run(self.rt.db.outbox_ready, interval=self._interval)
            except asyncio.CancelledError:
                raise
            except Exception:  # Slack or the database failing must not stop delivery for good
                log.exception("outbox dispatch failed")
                await asyncio.sleep(self._interval)

    def start(self, *, interval: float = 1.0) -> None:
        """Tick every ``interval`` seconds and whenever a service signals that work is due now; deliver
        the outbox continuously, in its own loop, so that a slow Slack never delays a revocation."""
        # A tick that is still busy makes APScheduler skip the next one: expected, not worth a warning.
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)  # no line per tick
        self._interval = interval
        self._scheduler = AsyncIOScheduler()
        self._scheduler.add_job(self._safe_tick, "interval", seconds=interval, max_instances=1, coalesce=True,
                                id="worker-tick")
        self._scheduler.start()
        self._kicker = asyncio.create_task(self._kick_loop())
        self.rt.grant_taker = self.grants.adopt  # grants approved in this process come straight here

    async def stop(self) -> None:
        """Stop ticking and delivering. A pass in progress finishes first (it holds the tick lock for
        its whole run), so no revocation is cut off between the IdP call and its record."""
        self._stopping = True
        if self.rt.grant_taker == self.grants.adopt:  # approvals from now on wake a worker instead
            self.rt.grant_taker = None
        if self._due_timer is not None:
            self._due_timer.cancel()
        async with self._lock:  # from here on no pass is running, and none can start
            if self._scheduler is not None:
                self._scheduler.shutdown(wait=False)  # cancels ticks waiting for the lock: see _safe_tick
                self._scheduler = None
            if self._kicker is not None:
                self._kicker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._kicker
                self._kicker = None
        await self.grants.settle()  # grants a pass left running finish (or go again after their lease)
        if self._sweeps is not None and not self._sweeps.done():  # let a sweep record what it did, briefly:
            done, _ = await asyncio.wait({self._sweeps}, timeout=SWEEP_GRACE)  # reading a big group can take long
            if not done:
                log.warning("stopping: a reconcile or recovery-watch sweep was cut off; the next one repeats it")
                self._sweeps.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sweeps
        log.info("worker stopped: %d passes, %d full", self.ticks, self._full_passes)
        if self._dispatching is not None:  # chains in flight finish recording what they sent
            self._dispatching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatching
            self._dispatching = None
