"""A QueryBuilder query as a pure value: the appended path, its filters, projections and order.

The runtime's :class:`~miniengine.runtime.querybuilder.QueryBuilder` turns AiiDA's arguments into
a :class:`QuerySpec` and checks them here, before any SQL runs, so that a mistake names the tag,
key or operator at fault.  Each backend compiles a spec into one parameterised SQL statement
(values are always parameters; keys, which become JSON paths, must be plain identifiers).

The fields a query can filter, order and project on are the columns, the extras (JSON) and the
attributes, under AiiDA's names (``attributes.value`` of an ``Int``); the process attributes
that live in columns (``attributes.process_state`` and friends) are those columns.  Attributes
are stored as msgpack, which each backend reads its own way (SQL functions on sqlite, a
``jsonb`` copy on PostgreSQL); the operators are the same on both.
"""

from __future__ import annotations

import datetime
import enum
import math
import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from miniengine.exceptions import MiniengineError

__all__ = [
    "ENTITY_GROUP",
    "ENTITY_NODE",
    "BoolFilter",
    "Condition",
    "Filter",
    "OrderTerm",
    "Projection",
    "QueryError",
    "QuerySpec",
    "Relation",
    "Vertex",
    "parse_filters",
    "parse_order",
    "parse_projection",
]

ENTITY_NODE: Final = "node"
ENTITY_GROUP: Final = "group"
ENTITY_LINK: Final = "link"

Entity = Literal["node", "group", "link"]


class QueryError(MiniengineError, ValueError):
    """A QueryBuilder was given something it cannot query (raised before any SQL runs)."""


#: the fields of each entity: AiiDA's name -> the column (``extras``/``attributes`` are JSON)
FIELDS: dict[str, dict[str, str]] = {
    ENTITY_NODE: {
        "id": "pk",
        "pk": "pk",
        "uuid": "uuid",
        "node_type": "node_type",
        "process_type": "process_type",
        "label": "label",
        "description": "description",
        "ctime": "ctime",
        "mtime": "mtime",
        "extras": "extras",
        "attributes": "attributes",
        # process attributes kept in columns, so they can be filtered on
        "attributes.process_state": "process_state",
        "attributes.process_label": "process_label",
        "attributes.process_status": "process_status",
        "attributes.exit_status": "exit_status",
        "attributes.exit_message": "exit_message",
        "attributes.exception": "exception",
        "attributes.paused": "paused",
        "process_state": "process_state",
        "process_label": "process_label",
        "process_status": "process_status",
        "exit_status": "exit_status",
        "exit_message": "exit_message",
        "paused": "paused",
    },
    ENTITY_GROUP: {
        "id": "pk",
        "pk": "pk",
        "uuid": "uuid",
        "label": "label",
        "type_string": "type_string",
        "description": "description",
        "time": "ctime",
        "ctime": "ctime",
        "extras": "extras",
    },
    ENTITY_LINK: {
        "id": "pk",
        "pk": "pk",
        "type": "link_type",
        "label": "label",
        "input_id": "in_pk",
        "output_id": "out_pk",
    },
}

#: JSON columns, whose keys a path may follow (``extras.a.b``)
JSON_FIELDS = frozenset({"extras", "attributes"})

OPERATORS = frozenset(
    {
        "==",
        ">",
        "<",
        ">=",
        "<=",
        "in",
        "like",
        "ilike",
        "of_type",
        "has_key",
        "of_length",
        "longer",
        "shorter",
        "===",
    }
)
#: the operators of JSON values only (extras and attributes)
JSON_OPERATORS = frozenset({"of_type", "has_key", "of_length", "longer", "shorter"})
#: AiiDA's operators on the length of a JSON array
LENGTH_OPERATORS = frozenset({"of_length", "longer", "shorter"})
#: AiiDA's ``of_type`` names of JSON types
JSON_TYPES = frozenset({"object", "array", "string", "number", "boolean", "null"})

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SCALARS = (str, int, float, bool)

#: the columns that hold numbers (the others that are not JSON hold text); ``paused`` is a flag
NUMBER_COLUMNS = frozenset({"pk", "exit_status", "ctime", "mtime", "paused", "in_pk", "out_pk"})
#: the columns that hold times, as seconds since the epoch (a filter may give a ``datetime``)
TIME_COLUMNS = frozenset({"ctime", "mtime"})
#: the integers both databases compare with (a bigger one is an overflow on sqlite)
_INT64 = range(-(2**63), 2**63)


@dataclass(frozen=True)
class Condition:
    """``column [path] operator value`` on the vertex (or edge) ``tag``; ``negated`` for ``!op``."""

    tag: str
    column: str
    path: tuple[str, ...]
    operator: str
    value: Any
    negated: bool = False


