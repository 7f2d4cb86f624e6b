"""Slack's per-channel posting limit for the fake: a token bucket per channel.

Slack: chat.postMessage "generally allows posting one message per second to a specific channel; short
bursts of more than one are allowed" (https://api.slack.com/methods/chat.postMessage#rate_limiting).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

_EPS = 1e-9  # float slack, so that exactly one second at 1/s is exactly one token


@dataclass
class _Bucket:
    tokens: float
    updated: float


class ChannelPostLimiter:
    """``rate`` posts per second per channel, with bursts of up to ``burst``; buckets start full.

    ``now`` is a monotonic clock (seconds); inject one in tests to refill without sleeping.
    """

    def __init__(self, rate: float = 1.0, burst: int = 3, *,
                 now: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.now = rate, burst, now
        self._buckets: dict[str, _Bucket] = {}
        self.rejected: Counter[str] = Counter()

    def take(self, channel: str) -> int | None:
        """Spend a token of ``channel``: None if allowed, else the Retry-After (whole seconds, >= 1)."""
        now = self.now()
        bucket = self._buckets.setdefault(channel, _Bucket(float(self.burst), now))
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0 - _EPS:
            bucket.tokens -= 1.0
            return None
        self.rejected[channel] += 1
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate - _EPS))
