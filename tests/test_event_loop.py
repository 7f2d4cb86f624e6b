"""``serve`` and ``worker`` run on uvloop unless JITBOT_EVENT_LOOP=asyncio (bot/event_loop.py)."""

from __future__ import annotations

import asyncio

import pytest

from bot import event_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JITBOT_EVENT_LOOP", raising=False)
    assert event_loop.run(_loop_module()).startswith("uvloop")


def test_the_standard_loop_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JITBOT_EVENT_LOOP", "asyncio")
    assert event_loop.run(_loop_module()).startswith("asyncio")


def test_an_unknown_choice_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="JITBOT_EVENT_LOOP must be uvloop or asyncio"):
        event_loop.loop_factory("trio")
