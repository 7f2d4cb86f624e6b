"""Model rows read and written with Core statements in a ``CoreTx`` (storage/core_tx.py), without a session.

The request, its votes and its grant are read, changed and written in every step of a flow (submit,
decide, the grant's record). Through an ORM session that costs the unit of work — identity map,
autoflush before each query, the flush's dependency sort, per-object events — about 2 ms of CPU per
transaction on this project's machine, a third of the bot's whole time per flow. ``Unit`` does the part
those transactions need: rows become model objects (built as the ORM builds loaded ones, without the
~100 µs of SQLModel's validating ``__init__``), new objects are inserted and loaded ones updated —
only the columns that changed — when ``flush`` is called, inserts first, in the order they were added.

Objects from here belong to no session: lazy loads, relationships and ``session.refresh`` do not apply
(these models have none). The caller holds the rows' lock as with the ORM (``FOR UPDATE`` statements on
PostgreSQL; SQLite's transactions hold the database's write lock).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic_core import PydanticUndefined
from sqlalchemy import Table, bindparam, insert, update
from sqlmodel import SQLModel

from storage.core_tx import CoreTx

M = TypeVar("M", bound=SQLModel)

_defaults: dict[type[Any], dict[str, Any]] = {}
_inserts: dict[Table, Any] = {}
_updates: dict[tuple[Table, tuple[str, ...]], Any] = {}


def _table(model: type[Any]) -> Table:
    return model.__table__  # type: ignore[no-any-return]


def _defaults_of(model: type[Any]) -> dict[str, Any]:
    found = _defaults.get(model)
    if found is None:
        columns = set(_table(model).c.keys())
        found = _defaults[model] = {
            name: field.default for name, field in model.model_fields.items()
            if name in columns and field.default is not PydanticUndefined and field.default_factory is None}
    return found


def _new(model: type[M], values: dict[str, Any]) -> M:
    obj: M = model._sa_class_manager.new_instance()  # type: ignore[attr-defined]  # as the ORM loads a row
    obj.__dict__.update(values)
    return obj


def build(model: type[M], **values: Any) -> M:
    """A new row object: the fields' defaults, then ``values``. Not validated (as a loaded row is not):
    the caller gives each column its type."""
    unknown = set(values) - set(_table(model).c.keys())
    if unknown:
        raise TypeError(f"{model.__name__} has no column {', '.join(sorted(unknown))}")
    return _new(model, {**_defaults_of(model), **values})


def values_of(obj: SQLModel) -> dict[str, Any]:
    """The object's column values (what an INSERT of it writes)."""
    return {key: obj.__dict__[key] for key in _table(type(obj)).c.keys() if key in obj.__dict__}


def _insert(table: Table) -> Any:
    stmt = _inserts.get(table)
    if stmt is None:
        stmt = _inserts[table] = insert(table)
    return stmt


def _update(table: Table, columns: tuple[str, ...]) -> Any:
    """``UPDATE table SET c = :v_c, … WHERE id = :b_id``, built once per set of columns."""
    key = (table, columns)
    stmt = _updates.get(key)
    if stmt is None:
        stmt = _updates[key] = (update(table).where(table.c.id == bindparam("b_id"))
                                .values({c: bindparam(f"v_{c}") for c in columns}))
    return stmt


class Unit:
    """The rows one Core transaction reads and writes: loaded ones are written back (their changed
    columns) and added ones inserted, by ``flush``."""

    def __init__(self, tx: CoreTx) -> None:
        self.tx = tx
        self._loaded: list[tuple[SQLModel, dict[str, Any]]] = []
        self._added: list[SQLModel] = []

    async def all(self, model: type[M], statement: Any, params: dict[str, Any] | None = None) -> list[M]:
        """``statement`` (a SELECT of ``model``'s table columns) as objects whose changes ``flush`` writes."""
        out = []
        for row in await self.tx.rows(statement, params):
            values = row._asdict()
            obj = _new(model, dict(values))
            self._loaded.append((obj, values))
            out.append(obj)
        return out

    async def first(self, model: type[M], statement: Any, params: dict[str, Any] | None = None) -> M | None:
        found = await self.all(model, statement, params)
        return found[0] if found else None

    def add(self, obj: SQLModel) -> None:
        """Insert ``obj`` at ``flush`` (after those added before it)."""
        self._added.append(obj)

    async def flush(self) -> None:
        added, self._added = self._added, []
        for obj in added:  # one by one, in order: a row may refer to one added before it
            values = values_of(obj)
            if values.get("id", 0) is None:  # an autoincrement key: the database gives it
                del values["id"]
            await self.tx.many(_insert(_table(type(obj))), [values])
        for obj, before in self._loaded:
            changed = tuple(k for k, v in before.items() if obj.__dict__.get(k) != v)
            if changed:
                params = {f"v_{k}": obj.__dict__[k] for k in changed}
                params["b_id"] = before["id"]
                await self.tx.many(_update(_table(type(obj)), changed), [params])
                before.update({k: obj.__dict__[k] for k in changed})