@dataclass(frozen=True)
class BoolFilter:
    """Conditions joined by ``and`` or ``or`` (AiiDA's ``{'or': [{...}, {...}]}``)."""

    op: Literal["and", "or"]
    items: tuple[Filter, ...]


Filter = Condition | BoolFilter


@dataclass(frozen=True)
class Projection:
    """One projected value: ``column`` ``'*'`` is the whole entity (a node or group object)."""

    tag: str
    entity: Entity
    column: str
    path: tuple[str, ...] = ()
    name: str = ""  # AiiDA's key in ``dict()`` rows


@dataclass(frozen=True)
class OrderTerm:
    """One field of an order; ``nulls_last`` places the rows without a value (``None`` for
    PostgreSQL's default, which both backends then follow: last ascending, first descending)."""

    tag: str
    column: str
    path: tuple[str, ...]
    descending: bool
    nulls_last: bool | None = None


#: the link types that ``with_ancestors``/``with_descendants`` follow, as AiiDA's: data to the
#: calculation that used it, a calculation to the data it created (not the calls and returns of
#: workflows, which would make every input of a workflow an ancestor of everything it returned)
PROVENANCE_LINK_TYPES: Final = ("create", "input_calc")

RelationKind = Literal[
    "with_incoming",
    "with_outgoing",
    "with_group",
    "with_node",
    "with_ancestors",
    "with_descendants",
]
#: the relationships that walk the provenance graph any number of links deep
RECURSIVE_RELATIONS: Final = frozenset({"with_ancestors", "with_descendants"})


@dataclass(frozen=True)
class Relation:
    """How a vertex joins an earlier one: ``kind`` is AiiDA's keyword (``with_incoming``...)."""

    kind: RelationKind
    other: str
    edge_tag: str
    edge_filters: tuple[Filter, ...] = ()


@dataclass(frozen=True)
class Vertex:
    """One appended entity: nodes of some types (``node_types`` exact names, or the types starting
    with ``type_prefix``; both ``None`` for every node) or groups (``type_strings``)."""

    tag: str
    entity: Entity
    node_types: tuple[str, ...] | None = None
    type_prefix: str | None = None
    exclude_prefix: str | None = None
    filters: tuple[Filter, ...] = ()
    relation: Relation | None = None


@dataclass(frozen=True)
class QuerySpec:
    """A whole query; ``limit``/``offset`` select a page of its rows."""

    vertices: tuple[Vertex, ...]
    projections: tuple[Projection, ...]
    order: tuple[OrderTerm, ...] = ()
    limit: int | None = None
    offset: int = 0
    distinct: bool = False


def split_field(tag: str, entity: Entity, key: str) -> tuple[str, tuple[str, ...]]:
    """The column and JSON path of AiiDA's field ``key`` (``'extras.a.b'``) on ``tag``."""
    if not isinstance(key, str) or not key:
        raise QueryError(f"{tag!r}: a field must be a non-empty string, not {key!r}")
    fields = FIELDS[entity]
    if key in fields:
        return fields[key], ()
    head, _, rest = key.partition(".")
    if head in JSON_FIELDS and head in fields and rest:
        path = tuple(rest.split("."))
        for part in path:
            if not _KEY.match(part):
                raise QueryError(
                    f"{tag!r}: the key {part!r} of {key!r} is not a plain identifier "
                    "(letters, digits and underscores)"
                )
        return fields[head], path
    raise QueryError(f"{tag!r}: no field {key!r} (known: {', '.join(sorted(fields))})")


