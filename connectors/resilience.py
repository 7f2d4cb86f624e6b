"""Timeouts, bounded concurrency, pacing and retries around any connector.

Connectors themselves never retry: they raise typed errors. This wrapper owns the policy:

* every call has a timeout (→ ``Transient``),
* at most ``max_concurrency`` calls run at once per connector,
* a ``RateLimited`` error pauses *all* calls until the provider's retry-after has passed, and from then
  on calls of that kind are spaced at the rate the provider was seen to accept (learned from the 429
  itself, probed upwards slowly, kept between bursts) — pacing fed by the provider, not a retry storm.
  Providers often limit endpoints apart (Okta: ``/api/v1/users`` and ``/api/v1/groups`` have their
  own budgets), so each kind of call — lookups, membership changes, session ends — learns its own pace
  from its own successes: lookups the provider does not throttle never use up the pace of revocations,
  while a 429 of any kind still pauses them all (so a shared budget is honoured too). Waiters keep
  their arrival order and only the first of each kind sleeps; one woken late by a busy event loop may
  make up the slots it missed (``CATCH_UP``), so the pace holds on average; a call that waited for a
  free concurrency slot while a 429 came back waits out its retry-after too. Until a first 429 there
  is no pace: calls go out as fast as ``max_concurrency`` lets them. An optional fixed
  ``rate_per_second`` spaces all calls together from the start,
* where the provider states its budget in every answer (Okta's ``X-Rate-Limit-Remaining`` / ``-Reset``,
  passed on by the connector as a ``Budget``), a kind of call that has spent it waits for the reset
  instead of meeting a 429 (the calls still under way count as spent),
* waiting out a retry-after does not count as a failed attempt (up to ``max_rate_limited`` times),
* ``RateLimited`` and ``Transient`` are retried up to ``max_attempts`` with exponential backoff and
  jitter; every other error is raised at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from connectors.base import (
    RATE_BUDGET,
    Budget,
    Check,
    ConfigError,
    Connector,
    GrantResult,
    GroupInfo,
    GroupLister,
    IdpUser,
    MembershipReader,
    RateLimited,
    SessionTerminator,
    Target,
    Transient,
)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

CATCH_UP = 0.05  # seconds of missed slots a late waiter may make up

# The kinds of call that are paced apart (see the module docstring).
LOOKUP, MEMBERSHIP, SESSIONS = "lookup", "membership", "sessions"


@dataclass
class _Pace:
    """Pacing of one kind of call: the rate learned from the provider's 429s and the next free slot."""

    interval: float = 0.0
    rate: float | None = None
    next_slot: float = 0.0
    last_decrease: float = float("-inf")
    recent: deque[float] = field(default_factory=deque)  # successes of the last second
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The provider's own budget, where its answers state it (``Budget``): calls we may still send before
    # ``budget_reset`` (monotonic), or None when unknown; and the calls of this kind under way.
    budget_left: int | None = None
    budget_reset: float = 0.0
    in_flight: int = 0


