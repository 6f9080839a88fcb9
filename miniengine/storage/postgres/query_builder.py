"""The QueryBuilder on PostgreSQL: ``jsonb`` operators for extras and for the ``jsonb`` copy
of the attributes (``nodes.attributes_json``, written by
:mod:`miniengine.storage.postgres.attribute_rows`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from miniengine.core.query import QuerySpec
from miniengine.storage.postgres.transaction import PostgresTransaction
from miniengine.storage.query_builder_sql import compile_count, compile_query, index_name

if TYPE_CHECKING:
    import psycopg

    from miniengine.storage.interfaces.query_builder import QueryBuilderBackend
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["POSTGRES", "PostgresDialect", "PostgresQueryBuilder", "extras_index_sql", "index_sql"]

#: where each JSON field of nodes is read: attributes from their ``jsonb`` copy
_JSON_COLUMNS = {"extras": "extras", "attributes": "attributes_json"}


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

    def array_length(self, column: str, path: Sequence[str]) -> str:
        value = self.json_value(column, path)
        return f"(CASE jsonb_typeof({value}) WHEN 'array' THEN jsonb_array_length({value}) END)"

    def like(self, expression: str, pattern: str, *, ilike: bool) -> tuple[str, list[Any]]:
        return f"{expression} {'ILIKE' if ilike else 'LIKE'} %s", [pattern]

    def json_column(self, column: str) -> tuple[str, PostgresDialect]:
        return _JSON_COLUMNS[column], self


POSTGRES = PostgresDialect()


def extras_index_sql(key: str) -> tuple[str, str]:
    """The name and statement of the expression index on the extra ``key`` (a plain identifier,
    checked by the caller): the expression is the one the compiler writes for ``extras.KEY``."""
    return index_sql("extras", (key,))


def index_sql(column: str, path: Sequence[str]) -> tuple[str, str]:
    """The name and statement of the expression index on ``column.path`` (``extras`` or
    ``attributes``; the keys are plain identifiers, checked by the caller): the expression is
    the one the compiler writes for a filter or order on that field."""
    name = index_name(column, path)
    physical, dialect = POSTGRES.json_column(column)
    expression = dialect.json_value(physical, path)
    return name, f"CREATE INDEX IF NOT EXISTS {name} ON nodes ({expression})"


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
    return _index_field(connection, "extras", (key,))


def _index_field(connection: psycopg.Connection[Any], column: str, path: tuple[str, ...]) -> str:
    name, sql = index_sql(column, path)
    connection.execute(sql)
    # the planner knows an expression's values only from statistics: without them a filter on
    # the field is estimated blindly and may scan the table instead
    connection.execute("ANALYZE nodes")
    return name


def _drop_index(connection: psycopg.Connection[Any], column: str, path: tuple[str, ...]) -> bool:
    name = index_name(column, path)
    found = connection.execute(
        "SELECT 1 FROM pg_indexes WHERE tablename = 'nodes' AND indexname = %s "
        "AND schemaname = ANY(current_schemas(false))",
        (name,),
    ).fetchone()
    connection.execute(f"DROP INDEX IF EXISTS {name}".encode())
    return found is not None


class PostgresQueryBuilder:
    """:class:`miniengine.storage.interfaces.query_builder.QueryBuilderBackend` on PostgreSQL."""

    __slots__ = ("_store", "drop_index", "index_extra", "index_field")

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.index_extra = PostgresTransaction(store, _index_extra)
        self.index_field = PostgresTransaction(store, _index_field)
        self.drop_index = PostgresTransaction(store, _drop_index)

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
