"""How ``serve`` and ``worker`` log: level and format from the settings, repeated errors rate-limited.

``JITBOT_LOG_FORMAT=json`` writes one JSON object per line (``ts``, ``level``, ``logger``, ``message``,
and ``exc`` with the whole traceback when there is one), for log pipelines that parse lines. A failure
that repeats (the database gone for a while: every tick, every loop) is written ``RepeatFilter.burst``
times per ``window`` seconds per message, the traceback only the first time; the next one written after
that says how many were left out.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; the traceback is a field, never extra lines."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            body["stack"] = self.formatStack(record.stack_info)
        return json.dumps(body, ensure_ascii=False, default=str)


class RepeatFilter(logging.Filter):
    """Lets through at most ``burst`` records of one message (logger, level, format string) per
    ``window`` seconds, for WARNING and above; the first let through after some were held back says
    how many."""

    def __init__(self, *, burst: int = 3, window: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.window, self.monotonic = burst, window, monotonic
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key → [window start, written, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key, now = (record.name, record.levelno, str(record.msg)), self.monotonic()
        state = self._seen.get(key)
        if state is None or now - state[0] >= self.window:
            held = int(state[2]) if state is not None else 0
            self._seen[key] = [now, 1, 0]
            if len(self._seen) > 1000:  # many distinct messages: forget the oldest windows
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:500]:
                    del self._seen[old]
            if held:
                record.msg = f"{record.msg} [{held} more like this held back in the last {self.window:g} s]"
            return True
        if state[1] < self.burst:
            state[1] += 1
            if record.exc_info and record.exc_info[1] is not None:  # the traceback was written the first time
                exc = record.exc_info[1]
                said = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                if record.args:  # the text joins a %-template: its own % signs are not placeholders
                    said = said.replace("%", "%%")
                record.msg = f"{record.msg} ({said}; traceback as above)"
                record.exc_info, record.exc_text = None, None
            return True
        state[2] += 1
        return False


def configure(*, level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None,
              repeat_filter: RepeatFilter | None = None) -> logging.Handler:
    """Make the root logger write to ``stream`` (standard error) at ``level`` in ``fmt``; returns the
    handler. Replaces handlers an earlier call installed."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(repeat_filter or RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def configure_from_settings() -> None:
    """``configure`` with ``JITBOT_LOG_LEVEL`` and ``JITBOT_LOG_FORMAT`` (the defaults when the settings do
    not load: the command reports that itself)."""
    from bot.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError:
        configure()
        return
    configure(level=settings.JITBOT_LOG_LEVEL, fmt=settings.JITBOT_LOG_FORMAT)
