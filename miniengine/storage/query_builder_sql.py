"""A :class:`~miniengine.core.query.QuerySpec` compiled to ONE parameterised SQL statement.

The statement's shape is the same on every backend (the appended vertices joined through
``links`` and ``group_nodes``); a :class:`Dialect` says how a backend writes a parameter and reads
a JSON value, and :meth:`Dialect.json_column` where (and how) it reads extras and attributes.
Values are always parameters.  JSON keys are written into the statement, but only after
:func:`miniengine.core.query.split_field` checked they are plain identifiers: an expression
index (``miniengine db index extras.KEY``, ``attributes.KEY``) matches only an expression
spelled the same.  A filter on ``process_state`` also spells out the condition of the partial
index that holds its states (a constant), so that sqlite walks that index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from miniengine.core.query import (
    ENTITY_GROUP,
    ENTITY_LINK,
    ENTITY_NODE,
    JSON_FIELDS,
    PROVENANCE_LINK_TYPES,
    RECURSIVE_RELATIONS,
    BoolFilter,
    Condition,
    Filter,
    QueryError,
    QuerySpec,
    Vertex,
)
from miniengine.storage.interfaces.groups import GroupRow
from miniengine.storage.interfaces.provenance import NodeRow
from miniengine.storage.query_rows import partial_index_condition

__all__ = [
    "CompiledQuery",
    "Dialect",
    "JsonDialect",
    "compile_count",
    "compile_query",
    "index_name",
    "star_width",
]

_TABLES = {ENTITY_NODE: "nodes", ENTITY_GROUP: "groups", ENTITY_LINK: "links"}
_STAR = {ENTITY_NODE: NodeRow._fields, ENTITY_GROUP: GroupRow._fields}
_COMPARE = {"==": "=", ">": ">", "<": "<", ">=": ">=", "<=": "<="}
_LENGTH = {"of_length": "=", "longer": ">", "shorter": "<"}


#: the columns that hold no NULL (an order on them needs no NULLS clause)
_NOT_NULL = frozenset(
    {"pk", "uuid", "node_type", "label", "description", "paused", "ctime", "mtime"}
    | {"type_string", "link_type", "in_pk", "out_pk"}
)


def index_name(column: str, path: Sequence[str]) -> str:
    """The name of the expression index on the field ``column.path`` of nodes."""
    return f"nodes_{column}_{'__'.join(path)}"


def star_width(entity: str) -> int:
    """The number of columns a ``'*'`` projection of ``entity`` takes in a row."""
    return len(_STAR[entity])


class JsonDialect(Protocol):
    """How one backend reads the values in a column of JSON (or of msgpack read as JSON)."""

    param: str

    def json_value(self, column: str, path: Sequence[str]) -> str:
        """The value at ``path`` in a JSON column, comparable with :meth:`json_param` values."""
        ...

    def json_param(self, value: Any) -> tuple[str, Any]:
        """The placeholder and parameter for comparing ``json_value`` with ``value``."""
        ...

    def json_text(self, column: str, path: Sequence[str]) -> str:
        """The JSON text at ``path`` (``NULL`` where missing), for projections."""
        ...

    def json_string(self, column: str, path: Sequence[str]) -> str:
        """The string at ``path`` as SQL text (for ``like``)."""
        ...

    def json_type_is(self, column: str, path: Sequence[str], kind: str) -> tuple[str, list[Any]]:
        """A condition: the value at ``path`` is of AiiDA's JSON type ``kind``."""
        ...

    def has_key(self, column: str, path: Sequence[str], key: str) -> tuple[str, list[Any]]:
        """A condition: the object at ``path`` has the key ``key``."""
        ...

    def array_length(self, column: str, path: Sequence[str]) -> str:
        """The length of the array at ``path`` (``NULL`` where it is not an array)."""
        ...

    def like(self, expression: str, pattern: str, *, ilike: bool) -> tuple[str, list[Any]]:
        """``expression LIKE pattern``, case-sensitive (``ilike``: case-insensitive)."""
        ...


class Dialect(JsonDialect, Protocol):
    """How one backend writes the parts of a statement that differ."""

    def json_column(self, column: str) -> tuple[str, JsonDialect]:
        """The column that holds the JSON field ``column`` (``extras``, ``attributes``) and
        how to read it."""
        ...


@dataclass(frozen=True)
class CompiledQuery:
    sql: str
    params: tuple[Any, ...]


def _json_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


