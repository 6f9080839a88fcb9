"""The QueryBuilder on sqlite: JSON1 for extras, the engine's ``msgpack_extract`` and
``msgpack_type`` SQL functions for attributes
(:mod:`miniengine.storage.sqlite.msgpack_functions`), ``GLOB`` for a case-sensitive ``like``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from miniengine.core.query import QuerySpec
from miniengine.storage.query_builder_sql import compile_count, compile_query, index_name
from miniengine.storage.sqlite.transaction import SqliteTransaction

if TYPE_CHECKING:
    from miniengine.storage.interfaces.query_builder import QueryBuilderBackend
    from miniengine.storage.store import Store

__all__ = [
    "MSGPACK",
    "SQLITE",
    "MsgpackDialect",
    "SqliteDialect",
    "SqliteQueryBuilder",
    "extras_index_sql",
    "index_sql",
]

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
        return _has_key("json_type", column, path, key)

    def array_length(self, column: str, path: Sequence[str]) -> str:
        where = f"{column}, '{_path(path)}'"
        return f"(CASE json_type({where}) WHEN 'array' THEN json_array_length({where}) END)"

    def like(self, expression: str, pattern: str, *, ilike: bool) -> tuple[str, list[Any]]:
        return _like(expression, pattern, ilike=ilike)

    def json_column(self, column: str) -> tuple[str, SqliteDialect | MsgpackDialect]:
        return (column, self) if column == "extras" else (column, MSGPACK)


def _has_key(
    type_function: str, column: str, path: Sequence[str], key: str
) -> tuple[str, list[Any]]:
    quoted = key.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f"{type_function}({column}, '{_path(path)}') = 'object' "
        f"AND {type_function}({column}, ?) IS NOT NULL",
        [f'{_path(path)}."{quoted}"'],
    )


def _like(expression: str, pattern: str, *, ilike: bool) -> tuple[str, list[Any]]:
    if ilike:
        return f"{expression} LIKE ? ESCAPE '\\'", [pattern]
    return f"{expression} GLOB ?", [like_to_glob(pattern)]


class MsgpackDialect:
    """Attributes on sqlite: the msgpack blob read by the engine's SQL functions, which answer
    as ``json_extract`` and ``json_type`` do, so values compare as extras do."""

    param = "?"

    def json_value(self, column: str, path: Sequence[str]) -> str:
        return f"msgpack_extract({column}, '{_path(path)}')"

    def json_param(self, value: Any) -> tuple[str, Any]:
        if isinstance(value, (list, dict)):
            # the text msgpack_extract gives for an array or object, which json() keeps as is
            return "json(?)", json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return "?", value

    def json_text(self, column: str, path: Sequence[str]) -> str:
        return self.json_value(column, path)

    def json_string(self, column: str, path: Sequence[str]) -> str:
        value = self.json_value(column, path)
        return f"(CASE msgpack_type({column}, '{_path(path)}') WHEN 'text' THEN {value} END)"

    def json_type_is(self, column: str, path: Sequence[str], kind: str) -> tuple[str, list[Any]]:
        names = _TYPES[kind]
        marks = ", ".join("?" * len(names))
        return f"msgpack_type({column}, '{_path(path)}') IN ({marks})", list(names)

    def has_key(self, column: str, path: Sequence[str], key: str) -> tuple[str, list[Any]]:
        return _has_key("msgpack_type", column, path, key)

    def array_length(self, column: str, path: Sequence[str]) -> str:
        return (
            f"(CASE msgpack_type({column}, '{_path(path)}') WHEN 'array' "
            f"THEN json_array_length({self.json_value(column, path)}) END)"
        )

    def like(self, expression: str, pattern: str, *, ilike: bool) -> tuple[str, list[Any]]:
        return _like(expression, pattern, ilike=ilike)


SQLITE = SqliteDialect()
MSGPACK = MsgpackDialect()


def extras_index_sql(key: str) -> tuple[str, str]:
    """The name and statement of the expression index on the extra ``key`` (a plain identifier,
    checked by the caller): the expression is the one the compiler writes for ``extras.KEY``."""
    return index_sql("extras", (key,))


def index_sql(column: str, path: Sequence[str]) -> tuple[str, str]:
    """The name and statement of the expression index on ``column.path`` (``extras`` or
    ``attributes``; the keys are plain identifiers, checked by the caller): the expression is
    the one the compiler writes for a filter or order on that field."""
    name = index_name(column, path)
    physical, dialect = SQLITE.json_column(column)
    expression = dialect.json_value(physical, path)
    return name, f"CREATE INDEX IF NOT EXISTS {name} ON nodes ({expression})"


def _rows(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    return list(connection.execute(sql, params).fetchall())


def _one(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    return int(connection.execute(sql, params).fetchone()[0])


def _plan(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[str]:
    return [str(row[-1]) for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def _index_extra(connection: sqlite3.Connection, key: str) -> str:
    return _index_field(connection, "extras", (key,))


def _index_field(connection: sqlite3.Connection, column: str, path: tuple[str, ...]) -> str:
    name, sql = index_sql(column, path)
    connection.execute(sql)
    return name


def _drop_index(connection: sqlite3.Connection, column: str, path: tuple[str, ...]) -> bool:
    name = index_name(column, path)
    found = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
    ).fetchone()
    connection.execute(f"DROP INDEX IF EXISTS {name}")
    return found is not None


class SqliteQueryBuilder:
    """:class:`miniengine.storage.interfaces.query_builder.QueryBuilderBackend` on sqlite."""

    __slots__ = ("_store", "drop_index", "index_extra", "index_field")

    def __init__(self, store: Store) -> None:
        self._store = store
        self.index_extra = SqliteTransaction(store, _index_extra)
        self.index_field = SqliteTransaction(store, _index_field)
        self.drop_index = SqliteTransaction(store, _drop_index)

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