def _plain(tag: str, key: str, column: str, value: Any) -> Any:
    """``value`` as the database compares it: an enum member by its value (``ProcessState``),
    a ``datetime`` on a time column as seconds since the epoch; then refused, naming the
    field, if no database could hold it (a NaN or infinite float, an int beyond 64 bits, a
    string with NUL or a lone surrogate), so that both backends answer alike."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, datetime.datetime):
        if column not in TIME_COLUMNS:
            raise QueryError(
                f"{tag!r}: {key!r} is not a time; only ctime and mtime take a datetime"
            )
        return value.timestamp()
    if isinstance(value, float) and not math.isfinite(value):
        raise QueryError(f"{tag!r}: {key!r} cannot be compared with {value!r} (no stored value is)")
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        raise QueryError(
            f"{tag!r}: {key!r}: {value!r} is beyond the 64-bit integers a query compares"
        )
    if isinstance(value, str):
        if "\x00" in value:
            raise QueryError(
                f"{tag!r}: {key!r}: the string {value!r} holds NUL, which no field holds"
            )
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise QueryError(
                    f"{tag!r}: {key!r}: the string {value!r} holds a lone surrogate (not UTF-8)"
                ) from None
    return value


def _check_kind(tag: str, key: str, column: str, operator: str, value: Any) -> Any:
    """``value`` checked against the kind of ``column`` (JSON fields take any): a number
    column takes numbers (and a string that spells one, which both databases read as it),
    a text column strings.  A string that is no number, or a number for a text column,
    matches nothing or the wrong rows on sqlite and is an error on PostgreSQL, so it is a
    ``QueryError`` on both, before anything is read."""
    if column in JSON_FIELDS or value is None:
        return value
    numeric = column in NUMBER_COLUMNS
    if operator in ("like", "ilike"):
        if numeric:
            raise QueryError(f"{tag!r}: {key!r} holds numbers; {operator!r} applies to text")
        return value
    if numeric:
        if isinstance(value, str) and column not in TIME_COLUMNS:
            try:
                number = int(value)
            except ValueError:
                pass
            else:
                return _plain(tag, key, column, number)
        if not isinstance(value, (int, float)):
            hint = " or a datetime" if column in TIME_COLUMNS else ""
            raise QueryError(f"{tag!r}: {key!r} {operator!r} needs a number{hint}, not {value!r}")
        return value
    if not isinstance(value, str):
        raise QueryError(f"{tag!r}: {key!r} {operator!r} needs a string, not {value!r}")
    return value


def _check_value(tag: str, key: str, column: str, operator: str, value: Any) -> Any:
    if operator in {"in"}:
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, Set)):
            raise QueryError(f"{tag!r}: {key!r} {operator!r} needs a list, not {value!r}")
        items = tuple(_plain(tag, key, column, item) for item in value)
        for item in items:
            if item is not None and not isinstance(item, _SCALARS):
                raise QueryError(
                    f"{tag!r}: {key!r} {operator!r}: {item!r} is not a string or number"
                )
        return tuple(_check_kind(tag, key, column, operator, item) for item in items)
    value = _plain(tag, key, column, value)
    if operator in {"like", "ilike", "has_key"}:
        if not isinstance(value, str):
            raise QueryError(f"{tag!r}: {key!r} {operator!r} needs a string, not {value!r}")
        return _check_kind(tag, key, column, operator, value)
    if operator in LENGTH_OPERATORS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise QueryError(
                f"{tag!r}: {key!r} {operator!r} needs a non-negative integer, not {value!r}"
            )
        return value
    if operator == "of_type":
        if value not in JSON_TYPES:
            raise QueryError(
                f"{tag!r}: {key!r} 'of_type' needs one of {', '.join(sorted(JSON_TYPES))}, "
                f"not {value!r}"
            )
        return value
    if operator == "==":
        if value is not None and not isinstance(value, (*_SCALARS, list, dict)):
            raise QueryError(f"{tag!r}: {key!r} '==' cannot compare with {value!r}")
        if column not in JSON_FIELDS and isinstance(value, (list, dict)):
            raise QueryError(f"{tag!r}: {key!r} '==' cannot compare a column with {value!r}")
        return _check_kind(tag, key, column, operator, value)
    if not isinstance(value, _SCALARS) or isinstance(value, bool):
        raise QueryError(f"{tag!r}: {key!r} {operator!r} needs a string or number, not {value!r}")
    return _check_kind(tag, key, column, operator, value)


def parse_filters(
    tag: str, entity: Entity, filters: Mapping[str, Any] | None
) -> tuple[Filter, ...]:
    """AiiDA's filters dict for ``tag`` as conditions, checked: ``{'extras.x': {'>': 3}}``,
    ``{'id': 5}`` (``==``), ``{'or': [{...}, {...}]}``, ``{'label': {'!like': 'a%'}}``."""
    if filters is None:
        return ()
    if not isinstance(filters, Mapping):
        raise QueryError(f"{tag!r}: filters must be a dict, not {filters!r}")
    parsed: list[Filter] = []
    for key, spec in filters.items():
        if key in ("and", "or"):
            if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence):
                raise QueryError(f"{tag!r}: {key!r} needs a list of filter dicts, not {spec!r}")
            items: list[Filter] = []
            for part in spec:
                inner = parse_filters(tag, entity, part)
                items.append(inner[0] if len(inner) == 1 else BoolFilter("and", inner))
            parsed.append(BoolFilter(cast(Literal["and", "or"], key), tuple(items)))
            continue
        column, path = split_field(tag, entity, key)
        parsed.extend(_conditions(tag, key, column, path, spec))
    return tuple(parsed)


def _conditions(tag: str, key: str, column: str, path: tuple[str, ...], spec: Any) -> list[Filter]:
    if column in JSON_FIELDS and not path and not isinstance(spec, Mapping):
        raise QueryError(f"{tag!r}: {column!r} itself takes only 'has_key' or 'of_type'")
    if not isinstance(spec, Mapping):
        return [Condition(tag, column, path, "==", _check_value(tag, key, column, "==", spec))]
    found: list[Filter] = []
    for raw, value in spec.items():
        if raw in ("and", "or"):
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise QueryError(f"{tag!r}: {key!r} {raw!r} needs a list of dicts, not {value!r}")
            items = [
                BoolFilter("and", tuple(_conditions(tag, key, column, path, v))) for v in value
            ]
            found.append(BoolFilter(raw, tuple(items)))
            continue
        if not isinstance(raw, str):
            raise QueryError(f"{tag!r}: {key!r}: unknown operator {raw!r}")
        negated = raw.startswith("!")
        operator = raw[1:] if negated else raw
        if operator == "===":
            operator = "=="
        if operator not in OPERATORS:
            raise QueryError(
                f"{tag!r}: {key!r}: unknown operator {raw!r} (known: "
                "==, >, <, >=, <=, in, like, ilike, of_type, has_key, of_length, longer, "
                "shorter, and a '!' before any)"
            )
        if operator in JSON_OPERATORS and column not in JSON_FIELDS:
            raise QueryError(f"{tag!r}: {key!r}: {raw!r} applies to extras and attributes only")
        if column in JSON_FIELDS and not path and operator not in {"has_key", "of_type"}:
            raise QueryError(
                f"{tag!r}: {column!r} itself takes only 'has_key' or 'of_type'; name a key"
            )
        found.append(
            Condition(
                tag,
                column,
                path,
                operator,
                _check_value(tag, key, column, operator, value),
                negated,
            )
        )
    return found


def parse_projection(tag: str, entity: Entity, project: Any) -> tuple[Projection, ...]:
    """``project='*'``, ``'id'``, ``['uuid', 'extras.x']``: the values each row carries."""
    if project is None:
        return ()
    keys = [project] if isinstance(project, str) else project
    if not isinstance(keys, Sequence):
        raise QueryError(f"{tag!r}: project must be a string or a list, not {project!r}")
    found = []
    for key in keys:
        if key == "*":
            found.append(Projection(tag, entity, "*", (), "*"))
            continue
        column, path = split_field(tag, entity, key)
        found.append(Projection(tag, entity, column, path, key))
    return tuple(found)


#: the keys of one field's order (AiiDA's ``cast`` is accepted: stored values keep their type)
_ORDER_KEYS = frozenset({"order", "cast", "nulls_last"})


def parse_order(tags: Mapping[str, Entity], order_by: Any) -> tuple[OrderTerm, ...]:
    """AiiDA's ``order_by``: ``{tag: 'id'}``, ``{tag: ['ctime', {'id': {'order': 'desc'}}]}``
    or a list of such dicts."""
    specs = order_by if isinstance(order_by, (list, tuple)) else [order_by]
    terms: list[OrderTerm] = []
    for spec in specs:
        if not isinstance(spec, Mapping):
            raise QueryError(f"order_by needs {{tag: fields}}, not {spec!r}")
        for tag, fields in spec.items():
            if tag not in tags:
                raise QueryError(f"order_by: no tag {tag!r} (tags: {', '.join(tags)})")
            for field in fields if isinstance(fields, (list, tuple)) else [fields]:
                descending = False
                nulls_last: bool | None = None
                if isinstance(field, Mapping):
                    if len(field) != 1:
                        raise QueryError(f"order_by {tag!r}: one field per dict, not {field!r}")
                    ((field, how),) = field.items()
                    if isinstance(how, Mapping) and set(how) - _ORDER_KEYS:
                        unknown = sorted(map(str, set(how) - _ORDER_KEYS))[0]
                        raise QueryError(
                            f"order_by {tag!r}: unknown key {unknown!r} for {field!r} (known: "
                            "'order', 'nulls_last', and 'cast', which is not needed: values "
                            "keep their type)"
                        )
                    order = how.get("order", "asc") if isinstance(how, Mapping) else how
                    if order not in ("asc", "desc"):
                        raise QueryError(
                            f"order_by {tag!r}: order must be 'asc' or 'desc', not {order!r}"
                        )
                    descending = order == "desc"
                    if isinstance(how, Mapping) and "nulls_last" in how:
                        nulls_last = how["nulls_last"]
                        if not isinstance(nulls_last, bool):
                            raise QueryError(
                                f"order_by {tag!r}: nulls_last is True or False, not {nulls_last!r}"
                            )
                column, path = split_field(tag, tags[tag], field)
                terms.append(OrderTerm(tag, column, path, descending, nulls_last))
    return tuple(terms)
