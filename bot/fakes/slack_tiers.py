"""Slack's Web API rate limits for the fake: per method, per workspace, at each method's documented tier.

Source: Slack's rate-limit guide (https://docs.slack.dev/apis/web-api/rate-limits): "Tier 1: 1+ per
minute, Tier 2: 20+ per minute, Tier 3: 50+ per minute, Tier 4: 100+ per minute", limits apply per
method per app per workspace, an app over the limit gets HTTP 429 with a ``Retry-After`` header (whole
seconds). Each method's tier is on its reference page, https://docs.slack.dev/reference/methods/<method>
(section "Rate limits"); the table below names them. A tier is modelled as a token bucket that refills
at the tier's rate and holds one minute's allowance — what a fresh per-minute window admits at once.

Assumptions (Slack publishes no figure; the fake is stricter rather than looser where it must guess):
``auth.test`` is "Special" (modelled as Tier 4); chat.postMessage is "Special": about one message a
second per channel with short bursts (``ChannelPostLimiter``) *and* a workspace-wide limit described as
"several hundred messages per minute", modelled as ``POST_MESSAGE_PER_MINUTE`` = 300.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
POST_MESSAGE_PER_MINUTE = 300  # assumed: "several hundred messages per minute" per workspace

# method → tier, from each method's reference page (https://docs.slack.dev/reference/methods/<method>)
METHOD_TIERS: dict[str, int] = {
    "auth.test": 4,  # "Special" (assumed Tier 4)
    "users.info": 4,
    "users.lookupByEmail": 3,
    "conversations.open": 3,
    "chat.update": 3,
    "chat.postEphemeral": 4,
    "views.open": 4,
    "views.push": 4,
    "views.update": 4,
    "views.publish": 4,
    "files.getUploadURLExternal": 4,
    "files.completeUploadExternal": 4,
}


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TierLimiter:
    """The workspace's buckets, one per method. ``now`` is a monotonic clock in seconds (inject one to
    refill without sleeping); ``speedup`` multiplies every rate (a short test of the same shape)."""

    def __init__(self, *, now: Callable[[], float] = time.monotonic, speedup: float = 1.0) -> None:
        self.now, self.speedup = now, speedup
        self._buckets: dict[str, _Bucket] = {}
        self.rejected: Counter[str] = Counter()

    def per_minute(self, method: str) -> float | None:
        if method == "chat.postMessage":
            return POST_MESSAGE_PER_MINUTE * self.speedup
        tier = METHOD_TIERS.get(method)
        return None if tier is None else TIER_PER_MINUTE[tier] * self.speedup

    def take(self, method: str) -> int | None:
        """Spend one call of ``method``: None if allowed, else the Retry-After in whole seconds (≥ 1)."""
        limit = self.per_minute(method)
        if limit is None:
            return None
        rate, capacity = limit / 60.0, max(1.0, limit)
        now = self.now()
        bucket = self._buckets.setdefault(method, _Bucket(capacity, now))
        bucket.tokens = min(capacity, bucket.tokens + max(0.0, now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0 - 1e-9:
            bucket.tokens -= 1.0
            return None
        self.rejected[method] += 1
        return max(1, math.ceil((1.0 - bucket.tokens) / rate - 1e-9))
