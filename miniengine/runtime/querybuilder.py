"""AiiDA's ``QueryBuilder``: ``QueryBuilder().append(Int, filters=..., project=...).all()``.

A query is a path of appended entities (nodes of some classes, groups) joined by AiiDA's
relationship keywords (``with_incoming``, ``with_outgoing``, ``with_ancestors``,
``with_descendants``, ``with_group``, ``with_node``),
with filters, projections, order and a page.  Every argument is checked when given (a
:class:`~miniengine.core.query.QueryError` naming the tag, key or operator), and the whole query
runs as ONE SQL statement on the backend: ``count()`` counts in the database, ``iterall()`` reads
a page of ``batch_size`` rows per statement, and ``aiterall()`` does the same on the backend's
async reads, so an event loop never waits on the database.

Filters, orders and projections apply to columns, extras, attributes (under AiiDA's names:
``attributes.value`` of an ``Int``, ``attributes.list`` of a ``List``, ``attributes.KEY`` of a
``Dict``) and links.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from miniengine.core import data as data_module
from miniengine.core.query import (
    ENTITY_GROUP,
    ENTITY_LINK,
    ENTITY_NODE,
    BoolFilter,
    Condition,
    Entity,
    Filter,
    OrderTerm,
    Projection,
    QueryError,
    QuerySpec,
    Relation,
    Vertex,
    parse_filters,
    parse_order,
    parse_projection,
)
from miniengine.exceptions import MultipleObjectsError, NotExistent
from miniengine.storage.attribute_json import MISSING, attribute_at
from miniengine.storage.interfaces.groups import GroupRow
from miniengine.storage.interfaces.provenance import NodeRow, unpack_attributes

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["QueryBuilder", "QueryError"]

_RELATIONS = {
    "with_incoming": (ENTITY_NODE, ENTITY_NODE),
    "with_outgoing": (ENTITY_NODE, ENTITY_NODE),
    "with_ancestors": (ENTITY_NODE, ENTITY_NODE),
    "with_descendants": (ENTITY_NODE, ENTITY_NODE),
    "with_group": (ENTITY_NODE, ENTITY_GROUP),
    "with_node": (ENTITY_GROUP, ENTITY_NODE),
}
_NODE_WIDTH = len(NodeRow._fields)
_GROUP_WIDTH = len(GroupRow._fields)


_Types = tuple[Entity, tuple[str, ...] | None, str | None, str | None]


def _process_class(cls: Any) -> tuple[str, str] | None:
    """The node type and ``process_type`` of a process class or process function, as AiiDA's
    ``append(PwCalculation)`` selects the nodes of that process (``None`` for other values)."""
    from miniengine.runtime.calcjob.process import CalcJob
    from miniengine.runtime.workchain.process import WorkChain

    if getattr(cls, "is_process_function", False) and isinstance(cls.process_type, str):
        return f"process.{cls.kind}", cls.process_type
    if isinstance(cls, type) and issubclass(cls, (WorkChain, CalcJob)):
        kind = "process.calcjob" if issubclass(cls, CalcJob) else "process.workchain"
        return kind, f"{cls.__module__}.{cls.__qualname__}"
    return None


def _vertex_types(cls: Any, subclassing: bool) -> _Types:
    """The entity of ``cls`` and how its type column selects it: exact names, a prefix that
    names must start with, or one that they must not."""
    from miniengine.runtime.groups import GROUP_TYPES, Group
    from miniengine.runtime.nodes import NODE_CLASSES, Node, ProcessNode

    if not isinstance(cls, type):
        raise QueryError(f"append needs a node or group class, not {cls!r}")
    if issubclass(cls, Group):
        if cls is Group and subclassing:
            return ENTITY_GROUP, None, None, None
        names = [cls.type_string]
        if subclassing:
            names += [name for name, kind in GROUP_TYPES.items() if issubclass(kind, cls)]
        return ENTITY_GROUP, tuple(dict.fromkeys(names)), None, None
    if cls is Node:
        return ENTITY_NODE, None, None, None
    if isinstance(cls, type) and issubclass(cls, ProcessNode):
        if cls is ProcessNode:
            return (
                (ENTITY_NODE, None, "process.", None)
                if subclassing
                else (ENTITY_NODE, (), None, None)
            )
        names = [
            name
            for name, kind in NODE_CLASSES.items()
            if kind is cls or (subclassing and issubclass(kind, cls))
        ]
        return ENTITY_NODE, tuple(names), None, None
    if issubclass(cls, data_module.Data):
        import miniengine.runtime.registry  # noqa: F401  (miniengine's own Data types)

        if cls is data_module.Data and subclassing:
            return ENTITY_NODE, None, None, "process."
        names = [cls.type_name]
        if subclassing:
            names += [
                name for name, kind in data_module.DATA_TYPES.items() if issubclass(kind, cls)
            ]
        return ENTITY_NODE, tuple(dict.fromkeys(names)), None, None
    raise QueryError(f"append needs a node or group class, not {cls.__name__}")


def _type_filter(tag: str, entity: Entity, types: Sequence[_Types]) -> Filter | None:
    """The selection of several classes (AiiDA's ``append([CalcJobNode, WorkChainNode])``) as
    one filter on the type column: any of them (``None`` when one of them takes everything)."""
    column = "node_type" if entity == ENTITY_NODE else "type_string"
    alternatives: list[Filter] = []
    for _, names, prefix, exclude in types:
        parts: list[Filter] = []
        if names is not None:
            parts.append(Condition(tag, column, (), "in", names))
        if prefix is not None:
            parts.append(Condition(tag, column, (), "like", prefix + "%"))
        if exclude is not None:
            parts.append(Condition(tag, column, (), "like", exclude + "%", negated=True))
        if not parts:
            return None
        alternatives.append(parts[0] if len(parts) == 1 else BoolFilter("and", tuple(parts)))
    return BoolFilter("or", tuple(alternatives))


class QueryBuilder:
    """AiiDA's QueryBuilder on a miniengine database (``db``: an open backend, a path or a
    PostgreSQL URL; the default database otherwise)."""

    def __init__(
        self,
        path: Sequence[Any] | None = None,
        *,
        filters: Mapping[str, Any] | None = None,
        project: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        order_by: Any = None,
        distinct: bool = False,
        db: Backend | str | os.PathLike[str] | None = None,
    ) -> None:
        self._db = db
        self._vertices: list[Vertex] = []
        self._classes: list[Any] = []
        self._projections: list[Projection] = []
        self._order: tuple[OrderTerm, ...] = ()
        self._limit: int | None = None
        self._offset = 0
        self._distinct = bool(distinct)
        self._edge_tags: dict[str, Entity] = {}
        for item in path or ():
            if isinstance(item, Mapping):
                item = dict(item)
                self.append(item.pop("cls"), **item)
            else:
                self.append(item)
        for tag, spec in (filters or {}).items():
            self.add_filter(tag, spec)
        for tag, spec in (project or {}).items():
            self.add_projection(tag, spec)
        if limit is not None:
            self.limit(limit)
        if offset is not None:
            self.offset(offset)
        if order_by is not None:
            self.order_by(order_by)

    # building --------------------------------------------------------------------------------

    def _tags(self) -> dict[str, Entity]:
        tags: dict[str, Entity] = {vertex.tag: vertex.entity for vertex in self._vertices}
        tags.update(self._edge_tags)
        return tags

    def _tag_of(self, value: Any, keyword: str) -> str:
        if isinstance(value, str):
            if value not in {vertex.tag for vertex in self._vertices}:
                raise QueryError(f"{keyword}={value!r}: no such tag (append it first)")
            return value
        matches = [v.tag for v, c in zip(self._vertices, self._classes, strict=True) if c is value]
        if len(matches) != 1:
            raise QueryError(f"{keyword}={value!r}: name the vertex by its tag")
        return matches[0]

    def append(
        self,
        cls: Any,
        tag: str | None = None,
        filters: Mapping[str, Any] | None = None,
        project: Any = None,
        subclassing: bool = True,
        edge_tag: str | None = None,
        edge_filters: Mapping[str, Any] | None = None,
        edge_project: Any = None,
        **relationship: Any,
    ) -> QueryBuilder:
        """Add an entity to the path, joined to an earlier one by one relationship keyword.

        ``cls`` is a node or group class, a process class or process function (its nodes, as
        AiiDA selects them by their ``process_type``), or a list of such classes (any of
        them; all nodes or all groups)."""
        classes = list(cls) if isinstance(cls, (list, tuple, set, frozenset)) else [cls]
        if not classes:
            raise QueryError("append needs a node or group class, not an empty list")
        kinds: list[_Types] = []
        process_types: list[str] = []
        for item in classes:
            process = _process_class(item)
            if process is not None:
                kinds.append((ENTITY_NODE, (process[0],), None, None))
                process_types.append(process[1])
            else:
                kinds.append(_vertex_types(item, subclassing))
        entity = kinds[0][0]
        if any(kind[0] != entity for kind in kinds):
            raise QueryError(f"append: {cls!r} mixes node and group classes")
        if process_types and len(process_types) != len(classes):
            raise QueryError(f"append: {cls!r} mixes process classes with node classes")
        if tag is None:
            first = classes[0]
            name = getattr(first, "__name__", None) or type(first).__name__
            tag = f"{name.lower()}_{len(self._vertices) + 1}"
        if not isinstance(tag, str) or not tag:
            raise QueryError(f"a tag must be a non-empty string, not {tag!r}")
        if tag in self._tags():
            raise QueryError(f"the tag {tag!r} is already used")
        unknown = set(relationship) - set(_RELATIONS)
        if unknown:
            raise QueryError(
                f"{tag!r}: unknown keyword {sorted(unknown)[0]!r} (relationships: "
                f"{', '.join(_RELATIONS)})"
            )
        if len(relationship) > 1:
            raise QueryError(f"{tag!r}: one relationship per vertex, not {sorted(relationship)}")
        relation: Relation | None = None
        if relationship:
            ((kind, other),) = relationship.items()
            other_tag = self._tag_of(other, kind)
            mine, theirs = _RELATIONS[kind]
            other_entity = next(v.entity for v in self._vertices if v.tag == other_tag)
            if entity != mine or other_entity != theirs:
                raise QueryError(
                    f"{tag!r}: {kind} joins a {mine} to a {theirs}, not a {entity} to a "
                    f"{other_entity}"
                )
            link = kind in ("with_incoming", "with_outgoing")
            edge = edge_tag or f"{other_tag}--{tag}"
            if edge in self._tags() or edge == tag:
                raise QueryError(f"{tag!r}: the edge tag {edge!r} is already used")
            if not link and (edge_filters or edge_project):
                raise QueryError(f"{tag!r}: {kind} has no edge to filter or project")
            edge_parsed = parse_filters(edge, ENTITY_LINK, edge_filters) if link else ()
            relation = Relation(kind, other_tag, edge, edge_parsed)  # type: ignore[arg-type]
            if link:
                self._edge_tags[edge] = ENTITY_LINK
        elif self._vertices:
            raise QueryError(
                f"{tag!r}: say how it joins the path (with_incoming=, with_outgoing=, "
                "with_ancestors=, with_descendants=, with_group= or with_node=)"
            )
        elif edge_tag or edge_filters or edge_project:
            raise QueryError(f"{tag!r}: the first vertex has no edge")
        selection: tuple[Filter, ...] = ()
        if process_types:
            selection = (
                BoolFilter(
                    "or",
                    tuple(
                        BoolFilter(
                            "and",
                            (
                                Condition(tag, "node_type", (), "in", kind[1] or ()),
                                Condition(tag, "process_type", (), "==", process_type),
                            ),
                        )
                        for kind, process_type in zip(kinds, process_types, strict=True)
                    ),
                ),
            )
            names, prefix, exclude = None, None, None
        elif len(kinds) == 1:
            _, names, prefix, exclude = kinds[0]
        else:
            names, prefix, exclude = None, None, None
            either = _type_filter(tag, entity, kinds)
            selection = () if either is None else (either,)
        vertex = Vertex(
            tag,
            entity,
            names,
            prefix,
            exclude,
            selection + parse_filters(tag, entity, filters),
            relation,
        )
        projections = parse_projection(tag, entity, project)
        if relation is not None and edge_project is not None:
            edge_projections = parse_projection(relation.edge_tag, ENTITY_LINK, edge_project)
            if any(p.column == "*" for p in edge_projections):
                raise QueryError(f"{relation.edge_tag!r}: project the fields of a link by name")
            projections += edge_projections
        self._vertices.append(vertex)
        self._classes.append(classes[0] if len(classes) == 1 else None)
        self._projections.extend(projections)
        return self

    def _tag_or_class(self, value: Any) -> Any:
        """``value`` itself if it is a tag, else the tag of the one vertex appended with the
        class ``value`` (AiiDA takes either wherever a tag goes)."""
        if isinstance(value, str):
            return value
        matches = [v.tag for v, c in zip(self._vertices, self._classes, strict=True) if c is value]
        return matches[0] if len(matches) == 1 else value

    def add_filter(self, tag: Any, filter_spec: Mapping[str, Any]) -> QueryBuilder:
        """More filters on ``tag`` (or the class it was appended with; and-ed with those it
        has)."""
        tag = self._tag_or_class(tag)
        tags = self._tags()
        if tag not in tags:
            raise QueryError(f"add_filter: no tag {tag!r}")
        parsed = parse_filters(tag, tags[tag], filter_spec)
        for index, vertex in enumerate(self._vertices):
            if vertex.tag == tag:
                self._vertices[index] = replace(vertex, filters=vertex.filters + parsed)
            elif vertex.relation is not None and vertex.relation.edge_tag == tag:
                relation = replace(
                    vertex.relation, edge_filters=vertex.relation.edge_filters + parsed
                )
                self._vertices[index] = replace(vertex, relation=relation)
        return self

    def add_projection(self, tag: Any, projection: Any) -> QueryBuilder:
        """More values for each row, from ``tag`` (or the class it was appended with)."""
        tag = self._tag_or_class(tag)
        tags = self._tags()
        if tag not in tags:
            raise QueryError(f"add_projection: no tag {tag!r}")
        self._projections.extend(parse_projection(tag, tags[tag], projection))
        return self

    def order_by(self, order_by: Any) -> QueryBuilder:
        """AiiDA's order: ``{tag: ['ctime', {'id': {'order': 'desc'}}]}`` (a class it was
        appended with may stand for the tag)."""
        specs = order_by if isinstance(order_by, (list, tuple)) else [order_by]
        specs = [
            {self._tag_or_class(key): value for key, value in spec.items()}
            if isinstance(spec, Mapping)
            else spec
            for spec in specs
        ]
        self._order = parse_order(self._tags(), specs)
        return self

    def limit(self, limit: int | None) -> QueryBuilder:
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            raise QueryError(f"limit must be a non-negative integer, not {limit!r}")
        self._limit = limit
        return self

    def offset(self, offset: int | None) -> QueryBuilder:
        if offset is not None and (
            not isinstance(offset, int) or isinstance(offset, bool) or offset < 0
        ):
            raise QueryError(f"offset must be a non-negative integer, not {offset!r}")
        self._offset = offset or 0
        return self

    def distinct(self, value: bool = True) -> QueryBuilder:
        self._distinct = bool(value)
        return self

    def spec(self) -> QuerySpec:
        """The query as a value (what the backend compiles)."""
        if not self._vertices:
            raise QueryError("the query is empty: append an entity first")
        projections = tuple(self._projections)
        if not projections:
            last = self._vertices[-1]
            projections = (Projection(last.tag, last.entity, "*", (), "*"),)
        return QuerySpec(
            tuple(self._vertices),
            projections,
            self._order,
            self._limit,
            self._offset,
            self._distinct,
        )

    # running ---------------------------------------------------------------------------------

    def _store(self) -> Backend:
        from miniengine.runtime.context import store_for

        return store_for(self._db)

    def _results(
        self, store: Backend, spec: QuerySpec, rows: list[tuple[Any, ...]]
    ) -> list[list[Any]]:
        """The rows as the user sees them: nodes and groups built, JSON and attributes decoded
        (plain columns, the common listing, are taken as they come)."""
        if all(p.column not in ("*", "extras", "attributes") for p in spec.projections):
            return [list(row) for row in rows]
        from miniengine.runtime.extras import sorted_keys
        from miniengine.runtime.groups import Group
        from miniengine.runtime.nodes import node_from_row

        def build(row: tuple[Any, ...]) -> list[Any]:
            values: list[Any] = []
            at = 0
            for projection in spec.projections:
                if projection.column == "*":
                    if projection.entity == ENTITY_NODE:
                        node_row = NodeRow._make(row[at : at + _NODE_WIDTH])
                        values.append(node_from_row(store, node_row))
                        at += _NODE_WIDTH
                    else:
                        group_row = GroupRow._make(row[at : at + _GROUP_WIDTH])
                        values.append(Group._from_row(group_row, store))
                        at += _GROUP_WIDTH
                    continue
                value = row[at]
                at += 1
                if projection.column == "extras":
                    # in one key order on both backends, as node.base.extras reads them
                    value = None if value is None else sorted_keys(json.loads(value))
                elif projection.column == "attributes":
                    # the stored content under AiiDA's names, as the filters read it
                    found = attribute_at(unpack_attributes(value), projection.path)
                    value = None if found is MISSING else found
                    if value is None and not projection.path:
                        value = {}
                values.append(value)
            return values

        return [build(row) for row in rows]

    def all(self, batch_size: int | None = None, flat: bool = False) -> list[Any]:
        """Every row, each a list of the projected values (``flat``: the values in one list)."""
        rows = list(self.iterall(batch_size)) if batch_size else self._all()
        return [value for row in rows for value in row] if flat else rows

    def _all(self) -> list[list[Any]]:
        store = self._store()
        spec = self.spec()
        return self._results(store, spec, store.query_builder.rows(spec))

    def first(self, flat: bool = False) -> Any:
        """The first row (or ``None``); ``flat`` with one projection: its value."""
        store = self._store()
        spec = replace(self.spec(), limit=1)
        found = self._results(store, spec, store.query_builder.rows(spec))
        if not found:
            return None
        return found[0][0] if flat and len(found[0]) == 1 else found[0]

    def one(self) -> list[Any]:
        """The one row: ``NotExistent`` if none, ``MultipleObjectsError`` if more."""
        store = self._store()
        spec = self.spec()
        limited = replace(spec, limit=2 if spec.limit is None else min(spec.limit, 2))
        found = self._results(store, limited, store.query_builder.rows(limited))
        if not found:
            raise NotExistent("no result was found")
        if len(found) > 1:
            raise MultipleObjectsError("more than one result was found")
        return found[0]

    def count(self) -> int:
        """How many rows the query has (counted in the database)."""
        return self._store().query_builder.count(self.spec())

    def _pager(self, batch_size: int | None) -> _Pager:
        size = 100 if batch_size is None else batch_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise QueryError(f"batch_size must be a positive integer, not {batch_size!r}")
        return _Pager(self.spec(), size)

    def iterall(self, batch_size: int | None = 100) -> Iterator[list[Any]]:
        """The rows, read ``batch_size`` at a time (one statement per batch)."""
        store = self._store()
        pager = self._pager(batch_size)
        while (page := pager.page()) is not None:
            rows = store.query_builder.rows(page)
            yield from pager.results(self._results(store, page, rows))
            if pager.done(page, rows):
                return

    def iterdict(
        self, batch_size: int | None = 100
    ) -> Iterator[builtins.dict[str, builtins.dict[str, Any]]]:
        """The rows as ``{tag: {field: value}}`` dicts, read ``batch_size`` at a time."""
        spec = self.spec()
        for row in self.iterall(batch_size):
            yield self._as_dict(spec, row)

    def dict(
        self, batch_size: int | None = None
    ) -> list[builtins.dict[str, builtins.dict[str, Any]]]:
        """Every row as ``{tag: {field: value}}`` (AiiDA's ``dict()``)."""
        spec = self.spec()
        return [self._as_dict(spec, row) for row in self.all(batch_size)]

    @staticmethod
    def _as_dict(spec: QuerySpec, row: list[Any]) -> builtins.dict[str, builtins.dict[str, Any]]:
        found: builtins.dict[str, builtins.dict[str, Any]] = {}
        for projection, value in zip(spec.projections, row, strict=True):
            found.setdefault(projection.tag, {})[projection.name] = value
        return found

    async def aiterall(self, batch_size: int | None = 100) -> AsyncIterator[list[Any]]:
        """:meth:`iterall` for a coroutine: each batch is read on the backend's async reads,
        so the event loop keeps running while the database works."""
        store = self._store()
        reads = store.async_reads
        pager = self._pager(batch_size)
        while (page := pager.page()) is not None:
            rows = await reads.query_rows(page)
            for row in pager.results(self._results(store, page, rows)):
                yield row
            if pager.done(page, rows):
                return

    def __str__(self) -> str:
        return f"QueryBuilder({self.spec()!r})"


class _Pager:
    """The statements that read a query a batch at a time.

    A query of one entity with no order of its own (AiiDA's common loop: ``for node, in
    QueryBuilder().append(Int, filters=...).iterall()``) is read in pk order, each batch after
    the last pk read, so that deleting the nodes read, or changing them so that the filters no
    longer select them, does not move the rows not yet read (with pages by offset, half of them
    were skipped).  Other queries are read by offset: their rows are not all keyed by one pk.
    """

    def __init__(self, spec: QuerySpec, batch_size: int) -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.left = spec.limit
        self.offset = spec.offset
        self.after: int | None = None
        (first, *others) = spec.vertices
        self.keyset = not others and not spec.order and not spec.distinct
        if self.keyset:
            pk = Projection(first.tag, first.entity, "pk", (), "pk")
            self.spec = replace(
                spec,
                projections=(*spec.projections, pk),
                order=(OrderTerm(first.tag, "pk", (), False),),
            )

    def page(self) -> QuerySpec | None:
        """The next batch's statement (``None`` once the limit is read)."""
        if self.left is not None and self.left <= 0:
            return None
        size = self.batch_size if self.left is None else min(self.batch_size, self.left)
        if not self.keyset or self.after is None:
            return replace(self.spec, limit=size, offset=self.offset)
        (vertex,) = self.spec.vertices
        later = Condition(vertex.tag, "pk", (), ">", self.after)
        vertex = replace(vertex, filters=(*vertex.filters, later))
        return replace(self.spec, vertices=(vertex,), limit=size, offset=0)

    def results(self, rows: list[list[Any]]) -> list[list[Any]]:
        """The rows as the user asked for them (without the pk read for the next batch)."""
        return [row[:-1] for row in rows] if self.keyset else rows

    def done(self, page: QuerySpec, rows: Sequence[Sequence[Any]]) -> bool:
        """Note a batch read; whether it was the last."""
        size = page.limit or 0
        if self.keyset and rows:
            self.after = int(rows[-1][-1])
        self.offset += size
        if self.left is not None:
            self.left -= size
        return len(rows) < size
