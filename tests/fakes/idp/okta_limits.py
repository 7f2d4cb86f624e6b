"""Okta's rate limits as its documents describe them, for the fake (tests/fakes/idp/okta.py).

Each org has a budget of calls per window (Okta: per minute and endpoint family) that resets at fixed
instants. Every API response says where the caller stands — ``X-Rate-Limit-Limit``, ``-Remaining`` and
``-Reset`` (the UTC epoch second at which the window resets) — and a call over the budget gets 429
``E0000047`` with the same headers and the response's ``Date``. The caller's only way to the next
window is ``Reset`` read against ``Date`` (or its own clock).

Windows here are aligned to multiples of ``window`` seconds of the epoch, like Okta's minute, so a
window must be a whole number of seconds (``Reset`` is whole seconds). ``windows`` keeps what each
window admitted, for ``bench.mass_expiry``'s achieved rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from email.utils import formatdate


class OktaRateLimit:
    def __init__(self, limit: int, window: int = 60, clock: Callable[[], float] = time.time) -> None:
        if limit < 1 or window < 1 or window != int(window):
            raise ValueError("the limit and the window (whole seconds) must be positive")
        self.limit, self.window, self._clock = limit, int(window), clock
        self.windows: list[tuple[int, int]] = []  # (window start, calls admitted), in order
        self.refused = 0

    def admit(self) -> tuple[bool, dict[str, str]]:
        """Count one call: whether it is within the budget, and the headers its response carries."""
        now = self._clock()
        start = int(math.floor(now / self.window)) * self.window
        if not self.windows or self.windows[-1][0] != start:
            self.windows.append((start, 0))
        used = self.windows[-1][1]
        allowed = used < self.limit
        if allowed:
            used += 1
            self.windows[-1] = (start, used)
        else:
            self.refused += 1
        headers = {"X-Rate-Limit-Limit": str(self.limit), "X-Rate-Limit-Remaining": str(self.limit - used),
                   "X-Rate-Limit-Reset": str(start + self.window)}
        if not allowed:
            headers["Date"] = formatdate(now, usegmt=True)
        return allowed, headers

    def achieved_rate(self, after: float = float("-inf")) -> float:
        """Calls admitted per second over the complete windows that opened after ``after`` (e.g. the
        first revocation: the windows before it saw no load): the last window is left out (it may end
        early), and so are windows no call came in — a caller that leaves a window idle loses it."""
        windows = [w for w in self.windows if w[0] > after]
        if len(windows) < 2:
            return float("nan")
        return sum(n for _, n in windows[:-1]) / (windows[-1][0] - windows[0][0])
