"""Shared bits of the benchmarks: percentiles, machine description, a throttled in-process IdP."""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime

from connectors.base import Check, GrantResult, IdpUser, RateLimited, Target


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RecordingIdp:
    """An in-process IdP: records when each revoke arrives; optionally enforces R requests/s with 429s."""

    def __init__(self, name: str = "idp", rate: float | None = None) -> None:
        self.name = name
        self.rate = rate
        self.revoked_at: dict[str, float] = {}
        self.calls = 0
        self.throttled = 0
        self._window_start = time.monotonic()
        self._window_count = 0

    def _admit(self) -> None:
        self.calls += 1
        if self.rate is None:
            return
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_count = now, 0
        if self._window_count >= self.rate:
            self.throttled += 1
            raise RateLimited("429 Too Many Requests", retry_after=1.0 - (now - self._window_start))
        self._window_count += 1

    async def check(self) -> list[Check]:
        return [Check("idp", True)]

    async def find_user(self, email: str) -> IdpUser | None:
        return IdpUser(id=email, email=email)

    async def list_members(self, group: str) -> list[IdpUser]:
        return []

    async def grant(self, user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        self._admit()
        return GrantResult(added=True)

    async def revoke(self, user: IdpUser, target: Target, *, grant_id: str) -> None:
        self._admit()
        if grant_id in self.revoked_at:
            raise AssertionError(f"revoked twice: {grant_id}")
        self.revoked_at[grant_id] = time.time()

    async def is_member(self, user: IdpUser, target: Target) -> bool:
        return False

    async def aclose(self) -> None:
        return None