class _Compiler:
    def __init__(self, spec: QuerySpec, dialect: Dialect) -> None:
        self.spec = spec
        self.d = dialect
        self.params: list[Any] = []
        self.alias: dict[str, str] = {}
        self.entity: dict[str, str] = {}
        for index, vertex in enumerate(spec.vertices):
            self.alias[vertex.tag] = f"t{index}"
            self.entity[vertex.tag] = vertex.entity
            if vertex.relation is not None:
                self.alias[vertex.relation.edge_tag] = f"e{index}"
                kind = vertex.relation.kind
                self.entity[vertex.relation.edge_tag] = (
                    ENTITY_LINK
                    if kind in ("with_incoming", "with_outgoing")
                    else "walk"
                    if kind in RECURSIVE_RELATIONS
                    else "group_node"
                )

    def column(self, tag: str, column: str) -> str:
        return f"{self.alias[tag]}.{column}"

    def p(self, value: Any) -> str:
        self.params.append(value)
        return self.d.param

    # WITH: the walks of with_ancestors and with_descendants --------------------------------

    def with_clause(self) -> str:
        """``WITH RECURSIVE`` and a walk per recursive relationship (its parameters come
        first): the (ancestor, descendant) pairs along ``create`` and ``input_calc`` links,
        each pair once, starting from the nodes that the joined vertex's own types and
        filters select (its joins to the rest of the path apply in the main query)."""
        walks: list[str] = []
        vertices = {vertex.tag: vertex for vertex in self.spec.vertices}
        types = ", ".join(f"'{kind}'" for kind in PROVENANCE_LINK_TYPES)
        for vertex in self.spec.vertices:
            relation = vertex.relation
            if relation is None or relation.kind not in RECURSIVE_RELATIONS:
                continue
            walk = f"walk_{self.alias[relation.edge_tag]}"
            start = self.alias[relation.other]
            seed = [f"l.link_type IN ({types})", *self.vertex_conditions(vertices[relation.other])]
            where = " AND ".join(f"({c})" for c in seed)
            if relation.kind == "with_ancestors":  # downwards from ``other``
                first = f"SELECT l.in_pk, l.out_pk FROM links AS l JOIN nodes AS {start} "
                first += f"ON {start}.pk = l.in_pk WHERE {where}"
                step = f"SELECT w.ancestor, l.out_pk FROM {walk} AS w JOIN links AS l "
                step += f"ON l.in_pk = w.descendant WHERE l.link_type IN ({types})"
            else:  # with_descendants: upwards from ``other``
                first = f"SELECT l.in_pk, l.out_pk FROM links AS l JOIN nodes AS {start} "
                first += f"ON {start}.pk = l.out_pk WHERE {where}"
                step = f"SELECT l.in_pk, w.descendant FROM {walk} AS w JOIN links AS l "
                step += f"ON l.out_pk = w.ancestor WHERE l.link_type IN ({types})"
            walks.append(f"{walk} (ancestor, descendant) AS ({first} UNION {step})")
        return f"WITH RECURSIVE {', '.join(walks)} " if walks else ""

    # FROM and WHERE ------------------------------------------------------------------------

    def vertex_conditions(self, vertex: Vertex) -> list[str]:
        """The conditions of ``vertex``'s types and filters (not of its join)."""
        alias = self.alias[vertex.tag]
        conditions: list[str] = []
        kind_column = "node_type" if vertex.entity == ENTITY_NODE else "type_string"
        if vertex.node_types is not None:
            if vertex.node_types:
                marks = ", ".join(self.p(name) for name in vertex.node_types)
                conditions.append(f"{alias}.{kind_column} IN ({marks})")
            else:
                conditions.append("1 = 0")
        if vertex.type_prefix is not None:
            conditions.append(f"{alias}.{kind_column} LIKE {self.p(vertex.type_prefix + '%')}")
        if vertex.exclude_prefix is not None:
            conditions.append(
                f"{alias}.{kind_column} NOT LIKE {self.p(vertex.exclude_prefix + '%')}"
            )
        conditions.extend(self.filter(f) for f in vertex.filters)
        return conditions

    def from_where(self) -> str:
        parts: list[str] = []
        conditions: list[str] = []
        for vertex in self.spec.vertices:
            table = _TABLES[vertex.entity]
            alias = self.alias[vertex.tag]
            relation = vertex.relation
            if relation is None:
                parts.append(f"FROM {table} AS {alias}")
            else:
                other = self.alias[relation.other]
                edge = self.alias[relation.edge_tag]
                if relation.kind == "with_incoming":  # this vertex is the link's output
                    parts.append(f"JOIN links AS {edge} ON {edge}.in_pk = {other}.pk")
                    parts.append(f"JOIN {table} AS {alias} ON {alias}.pk = {edge}.out_pk")
                elif relation.kind == "with_outgoing":  # this vertex is the link's input
                    parts.append(f"JOIN links AS {edge} ON {edge}.out_pk = {other}.pk")
                    parts.append(f"JOIN {table} AS {alias} ON {alias}.pk = {edge}.in_pk")
                elif relation.kind == "with_ancestors":  # a descendant of ``other``
                    walk = f"walk_{edge}"
                    parts.append(f"JOIN {walk} AS {edge} ON {edge}.ancestor = {other}.pk")
                    parts.append(f"JOIN {table} AS {alias} ON {alias}.pk = {edge}.descendant")
                elif relation.kind == "with_descendants":  # an ancestor of ``other``
                    walk = f"walk_{edge}"
                    parts.append(f"JOIN {walk} AS {edge} ON {edge}.descendant = {other}.pk")
                    parts.append(f"JOIN {table} AS {alias} ON {alias}.pk = {edge}.ancestor")
                elif relation.kind == "with_group":  # a node in the group ``other``
                    parts.append(f"JOIN group_nodes AS {edge} ON {edge}.group_pk = {other}.pk")
                    parts.append(f"JOIN {table} AS {alias} ON {alias}.pk = {edge}.node_pk")
                else:  # with_node: a group holding the node ``other``
                    parts.append(f"JOIN group_nodes AS {edge} ON {edge}.node_pk = {other}.pk")
                    parts.append(f"JOIN {table} AS {alias} ON {alias}.pk = {edge}.group_pk")
                conditions.extend(self.filter(f) for f in relation.edge_filters)
            conditions.extend(self.vertex_conditions(vertex))
        sql = " ".join(parts)
        if conditions:
            sql += " WHERE " + " AND ".join(f"({c})" for c in conditions)
        return sql

    def filter(self, item: Filter) -> str:
        if isinstance(item, BoolFilter):
            if not item.items:
                return "1 = 1" if item.op == "and" else "1 = 0"
            joiner = " AND " if item.op == "and" else " OR "
            return joiner.join(f"({self.filter(inner)})" for inner in item.items)
        sql = self.condition(item)
        return f"NOT ({sql})" if item.negated else sql

    def condition(self, c: Condition) -> str:
        column = self.column(c.tag, c.column)
        op, value = c.operator, c.value
        if c.column in JSON_FIELDS:
            physical, json_dialect = self.d.json_column(c.column)
            return self.json_condition(
                json_dialect, self.column(c.tag, physical), c.path, op, value
            )
        if op == "==" and value is None:
            return f"{column} IS NULL"
        if isinstance(value, bool):
            value = int(value)  # flags (paused) are integer columns on both backends
        if op in _COMPARE:
            sql = f"{column} {_COMPARE[op]} {self.p(value)}"
            if op == "==" and c.column == "process_state":
                sql += partial_index_condition([value], column)
            return sql
        if op == "in":
            if not value:
                return "1 = 0"
            sql = f"{column} IN ({', '.join(self.p(v) for v in value)})"
            if c.column == "process_state":
                sql += partial_index_condition(value, column)
            return sql
        if op in ("like", "ilike"):
            sql, params = self.d.like(column, value, ilike=op == "ilike")
            self.params.extend(params)
            return sql
        raise QueryError(f"{c.tag!r}: {op!r} does not apply to {c.column!r}")

    def json_condition(
        self, d: JsonDialect, column: str, path: tuple[str, ...], op: str, value: Any
    ) -> str:
        if op == "has_key":
            sql, params = d.has_key(column, path, value)
            self.params.extend(params)
            return sql
        if op == "of_type":
            sql, params = d.json_type_is(column, path, value)
            self.params.extend(params)
            return sql
        if op in _LENGTH:
            return f"{d.array_length(column, path)} {_LENGTH[op]} {self.p(value)}"
        target = d.json_value(column, path)
        if op == "==" and value is None:
            sql, params = d.json_type_is(column, path, "null")
            self.params.extend(params)
            return sql
        if op in ("like", "ilike"):
            sql, params = d.like(d.json_string(column, path), value, ilike=op == "ilike")
            self.params.extend(params)
            return sql
        if op == "in":
            # each kind of value compared with values of its kind, as ``==`` does (sqlite's
            # JSON true is 1, so a bare IN would find true among the numbers)
            kinds: dict[str | None, list[Any]] = {}
            for item in value:
                kinds.setdefault(_json_kind(item), []).append(item)
            alternatives = []
            for kind, items in kinds.items():
                sql, params = d.json_type_is(column, path, "null" if kind is None else kind)
                self.params.extend(params)
                if kind is not None:
                    marks = []
                    for item in items:
                        mark, param = d.json_param(item)
                        self.params.append(param)
                        marks.append(mark)
                    sql = f"{sql} AND {target} IN ({', '.join(marks)})"
                alternatives.append(f"({sql})")
            return " OR ".join(alternatives) if alternatives else "1 = 0"
        mark, param = d.json_param(value)
        self.params.append(param)
        comparison = f"{target} {_COMPARE[op]} {mark}"
        kind = _json_kind(value)
        if kind is None:
            return comparison
        # compare numbers with numbers and strings with strings, as AiiDA does (sqlite's and
        # PostgreSQL's orders across JSON types differ); the comparison comes first, so that
        # the type is read only of the rows it lets through (on sqlite each is a call of a
        # function of miniengine's for an attribute)
        guard, guard_params = d.json_type_is(column, path, kind)
        self.params.extend(guard_params)
        return f"{comparison} AND {guard}"

    # SELECT ----------------------------------------------------------------------------------

    def select_list(self) -> str:
        columns: list[str] = []
        for projection in self.spec.projections:
            alias = self.alias[projection.tag]
            if projection.column == "*":
                columns.extend(f"{alias}.{name}" for name in _STAR[projection.entity])
            elif projection.column == "extras":
                columns.append(self.d.json_text(f"{alias}.extras", projection.path))
            else:
                columns.append(f"{alias}.{projection.column}")
        return ", ".join(columns)

    def order_by(self) -> str:
        terms = []
        for term in self.spec.order:
            if term.column in JSON_FIELDS and term.path:
                physical, json_dialect = self.d.json_column(term.column)
                expression = json_dialect.json_value(self.column(term.tag, physical), term.path)
            else:
                expression = self.column(term.tag, term.column)
            # rows without a value go where PostgreSQL puts them by default (last ascending,
            # first descending) on both backends (sqlite's default is the opposite), unless
            # the order says where (AiiDA's ``nulls_last``)
            # (not said of a column that holds no NULL: sqlite would then not read an index)
            direction = "DESC" if term.descending else "ASC"
            if term.column in JSON_FIELDS or term.column not in _NOT_NULL:
                last = not term.descending if term.nulls_last is None else term.nulls_last
                direction += f" NULLS {'LAST' if last else 'FIRST'}"
            terms.append(f"{expression} {direction}")
        return " ORDER BY " + ", ".join(terms) if terms else ""

    def page(self) -> str:
        sql = ""
        if self.spec.limit is not None:
            sql += f" LIMIT {self.p(self.spec.limit)}"
        elif self.spec.offset:
            sql += f" LIMIT {self.p(-1)}" if self.d.param == "?" else " LIMIT ALL"
        if self.spec.offset:
            sql += f" OFFSET {self.p(self.spec.offset)}"
        return sql


