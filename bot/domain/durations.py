"""Durations as people write them in policy files and modals: ``30m``, ``8h``, ``2d``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Longer than any access or schedule could be; also keeps ``timedelta`` (at most 999,999,999 days) and the
# datetimes it is added to from overflowing.
LONGEST = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """Parse ``"1h30m"`` into a timedelta; raises ValueError with a readable message."""
    cleaned = str(text).strip().lower().replace(" ", "")
    if not cleaned:
        raise ValueError("empty duration; write it like 30m, 8h or 2d")
    pos, total = 0, 0
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(cleaned):
        raise ValueError(f"{text!r} is not a duration; write it like 30m, 8h or 2d")
    if total <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    if total > LONGEST.total_seconds():
        raise ValueError(f"{text!r} is too long; durations are at most {LONGEST.days} days")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """``timedelta(hours=1, minutes=30)`` → ``"1h30m"``; the inverse of ``parse_duration``."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0m"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
