"""UTC datetime columns on SQLite: the one-step bind processor writes exactly what SQLAlchemy's chain writes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeDecorator

from storage.types import UTCDateTime, sqlite_text

DIALECT = sqlite.dialect()
# what SQLAlchemy does without the override: process_bind_param, then the SQLite DATETIME's formatting
_IMPL: Any = UTCDateTime().dialect_impl(DIALECT)
CHAIN: Callable[[Any], Any] = TypeDecorator.bind_processor(_IMPL, DIALECT)  # type: ignore[assignment]

zones = st.one_of(st.just(UTC), st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-1439, 1439)))
aware = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=zones)


def test_sqlite_uses_the_one_step_processor_and_postgresql_the_chain() -> None:
    assert UTCDateTime().dialect_impl(DIALECT).bind_processor(DIALECT) is sqlite_text
    from sqlalchemy.dialects import postgresql

    pg = postgresql.dialect()
    assert UTCDateTime().dialect_impl(pg).bind_processor(pg) is not sqlite_text


@given(aware)
def test_same_text_as_sqlalchemys_chain(value: datetime) -> None:
    assert sqlite_text(value) == CHAIN(value)


@pytest.mark.parametrize("value", [datetime(2026, 1, 1, tzinfo=UTC),  # no microseconds: still written
                                   datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # three-digit year
                                   datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=-5)))])
def test_edges(value: datetime) -> None:
    assert sqlite_text(value) == CHAIN(value)
    assert len(sqlite_text(value) or "") == 26


def test_naive_refused_and_none_kept() -> None:
    with pytest.raises(ValueError, match="naive"):
        sqlite_text(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        CHAIN(datetime(2026, 1, 1))
    assert sqlite_text(None) is None


def test_stored_and_read_back_through_sqlalchemy() -> None:
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime()))
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    values = [datetime(2026, 11, 26, 21, 0, tzinfo=timezone(timedelta(hours=1))),
              datetime(2026, 11, 26, 20, 30, tzinfo=UTC)]
    with engine.begin() as conn:
        conn.execute(insert(table), [{"at": v} for v in values])
        stored = conn.execute(text("SELECT at FROM t ORDER BY id")).scalars().all()
        back = conn.execute(select(table.c.at).order_by(table.c.at)).scalars().all()
    assert stored == ["2026-11-26 20:00:00.000000", "2026-11-26 20:30:00.000000"]
    assert back == sorted(values) and all(v.tzinfo is UTC for v in back)
