"""The QueryBuilder on PostgreSQL: ``jsonb`` operators for extras."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from miniengine.core.query import QuerySpec
from miniengine.storage.postgres.transaction import PostgresTransaction
from miniengine.storage.query_builder_sql import compile_count, compile_query

if TYPE_CHECKING:
    import psycopg

    from miniengine.storage.interfaces.query_builder import QueryBuilderBackend
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["POSTGRES", "PostgresDialect", "PostgresQueryBuilder", "extras_index_sql"]


def _arrow(column: str, path: Sequence[str]) -> str:
    return column + "".join(f" -> '{key}'" for key in path)


class PostgresDialect:
    param = "%s"

    def json_value(self, column: str, path: Sequence[str]) -> str:
        return f"({_arrow(column, path)})"

    def json_param(self, value: Any) -> tuple[str, Any]:
        return "%s::jsonb", json.dumps(value)

    def json_text(self, column: str, path: Sequence[str]) -> str:
        return f"({_arrow(column, path)})::text"

    def json_string(self, column: str, path: Sequence[str]) -> str:
        value = self.json_value(column, path)
        return f"(CASE jsonb_typeof({value}) WHEN 'string' THEN {value} #>> '{{}}' END)"

    def json_type_is(self, column: str, path: Sequence[str], kind: str) -> tuple[str, list[Any]]:
        return f"jsonb_typeof({self.json_value(column, path)}) = %s", [kind]

    def has_key(self, column: str, path: Sequence[str], key: str) -> tuple[str, list[Any]]:
        value = self.json_value(column, path)
        return f"jsonb_typeof({value}) = 'object' AND jsonb_exists({value}, %s)", [key]

    def like(self, expression: str, pattern: str, *, ilike: bool) -> tuple[str, list[Any]]:
        return f"{expression} {'ILIKE' if ilike else 'LIKE'} %s", [pattern]


POSTGRES = PostgresDialect()


def extras_index_sql(key: str) -> tuple[str, str]:
    """The name and statement of the expression index on the extra ``key`` (a plain identifier,
    checked by the caller): the expression is the one the compiler writes for ``extras.KEY``."""
    name = f"nodes_extras_{key}"
    return (
        name,
        f"CREATE INDEX IF NOT EXISTS {name} ON nodes ({POSTGRES.json_value('extras', (key,))})",
    )


def _rows(
    connection: psycopg.Connection[Any], sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    return list(connection.execute(sql, list(params)).fetchall())


def _one(connection: psycopg.Connection[Any], sql: str, params: Sequence[Any]) -> int:
    row = connection.execute(sql, list(params)).fetchone()
    assert row is not None
    return int(row[0])


def _plan(connection: psycopg.Connection[Any], sql: str, params: Sequence[Any]) -> list[str]:
    return [str(row[0]) for row in connection.execute(f"EXPLAIN {sql}", list(params))]


def _index_extra(connection: psycopg.Connection[Any], key: str) -> str:
    name, sql = extras_index_sql(key)
    connection.execute(sql)
    # the planner knows an expression's values only from statistics: without them a filter on
    # the extra is estimated blindly and may scan the table instead
    connection.execute("ANALYZE nodes")
    return name


class PostgresQueryBuilder:
    """:class:`miniengine.storage.interfaces.query_builder.QueryBuilderBackend` on PostgreSQL."""

    __slots__ = ("_store", "index_extra")

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.index_extra = PostgresTransaction(store, _index_extra)

    def rows(self, spec: QuerySpec) -> list[tuple[Any, ...]]:
        compiled = compile_query(spec, POSTGRES)
        return self._store.read(_rows, compiled.sql, compiled.params)

    def count(self, spec: QuerySpec) -> int:
        compiled = compile_count(spec, POSTGRES)
        return self._store.read(_one, compiled.sql, compiled.params)

    def explain(self, spec: QuerySpec) -> list[str]:
        compiled = compile_query(spec, POSTGRES)
        return self._store.read(_plan, compiled.sql, compiled.params)


if TYPE_CHECKING:  # mypy checks here that the class implements the interface

    def _is_query_builder(qb: PostgresQueryBuilder) -> QueryBuilderBackend:
        return qb
