"""The worker: every tick it claims what is due in the database and does it.

APScheduler only drives the ticks (and calendar jobs); the schedule itself is the due-time columns,
so a restart or a second replica loses nothing and doubles nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import select

from bot.services.grants import GrantService
from bot.services.outbox import OutboxDispatcher
from bot.services.requests import RequestService
from bot.services.runtime import Runtime
from storage.tables import WorkerHeartbeat

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    lapsed: int = 0
    granted: int = 0
    warned: int = 0
    revoked: int = 0
    sent: int = 0

    @property
    def busy(self) -> bool:
        return any((self.lapsed, self.granted, self.warned, self.revoked, self.sent))


class Worker:
    def __init__(self, rt: Runtime, dispatcher: OutboxDispatcher, *, worker_id: str | None = None) -> None:
        self.rt = rt
        self.dispatcher = dispatcher
        self.requests = RequestService(rt)
        self.grants = GrantService(rt)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._lock = asyncio.Lock()
        self._scheduler: AsyncIOScheduler | None = None
        self._kicker: asyncio.Task[None] | None = None
        self.ticks = 0

    async def tick(self) -> TickReport:
        """One pass over everything that is due. Revocation never waits for Slack: it runs first."""
        async with self._lock:
            report = TickReport()
            report.revoked = await self.grants.run_expiries()
            report.granted = await self.grants.run_grants()
            report.lapsed = await self.requests.lapse_due()
            report.warned = await self.grants.run_warnings()
            report.sent = await self.dispatcher.dispatch_once(limit=200)
            self.ticks += 1
            await self._heartbeat()
            return report

    async def run_until_idle(self, max_ticks: int = 50) -> TickReport:
        """Tick until nothing more is due now (tests and the playground's clock jumps)."""
        total = TickReport()
        for _ in range(max_ticks):
            r = await self.tick()
            total.lapsed += r.lapsed
            total.granted += r.granted
            total.warned += r.warned
            total.revoked += r.revoked
            total.sent += r.sent
            if not r.busy:
                break
        return total

    async def _heartbeat(self) -> None:
        now = self.rt.clock.now()
        async with self.rt.db.transaction() as session:
            row = (await session.execute(select(WorkerHeartbeat).where(
                WorkerHeartbeat.worker_id == self.worker_id))).scalar_one_or_none()
            if row is None:
                session.add(WorkerHeartbeat(worker_id=self.worker_id, beat_at=now, ticks=self.ticks))
            else:
                row.beat_at, row.ticks = now, self.ticks

    async def _safe_tick(self) -> None:
        try:
            while (await self.tick()).busy:
                pass
        except Exception:  # one bad tick must not stop the schedule; the next tick retries
            log.exception("worker tick failed")

    async def _kick_loop(self) -> None:
        while True:
            await self.rt.wake.wait()
            self.rt.wake.clear()
            await self._safe_tick()

    def start(self, *, interval: float = 1.0) -> None:
        """Tick every ``interval`` seconds and whenever a service signals that work is due now."""
        self._scheduler = AsyncIOScheduler()
        self._scheduler.add_job(self._safe_tick, "interval", seconds=interval, max_instances=1, coalesce=True,
                                id="worker-tick")
        self._scheduler.start()
        self._kicker = asyncio.create_task(self._kick_loop())

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._kicker is not None:
            self._kicker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._kicker
            self._kicker = None