class ResilientConnector:
    """A ``Connector`` that wraps another with timeouts, pacing and bounded retries."""

    def __init__(
        self,
        inner: Connector,
        *,
        timeout: float = 15.0,
        max_concurrency: int = 8,
        max_attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        rate_per_second: float | None = None,
        max_rate_limited: int = 8,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self._timeout = timeout
        self._sem = asyncio.Semaphore(max_concurrency)
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._fixed_interval = 1.0 / rate_per_second if rate_per_second else 0.0
        self._paces: dict[str, _Pace] = {}
        self._max_rate_limited = max_rate_limited
        self._sleep = sleep
        self._now = monotonic
        self._jitter = jitter
        self._not_before = 0.0
        self._next_any = 0.0  # next slot of the fixed rate, shared by every kind of call
        self.attempts = 0  # total calls to the inner connector, for tests and metrics

    async def _pace(self, pace: _Pace) -> None:
        # Waiters queue in arrival order on the lock (asyncio.Lock is FIFO) and only the first one sleeps:
        # no herd of waiters waking for every slot. Slots are taken, never pre-allocated: the waiter
        # re-checks after sleeping, so a rate learned meanwhile (or a new retry-after) applies at once.
        async with pace.lock:
            while True:
                now = self._now()
                ready_at = max(self._not_before, pace.next_slot, self._next_any)
                if self._budget_spent(pace, now):
                    ready_at = max(ready_at, pace.budget_reset)  # spent: wait for the reset, not for a 429
                if now >= ready_at:
                    # A waiter woken late (a busy event loop) may take the slots it missed, up to CATCH_UP
                    # seconds' worth: the pace is kept on average instead of losing every delay.
                    pace.next_slot = max(now - CATCH_UP, pace.next_slot) + pace.interval
                    self._next_any = max(now, self._next_any) + self._fixed_interval
                    return
                await self._sleep(max(ready_at - now, 0.001))

    def _on_success(self, pace: _Pace) -> None:
        now = self._now()
        pace.recent.append(now)
        while pace.recent and pace.recent[0] < now - 1.0:
            pace.recent.popleft()
        if pace.rate is not None:
            # probe upwards slowly (about +10 % per second at the current rate)
            pace.rate *= 1.0 + 0.1 / max(pace.rate, 1.0)
            pace.interval = 1.0 / pace.rate

    @staticmethod
    def _budget_spent(pace: _Pace, now: float) -> bool:
        if pace.budget_left is not None and now >= pace.budget_reset:
            pace.budget_left = None  # a new window: its budget is unknown until an answer states it
        return pace.budget_left is not None and pace.budget_left <= 0

    def _on_budget(self, pace: _Pace, budget: Budget) -> None:
        """An answer stated the provider's budget. The calls of this kind still under way were sent
        before it was counted, so each will use one of what is left. Within a window the lowest estimate
        holds (answers arrive out of order); a later reset starts a new window."""
        if budget.remaining is None:
            return
        reset = self._now() + budget.reset_in
        left = budget.remaining - (pace.in_flight - 1)
        if pace.budget_left is None or reset > pace.budget_reset + 0.5:  # (a half second: clock rounding)
            pace.budget_left, pace.budget_reset = left, reset
        elif left < pace.budget_left:
            pace.budget_left = left

    def _on_rate_limited(self, pace: _Pace, exc: RateLimited) -> None:
        now = self._now()
        self._not_before = max(self._not_before, now + exc.retry_after)
        if now < pace.last_decrease + 1.0:
            return  # one 429 burst is one signal: learn from it once per second, not once per call
        # Learn the provider's limit from what it just accepted: the calls of the last second.
        observed = float(sum(1 for t in pace.recent if t >= now - 1.0))
        if pace.rate is None and not observed:
            # Others spent the provider's budget before we sent anything: that says nothing about the
            # pace we may keep (learning 1/s from it would crawl for a minute). Wait out the
            # retry-after; the next burst shows the pace.
            return
        pace.last_decrease = now
        current = pace.rate or observed
        # A short burst can hit the limit while the last second's average was below it: never fall
        # far below what we were already allowed.
        pace.rate = max(1.0, max(min(current, observed or current), 0.85 * current) * 0.98)
        pace.interval = 1.0 / pace.rate

    async def _call(self, fn: Callable[[], Awaitable[T]], kind: str = LOOKUP) -> T:
        pace = self._paces.setdefault(kind, _Pace())
        attempt = 0
        limited = 0
        while True:
            attempt += 1
            await self._pace(pace)
            try:
                async with self._sem:
                    now = self._now()
                    if now < self._not_before or self._budget_spent(pace, now):
                        # A 429 came back, or an answer said the budget is spent, while this call waited for
                        # a free slot: wait for the retry-after or the reset rather than adding to the burst
                        # (before anything is known, every call passes the pacing and waits here).
                        attempt -= 1
                        continue
                    if pace.budget_left is not None:
                        pace.budget_left -= 1  # this call spends one
                    self.attempts += 1
                    budget = Budget()
                    token = RATE_BUDGET.set(budget)
                    pace.in_flight += 1
                    try:
                        result = await asyncio.wait_for(fn(), timeout=self._timeout)
                    finally:
                        RATE_BUDGET.reset(token)
                        self._on_budget(pace, budget)
                        pace.in_flight -= 1
                self._on_success(pace)
                return result
            except TimeoutError as exc:
                error: Exception = Transient(f"{self.name}: call timed out after {self._timeout}s")
                error.__cause__ = exc
            except RateLimited as exc:
                self._on_rate_limited(pace, exc)
                limited += 1
                if limited < self._max_rate_limited:
                    attempt -= 1  # waiting out a retry-after is pacing, not a failed attempt
                error = exc
            except Transient as exc:
                error = exc
            if attempt >= self._max_attempts:
                raise error
            if not isinstance(error, RateLimited):
                delay = min(self._max_delay, self._base_delay * 2 ** (attempt - 1))
                await self._sleep(delay * (0.5 + self._jitter() / 2))

    async def check(self) -> list[Check]:
        return await self.inner.check()

    async def find_user(self, email: str) -> IdpUser | None:
        return await self._call(lambda: self.inner.find_user(email))

    async def list_members(self, group: str) -> list[IdpUser]:
        return await self._call(lambda: self.inner.list_members(group))

    async def grant(self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        return await self._call(lambda: self.inner.grant(user, target, grant_id=grant_id, expires_at=expires_at),
                                MEMBERSHIP)

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        await self._call(lambda: self.inner.revoke(user, target, grant_id=grant_id), MEMBERSHIP)

    async def is_member(self, user: IdpUser, target: Target) -> bool:
        return await self._call(lambda: self.inner.is_member(user, target))

    async def list_groups(self) -> list[GroupInfo]:
        """Only for an inner ``GroupLister``: find the capability with ``connectors.base.group_lister``."""
        inner = self.inner
        if not isinstance(inner, GroupLister):
            raise ConfigError(f"{self.name}: this connector cannot list groups")
        return await self._call(inner.list_groups)

    async def groups_of(self, user: IdpUser, among: Sequence[str]) -> frozenset[str] | None:
        """Only for an inner ``MembershipReader``: find the capability with ``membership_reader``."""
        inner = self.inner
        if not isinstance(inner, MembershipReader):
            raise ConfigError(f"{self.name}: this connector cannot read a user's groups")
        return await self._call(lambda: inner.groups_of(user, among))

    async def terminate_sessions(self, user: IdpUser) -> None:
        """Only for an inner ``SessionTerminator``: find the capability with ``session_terminator``."""
        inner = self.inner
        if not isinstance(inner, SessionTerminator):
            raise ConfigError(f"{self.name}: this connector cannot end sessions")
        await self._call(lambda: inner.terminate_sessions(user), SESSIONS)

    async def aclose(self) -> None:
        await self.inner.aclose()
