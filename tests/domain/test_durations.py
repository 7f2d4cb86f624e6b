"""Durations as people write them: ``30m``, ``8h``, ``2d``, ``1h30m``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.durations import LONGEST, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("8h", timedelta(hours=8)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("45s", timedelta(seconds=45)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 1H 30M ", timedelta(hours=1, minutes=30)),
        ("2d4h", timedelta(days=2, hours=4)),
    ],
)
def test_durations_parse_as_people_write_them(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "10", "h", "1x", "1h30", "abc", "-1h", "1.5h", "h1", "1h-30m"])
def test_malformed_durations_are_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="30m, 8h or 2d"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0m", "0h0m", "0s"])
def test_zero_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["99999999999999w", "9" * 400 + "s", "3651d", "522w"])
def test_durations_too_long_for_any_access_are_refused_not_overflowed(text: str) -> None:
    """``timedelta`` holds at most 999,999,999 days: past that it raised OverflowError, which nobody caught."""
    with pytest.raises(ValueError, match="too long; durations are at most 3650 days"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(minutes=30), "30m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=1, seconds=5), "1d5s"),
        (timedelta(hours=48), "2d"),
        (timedelta(0), "0m"),
        (timedelta(seconds=-60), "0m"),
    ],
)
def test_durations_format_in_the_shortest_readable_form(value: timedelta, expected: str) -> None:
    assert format_duration(value) == expected


@given(st.integers(min_value=1, max_value=10 * 365 * 86400))
def test_formatting_then_parsing_any_positive_duration_gives_it_back(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=500), st.sampled_from("smhdw")), min_size=1,
                max_size=5))
def test_any_sum_of_units_parses_to_its_total(parts: list[tuple[int, str]]) -> None:
    size = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    total = sum(n * size[u] for n, u in parts)
    text = "".join(f"{n}{u}" for n, u in parts)
    if total == 0 or total > LONGEST.total_seconds():
        with pytest.raises(ValueError):
            parse_duration(text)
    else:
        assert parse_duration(text) == timedelta(seconds=total)
        # and the canonical form is a fixed point
        canonical = format_duration(parse_duration(text))
        assert format_duration(parse_duration(canonical)) == canonical
