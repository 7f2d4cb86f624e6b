"""Timeouts, bounded concurrency, pacing and retries around any connector.

Connectors themselves never retry: they raise typed errors. This wrapper owns the policy:

* every call has a timeout (→ ``Transient``),
* at most ``max_concurrency`` calls run at once per connector,
* a ``RateLimited`` error pauses *all* calls until the provider's retry-after has passed, and from then
  on calls are spaced at the rate the provider was seen to accept (learned from the 429 itself, probed
  upwards slowly) — pacing fed by the provider, not a retry storm; an optional fixed
  ``rate_per_second`` spaces calls out from the start,
* waiting out a retry-after does not count as a failed attempt (up to ``max_rate_limited`` times),
* ``RateLimited`` and ``Transient`` are retried up to ``max_attempts`` with exponential backoff and
  jitter; every other error is raised at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from connectors.base import (
    Check,
    ConfigError,
    Connector,
    GrantResult,
    GroupInfo,
    GroupLister,
    IdpUser,
    RateLimited,
    SessionTerminator,
    Target,
    Transient,
)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


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
        self._interval = 1.0 / rate_per_second if rate_per_second else 0.0
        self._fixed_interval = bool(rate_per_second)
        self._adaptive_rate: float | None = None
        self._last_decrease = float("-inf")
        self._recent: deque[float] = deque()
        self._max_rate_limited = max_rate_limited
        self._sleep = sleep
        self._now = monotonic
        self._jitter = jitter
        self._not_before = 0.0
        self._next_slot = 0.0
        self._slot_lock = asyncio.Lock()
        self.attempts = 0  # total calls to the inner connector, for tests and metrics

    async def _pace(self) -> None:
        # Slots are taken, never pre-allocated: a waiter re-checks after sleeping, so a rate learned
        # meanwhile (or a new retry-after) applies to it at once.
        while True:
            async with self._slot_lock:
                now = self._now()
                ready_at = max(self._not_before, self._next_slot)
                if now >= ready_at:
                    self._next_slot = max(now, self._next_slot) + self._interval
                    return
            await self._sleep(max(ready_at - now, 0.001))

    def _on_success(self) -> None:
        now = self._now()
        self._recent.append(now)
        while self._recent and self._recent[0] < now - 1.0:
            self._recent.popleft()
        if self._adaptive_rate is not None:
            # probe upwards slowly (about +10 % per second at the current rate)
            self._adaptive_rate *= 1.0 + 0.1 / max(self._adaptive_rate, 1.0)
            self._interval = 1.0 / self._adaptive_rate

    def _on_rate_limited(self, exc: RateLimited) -> None:
        now = self._now()
        self._not_before = max(self._not_before, now + exc.retry_after)
        if now < self._last_decrease + 1.0:
            return  # one 429 burst is one signal: learn from it once per second, not once per call
        self._last_decrease = now
        # Learn the provider's limit from what it just accepted: the calls of the last second.
        observed = float(sum(1 for t in self._recent if t >= now - 1.0))
        current = self._adaptive_rate or observed or 1.0
        # A short burst can hit the limit while the last second's average was below it: never fall
        # far below what we were already allowed.
        self._adaptive_rate = max(1.0, max(min(current, observed or current), 0.85 * current) * 0.98)
        self._interval = max(self._interval if self._fixed_interval else 0.0, 1.0 / self._adaptive_rate)

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        limited = 0
        while True:
            attempt += 1
            await self._pace()
            try:
                async with self._sem:
                    self.attempts += 1
                    result = await asyncio.wait_for(fn(), timeout=self._timeout)
                self._on_success()
                return result
            except TimeoutError as exc:
                error: Exception = Transient(f"{self.name}: call timed out after {self._timeout}s")
                error.__cause__ = exc
            except RateLimited as exc:
                self._on_rate_limited(exc)
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
        return await self._call(lambda: self.inner.grant(user, target, grant_id=grant_id, expires_at=expires_at))

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        await self._call(lambda: self.inner.revoke(user, target, grant_id=grant_id))

    async def is_member(self, user: IdpUser, target: Target) -> bool:
        return await self._call(lambda: self.inner.is_member(user, target))

    async def list_groups(self) -> list[GroupInfo]:
        """Only for an inner ``GroupLister``: find the capability with ``connectors.base.group_lister``."""
        inner = self.inner
        if not isinstance(inner, GroupLister):
            raise ConfigError(f"{self.name}: this connector cannot list groups")
        return await self._call(inner.list_groups)

    async def terminate_sessions(self, user: IdpUser) -> None:
        """Only for an inner ``SessionTerminator``: find the capability with ``session_terminator``."""
        inner = self.inner
        if not isinstance(inner, SessionTerminator):
            raise ConfigError(f"{self.name}: this connector cannot end sessions")
        await self._call(lambda: inner.terminate_sessions(user))

    async def aclose(self) -> None:
        await self.inner.aclose()
