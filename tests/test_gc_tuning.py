"""After start-up, ``serve`` and ``worker`` freeze what start-up made and collect less often
(bot/gc_tuning.py); JITBOT_GC=default leaves the collector alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bot import gc_tuning


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_settle_freezes_start_up_and_collects_less_often() -> None:
    start_up = [Node() for _ in range(10)]
    assert gc_tuning.settle("tuned") is True
    assert gc.get_freeze_count() >= len(start_up)  # never examined again
    assert gc.get_threshold() == gc_tuning.THRESHOLDS
    assert gc.get_threshold()[0] > 700  # Python's default


def test_cycles_made_after_settling_are_still_collected() -> None:
    import weakref

    gc_tuning.settle("tuned")
    node = Node()
    gone = weakref.ref(node)
    del node
    assert gone() is not None  # a cycle: refcounting alone does not free it
    gc.collect()
    assert gone() is None


def test_default_leaves_the_collector_alone() -> None:
    before = gc.get_threshold(), gc.get_freeze_count()
    assert gc_tuning.settle("default") is False
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_an_unknown_choice_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="JITBOT_GC must be tuned or default"):
        gc_tuning.settle("off")


def test_a_bad_setting_stops_start_up_with_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` and ``worker`` read their settings before anything starts: a typo is refused there, not
    after the server is already listening."""
    from bot.settings import SettingsError, load_settings

    monkeypatch.setenv("JITBOT_GC", "off")
    with pytest.raises(SettingsError, match="^JITBOT_GC: "):
        load_settings()
    monkeypatch.setenv("JITBOT_GC", "default")
    assert load_settings().JITBOT_GC == "default"
