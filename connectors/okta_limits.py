"""Okta's rate-limit headers: the budget stated on every answer and the reset a 429 names.

``X-Rate-Limit-Remaining`` / ``-Reset`` (epoch seconds) against the answer's ``Date`` (whole seconds);
used by connectors/okta.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

from connectors.base import report_budget


def report_budget_of(headers: Any) -> None:
    """``X-Rate-Limit-Remaining`` and the time to ``X-Rate-Limit-Reset``, for the pacing around the call."""
    try:
        remaining = int(headers.get("X-Rate-Limit-Remaining"))
    except (TypeError, ValueError, AttributeError):
        return
    if headers.get("X-Rate-Limit-Reset") is not None:
        report_budget(remaining, retry_after(headers))


def retry_after(headers: Any, clock: Callable[[], float] = time.time) -> float:
    """Seconds until ``X-Rate-Limit-Reset`` (epoch s), measured against Okta's own ``Date``.

    ``Date`` has whole seconds: Okta answered somewhere within that second, so ``reset - Date`` can be up
    to a second too long — a lost second per window, which at a one-second or few-second budget is a
    large part of it. When our clock agrees with ``Date`` (inside its second, allowing half a second for
    the answer to arrive: clocks kept by NTP), it places the reset to the sub-second instead; a clock out
    of step is not trusted, and ``Date`` decides."""
    try:
        reset = float(headers.get("X-Rate-Limit-Reset"))
    except (TypeError, ValueError):
        return 60.0  # Okta's limits reset each minute
    local = clock()
    try:
        server = parsedate_to_datetime(headers.get("Date")).timestamp()
    except (TypeError, ValueError):
        return max(0.0, reset - local)
    now = local if server <= local < server + 1.5 else server
    return max(0.0, reset - now)