def compile_query(spec: QuerySpec, dialect: Dialect) -> CompiledQuery:
    """The statement reading the rows of ``spec`` (its page, if it has a limit or offset)."""
    compiler = _Compiler(spec, dialect)
    walks = compiler.with_clause()
    select = compiler.select_list()
    body = compiler.from_where()
    distinct = "DISTINCT " if spec.distinct else ""
    sql = f"{walks}SELECT {distinct}{select} {body}{compiler.order_by()}{compiler.page()}"
    return CompiledQuery(sql, tuple(compiler.params))


def compile_count(spec: QuerySpec, dialect: Dialect) -> CompiledQuery:
    """The statement counting the rows of ``spec``: one ``COUNT(*)``."""
    compiler = _Compiler(spec, dialect)
    walks = compiler.with_clause()
    if not spec.distinct and spec.limit is None and not spec.offset:
        sql = f"{walks}SELECT COUNT(*) {compiler.from_where()}"
        return CompiledQuery(sql, tuple(compiler.params))
    select = compiler.select_list()
    body = compiler.from_where()
    distinct = "DISTINCT " if spec.distinct else ""
    inner = f"SELECT {distinct}{select} {body}{compiler.page()}"
    sql = f"{walks}SELECT COUNT(*) FROM ({inner}) AS counted"
    return CompiledQuery(sql, tuple(compiler.params))
