"""Log lines for operators: JSON lines with the traceback inside, the level from the settings, and a
failure that repeats (the database gone) written a few times, not once per tick and loop."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time

import pytest

from bot.observability.logs import RepeatFilter, configure, configure_from_settings
from bot.policy_file import LoadedPolicy
from bot.services.clock import ManualClock
from storage.db import Database
from tests import pg
from tests.conftest import _drop_pg_schema, _pg_schema
from tests.fakes.tcp_proxy import TcpProxy
from tests.services.stack import make_stack


@pytest.fixture(autouse=True)
def _restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield None
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_format_is_one_object_per_line_with_the_traceback_inside() -> None:
    out = io.StringIO()
    configure(fmt="json", stream=out)
    log = logging.getLogger("jitbot.test")
    try:
        raise ValueError("bad thing")
    except ValueError:
        log.exception("tick %d failed", 3)
    log.info("plain")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert (first["level"], first["logger"], first["message"]) == ("ERROR", "jitbot.test", "tick 3 failed")
    assert "Traceback" in first["exc"] and "ValueError: bad thing" in first["exc"]
    assert json.loads(lines[1])["message"] == "plain"


def test_log_level_and_format_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JITBOT_LOG_LEVEL", "warning")
    monkeypatch.setenv("JITBOT_LOG_FORMAT", "json")
    configure_from_settings()
    root = logging.getLogger()
    assert root.level == logging.WARNING
    assert type(root.handlers[0].formatter).__name__ == "JsonFormatter"


def test_a_repeated_error_is_written_a_few_times_a_window_and_the_rest_counted() -> None:
    now = [0.0]
    out = io.StringIO()
    configure(stream=out, repeat_filter=RepeatFilter(burst=3, window=60, monotonic=lambda: now[0]))
    log = logging.getLogger("jitbot.test")
    for i in range(1000):  # ten seconds of a failing loop
        now[0] = i / 100
        log.error("tick failed: %s", "connection refused")
    log.warning("another message")  # a different message is not held back
    assert len(out.getvalue().splitlines()) == 4
    now[0] = 61.0
    log.error("tick failed: %s", "connection refused")
    assert "[997 more like this held back in the last 60 s]" in out.getvalue().splitlines()[-1]


@pytest.mark.postgres
async def test_a_database_outage_writes_a_few_lines_not_one_per_failure(
        loaded_policy: LoadedPolicy, clock: ManualClock) -> None:
    """The real worker loop (ticks and outbox delivery) against PostgreSQL cut off behind a proxy, until
    it has failed 100 times: what reaches the log is counted, not timed. (At INFO the delivery loop also
    says once per restart, once a second in production, that it stopped: not counted here, where the loop
    restarts every 10 ms.)"""
    schema = await _pg_schema()
    failures = 0

    def count(record: logging.LogRecord) -> bool:
        nonlocal failures
        failures += record.levelno >= logging.WARNING
        return True

    out = io.StringIO()
    handler = configure(stream=out, level="WARNING")
    handler.filters.insert(0, count)  # sees every record; the repeat filter comes after it
    try:
        async with TcpProxy(*pg.address()) as proxy:
            db = Database(pg.url_at("127.0.0.1", proxy.port), schema=schema)
            s = await make_stack(db, loaded_policy, clock)
            out.seek(0)
            out.truncate()  # the migration's lines
            proxy.cut()
            s.worker.start(interval=0.01)
            try:
                end = time.monotonic() + 60
                while failures < 100:
                    assert time.monotonic() < end, f"only {failures} failures logged"
                    await asyncio.sleep(0.01)
            finally:
                await s.worker.stop()
                await db.dispose()
    finally:
        await _drop_pg_schema(schema)
    lines = out.getvalue().splitlines()
    records = [line for line in lines if line[:2] == "20"]  # a record's first line starts with its date
    messages = {line.split(" ", 4)[-1].split(" (")[0] for line in records}
    # each distinct failure (tick, delivery, claim recovery): its traceback once, then at most two lines
    assert failures >= 100 and len(records) <= 3 * len(messages) <= 12, records
    with_traceback = sum(line[:2] == "20" and after.startswith("Traceback")
                         for line, after in zip(lines, lines[1:], strict=False))
    assert with_traceback == len(messages)
    assert len(lines) < 500, f"{len(lines)} lines for {failures} failures"
