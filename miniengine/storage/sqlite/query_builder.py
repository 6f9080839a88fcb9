"""The QueryBuilder on sqlite: JSON1 for extras, ``GLOB`` for a case-sensitive ``like``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from miniengine.core.query import QuerySpec
from miniengine.storage.query_builder_sql import compile_count, compile_query
from miniengine.storage.sqlite.transaction import SqliteTransaction

if TYPE_CHECKING:
    from miniengine.storage.interfaces.query_builder import QueryBuilderBackend
    from miniengine.storage.store import Store

__all__ = ["SQLITE", "SqliteDialect", "SqliteQueryBuilder", "extras_index_sql"]

#: sqlite's ``json_type`` names for each of AiiDA's ``of_type`` names
_TYPES = {
    "object": ("object",),
    "array": ("array",),
    "string": ("text",),
    "number": ("integer", "real"),
    "boolean": ("true", "false"),
    "null": ("null",),
}


def _path(path: Sequence[str]) -> str:
    return "$" + "".join(f".{key}" for key in path)


def like_to_glob(pattern: str) -> str:
    """A LIKE pattern (``%``, ``_``, ``\\`` escapes) as the GLOB pattern matching the same
    strings, case-sensitively as LIKE is on PostgreSQL (sqlite's LIKE ignores ASCII case)."""
    out: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            out.append(f"[{char}]" if char in "*?[" else char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            out.append("*")
        elif char == "_":
            out.append("?")
        elif char in "*?[":
            out.append(f"[{char}]")
        else:
            out.append(char)
    if escaped:
        out.append("\\")
    return "".join(out)


class SqliteDialect:
    param = "?"

    def json_value(self, column: str, path: Sequence[str]) -> str:
        return f"json_extract({column}, '{_path(path)}')"

    def json_param(self, value: Any) -> tuple[str, Any]:
        if isinstance(value, (list, dict)):
            return "json(?)", json.dumps(value)
        return "?", value

    def json_text(self, column: str, path: Sequence[str]) -> str:
        return column if not path else f"({column} -> '{_path(path)}')"

    def json_string(self, column: str, path: Sequence[str]) -> str:
        value = self.json_value(column, path)
        return f"(CASE json_type({column}, '{_path(path)}') WHEN 'text' THEN {value} END)"

    def json_type_is(self, column: str, path: Sequence[str], kind: str) -> tuple[str, list[Any]]:
        names = _TYPES[kind]
        marks = ", ".join("?" * len(names))
        return f"json_type({column}, '{_path(path)}') IN ({marks})", list(names)

    def has_key(self, column: str, path: Sequence[str], key: str) -> tuple[str, list[Any]]:
        quoted = key.replace("\\", "\\\\").replace('"', '\\"')
        return (
            f"json_type({column}, '{_path(path)}') = 'object' "
            f"AND json_type({column}, ?) IS NOT NULL",
            [f'{_path(path)}."{quoted}"'],
        )

    def like(self, expression: str, pattern: str, *, ilike: bool) -> tuple[str, list[Any]]:
        if ilike:
            return f"{expression} LIKE ? ESCAPE '\\'", [pattern]
        return f"{expression} GLOB ?", [like_to_glob(pattern)]


SQLITE = SqliteDialect()


def extras_index_sql(key: str) -> tuple[str, str]:
    """The name and statement of the expression index on the extra ``key`` (a plain identifier,
    checked by the caller): the expression is the one the compiler writes for ``extras.KEY``."""
    name = f"nodes_extras_{key}"
    expression = SQLITE.json_value("extras", (key,))
    return name, f"CREATE INDEX IF NOT EXISTS {name} ON nodes ({expression})"


def _rows(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    return list(connection.execute(sql, params).fetchall())


def _one(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    return int(connection.execute(sql, params).fetchone()[0])


def _plan(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[str]:
    return [str(row[-1]) for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def _index_extra(connection: sqlite3.Connection, key: str) -> str:
    name, sql = extras_index_sql(key)
    connection.execute(sql)
    return name


class SqliteQueryBuilder:
    """:class:`miniengine.storage.interfaces.query_builder.QueryBuilderBackend` on sqlite."""

    __slots__ = ("_store", "index_extra")

    def __init__(self, store: Store) -> None:
        self._store = store
        self.index_extra = SqliteTransaction(store, _index_extra)

    def rows(self, spec: QuerySpec) -> list[tuple[Any, ...]]:
        compiled = compile_query(spec, SQLITE)
        return self._store.read(_rows, compiled.sql, compiled.params)

    def count(self, spec: QuerySpec) -> int:
        compiled = compile_count(spec, SQLITE)
        return self._store.read(_one, compiled.sql, compiled.params)

    def explain(self, spec: QuerySpec) -> list[str]:
        compiled = compile_query(spec, SQLITE)
        return self._store.read(_plan, compiled.sql, compiled.params)


if TYPE_CHECKING:  # mypy checks here that the class implements the interface

    def _is_query_builder(qb: SqliteQueryBuilder) -> QueryBuilderBackend:
        return qb
