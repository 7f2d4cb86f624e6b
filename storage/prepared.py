"""Core statements compiled once and run on a transaction's own DB-API connection (SQLite only).

``session.execute(statement, params)`` takes SQLAlchemy's whole execution path on every call: the
session's connection lookup, the compiled-cache key, parameter construction and processing, the cursor
result and its rows — about 150 µs of CPU for a statement SQLite itself runs in a few. The statements run
for every audit event and every outbox message (``before_commit`` hooks: bot/services/auditing/audit.py and
bot/services/outbox/write.py) are few and fixed, so ``Prepared`` does that work once: the SQL text, the
order of its parameters, each parameter's bind processor and each RETURNING column's result processor,
all taken from the column types themselves (so UTC datetimes and JSON are stored exactly as SQLAlchemy
stores them). ``run`` then only formats values and calls the DB-API cursor, in the caller's transaction.

An expanding parameter (``bindparam(..., expanding=True)``, for ``IN``) becomes as many ``?`` as it has
values. Statements run this way bypass SQLAlchemy's statement events (``before_cursor_execute``).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

_POSTCOMPILE = "__[POSTCOMPILE_{}]"
# Rows per statement for ``insert_rows``: SQLite allows 32,766 parameters in one statement.
MAX_ROWS = 500

Processor = Callable[[Any], Any] | None


def dbapi_connection(session: Session) -> Any:
    """The DB-API connection of ``session``'s transaction (inside a sync hook or ``run_sync``)."""
    return session.connection().connection.dbapi_connection


class Prepared:
    """``statement`` compiled for ``dialect``. ``keys``: for an INSERT, the columns it is given (in the
    order of its VALUES); ``insert_rows`` writes many rows with one statement."""

    def __init__(self, statement: Any, dialect: Dialect, *, keys: Sequence[str] | None = None) -> None:
        if dialect.paramstyle != "qmark":
            raise ValueError(f"Prepared supports qmark drivers (SQLite), not {dialect.paramstyle}")
        compiled = statement.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
        self.sql: str = compiled.string
        self.names: list[str] = list(compiled.positiontup or [])
        self._bind: list[Processor] = [compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect)
                                       for n in self.names]
        self._expanding = {n for n in self.names if compiled.binds[n].expanding}
        # values fixed in the statement (``status == "pending"``); the rest must be given
        self._fixed = {n: compiled.binds[n].effective_value for n in self.names if not compiled.binds[n].required}
        if keys is not None:  # an INSERT also sends the columns it was not given that have a default
            for name in set(self.names) - set(keys):
                default = statement.table.c[name].default
                if default is None or not default.is_scalar:
                    raise ValueError(f"Prepared insert: give {name!r} (its default is computed per row)")
                self._fixed[name] = default.arg
        # a SELECT's columns, or an INSERT / UPDATE / DELETE's RETURNING ones
        returning = list(statement.exported_columns) if (getattr(statement, "is_select", False)
                                                         or getattr(statement, "_returning", ())) else []
        self._result: list[Processor] = [c.type.dialect_impl(dialect).result_processor(dialect, None)
                                         for c in returning]
        self._row = namedtuple("_row", [c.key for c in returning], rename=True) if returning else None  # type: ignore[misc]
        self._by_size: dict[tuple[int, ...], str] = {}
        self._values = None
        if keys is not None:  # INSERT … VALUES (?, …): the text of the VALUES group, repeated per row
            start = self.sql.index(" VALUES (") + len(" VALUES ")
            end = self.sql.index(")", start) + 1
            self._values = (self.sql[:start], self.sql[start:end], self.sql[end:])

    def _params(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        sql = self.sql
        out: list[Any] = []
        sizes: list[int] = []
        for name, process in zip(self.names, self._bind, strict=True):
            value = params[name] if name in params or name not in self._fixed else self._fixed[name]
            if name in self._expanding:
                values = list(value)
                sizes.append(len(values))
                out.extend(process(v) if process else v for v in values)
            else:
                out.append(process(value) if process else value)
        if self._expanding:
            key = tuple(sizes)
            sql = self._by_size.get(key) or self._expand(sizes)
        return sql, out

    def _expand(self, sizes: list[int]) -> str:
        sql = self.sql
        for name, size in zip([n for n in self.names if n in self._expanding], sizes, strict=True):
            if size == 0:
                raise ValueError(f"empty expanding parameter {name!r}")
            sql = sql.replace(_POSTCOMPILE.format(name), ", ".join("?" * size), 1)
        self._by_size[tuple(sizes)] = sql
        return sql

    def _rows(self, cursor: Any) -> list[Any]:
        if self._row is None:
            return []
        make, procs = self._row, self._result
        return [make(*(p(v) if p else v for p, v in zip(procs, raw, strict=True))) for raw in cursor.fetchall()]

    def run(self, connection: Any, params: Mapping[str, Any]) -> list[Any]:
        """Run once with ``params`` (by bind name) in ``connection``'s transaction; the RETURNING rows."""
        sql, values = self._params(params)
        cursor = connection.cursor()
        try:
            cursor.execute(sql, values)
            return self._rows(cursor)
        finally:
            cursor.close()

    def run_many(self, connection: Any, params: Sequence[Mapping[str, Any]]) -> None:
        """Run once per parameter set (``executemany``; no RETURNING, no expanding parameter)."""
        assert not self._expanding and self._row is None, "run_many: no expanding parameters, no RETURNING"
        cursor = connection.cursor()
        try:
            cursor.executemany(self.sql, [self._params(p)[1] for p in params])
        finally:
            cursor.close()

    def insert_rows(self, connection: Any, rows: Iterable[Mapping[str, Any]]) -> list[Any]:
        """An INSERT prepared with ``keys``: every row in one multi-row statement (``MAX_ROWS`` at most
        per statement); the RETURNING rows of all of them, in the order SQLite returns them."""
        assert self._values is not None, "insert_rows needs a statement prepared with keys"
        head, group, tail = self._values
        pending = [self._params(r)[1] for r in rows]
        out: list[Any] = []
        for start in range(0, len(pending), MAX_ROWS):
            chunk = pending[start:start + MAX_ROWS]
            cursor = connection.cursor()
            try:
                cursor.execute(head + ", ".join([group] * len(chunk)) + tail, [v for p in chunk for v in p])
                out.extend(self._rows(cursor))
            finally:
                cursor.close()
        return out


_cache: dict[tuple[int, tuple[str, ...] | None], tuple[Any, Prepared]] = {}
_MAX_CACHED = 1000


def prepared(statement: Any, dialect: Dialect, keys: tuple[str, ...] | None = None) -> Prepared:
    """``statement`` prepared once (module-level statements: the cache holds them by identity)."""
    key = (id(statement), keys)
    hit = _cache.get(key)
    if hit is None or hit[0] is not statement:
        if len(_cache) >= _MAX_CACHED:  # statements built per call would pile up: start again
            _cache.clear()
        hit = _cache[key] = (statement, Prepared(statement, dialect, keys=keys))
    return hit[1]
