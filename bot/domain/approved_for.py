"""Approving for less: an approver may approve a shorter duration than the one standing, never longer."""

from __future__ import annotations

from datetime import timedelta

from bot.domain.durations import format_duration
from bot.domain.requests import PolicyViolation

# The durations an approver is offered (each shorter than the one standing is shown).
CHOICES = (timedelta(minutes=15), timedelta(minutes=30), timedelta(hours=1), timedelta(hours=2),
           timedelta(hours=4), timedelta(hours=8), timedelta(hours=12), timedelta(days=1), timedelta(days=3),
           timedelta(days=7))


def shorter_choices(standing_s: int) -> list[timedelta]:
    """What the "Approve for less" menu offers for a request whose duration is ``standing_s`` seconds."""
    return [c for c in CHOICES if c.total_seconds() < standing_s]


def approved_seconds(standing_s: int, chosen: timedelta | None) -> int | None:
    """The duration an approval sets, in seconds, or None when it keeps the one standing. ``standing_s`` is
    the request's duration as it stands (as asked, or as an earlier approver shortened it). A value from a
    click is never trusted: zero, negative or longer than what stands is refused, nothing changed."""
    if chosen is None:
        return None
    seconds = int(chosen.total_seconds())
    if seconds <= 0 or chosen.total_seconds() != seconds:
        raise PolicyViolation("An approved duration must be a positive number of seconds.")
    if seconds > standing_s:
        raise PolicyViolation(f"You can approve at most {format_duration(timedelta(seconds=standing_s))}, "
                              "the duration as it stands; nothing was recorded.")
    return None if seconds == standing_s else seconds
