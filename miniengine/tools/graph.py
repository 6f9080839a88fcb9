"""Provenance graphs as Graphviz, with the names of AiiDA's ``aiida.tools.visualization``.

A :class:`Graph` collects nodes and links (``add_node``, ``add_edge``, ``add_incoming``,
``add_outgoing``, ``recurse_ancestors``, ``recurse_descendants``) and builds a
``graphviz.Digraph`` of them (:attr:`Graph.graphviz`), styled as AiiDA's: by node type
(:func:`default_node_styles`: data green ellipses, calculations red and workflows orange
rectangles) or by process state (:func:`pstate_node_styles`: green finished ok, red failed,
excepted or killed, orange still running); data show their value, processes their state and exit
code; INPUT_CALC and CREATE links solid, INPUT_WORK and RETURN dashed, CALL dotted.  Every text
from the database is escaped for ``dot``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from miniengine.core.links import LinkType

if TYPE_CHECKING:
    import graphviz

    from miniengine.storage.interfaces import Backend
    from miniengine.storage.interfaces.provenance import NodeRow
    from miniengine.storage.interfaces.traversal import GraphLink

__all__ = [
    "Graph",
    "LinkPair",
    "default_link_styles",
    "default_node_styles",
    "default_node_sublabels",
    "pstate_node_styles",
]

LinkAnnotateType = Literal[None, False, "label", "type", "both"]
IdentifierType = Literal["pk", "uuid", "label"]

GREEN = "#8cd499ff"
RED = "#de707fff"
LIGHT_RED = "#de707f77"
ORANGE = "#e38851ff"
BLUE = "#4ca4b9aa"
WHITE = "#ffffffff"

_FAILED_STATES = ("excepted", "killed")


class LinkPair(NamedTuple):
    """A link's type and label, as AiiDA's ``LinkPair``."""

    link_type: LinkType
    link_label: str


def _escape(text: str) -> str:
    """``text`` shown as it is by ``dot`` (its backslashes would start escape sequences)."""
    import graphviz

    return str(graphviz.escape(text))


#: how much of a text a drawn node shows: a label, a Str's value or a description may be
#: megabytes long, which ``dot`` refuses ("longer than 16384?") and no drawing could show
_MAX_LINE = 80
_MAX_LINES = 8


def _clip(lines: list[str]) -> list[str]:
    """``lines`` cut to what a drawn node shows, each cut line ending with an ellipsis."""
    clipped = [line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 1] + "…" for line in lines]
    if len(clipped) > _MAX_LINES:
        clipped = [*clipped[: _MAX_LINES - 1], "…"]
    return clipped


def _kind(node: Any) -> str:
    """``calculation``, ``workflow`` or ``data``, from a node's type name."""
    node_type: str = getattr(node, "node_type", "") or ""
    if node_type in ("process.calcjob", "process.calcfunction"):
        return "calculation"
    if node_type.startswith("process."):
        return "workflow"
    return "data"


def default_link_styles(link_pair: LinkPair, add_label: bool, add_type: bool) -> dict[str, str]:
    """AiiDA's link styles: INPUT_CALC and CREATE solid, INPUT_WORK and RETURN dashed, CALL
    dotted, all black; labelled with the link's label and/or type."""
    link_type = link_pair.link_type
    if link_type in (LinkType.INPUT_CALC, LinkType.CREATE):
        style = {"style": "solid", "color": "#000000"}
    elif link_type in (LinkType.INPUT_WORK, LinkType.RETURN):
        style = {"style": "dashed", "color": "#000000"}
    else:
        style = {"style": "dotted", "color": "#000000"}
    parts = ([link_type.name] if add_type else []) + ([link_pair.link_label] if add_label else [])
    if parts:
        style["label"] = "\n".join(_escape(part) for part in _clip(parts))
    return style


def default_node_styles(node: Any) -> dict[str, str]:
    """AiiDA's node styles by type: data green ellipses (codes blue), CalcJobs red and
    calcfunctions light red rectangles, workflows orange rectangles."""
    node_type: str = getattr(node, "node_type", "") or ""
    fill = {
        "process.calcjob": RED,
        "process.calcfunction": LIGHT_RED,
        "process.workchain": ORANGE,
        "process.workfunction": ORANGE,
    }.get(node_type)
    if fill is None and node_type.startswith("process."):
        fill = ORANGE
    if fill is not None:
        return {"shape": "rectangle", "style": "filled", "fillcolor": fill, "penwidth": "0"}
    colour = BLUE if node_type.startswith("core.code") else GREEN
    return {"shape": "ellipse", "style": "filled", "fillcolor": colour, "penwidth": "0"}


def pstate_node_styles(node: Any) -> dict[str, str]:
    """AiiDA's node styles by process state: calculations ellipses and workflows hexagons,
    green when finished ok, red when failed, excepted or killed, orange while created, running
    or waiting; data plain rectangles."""
    kind = _kind(node)
    if kind == "data":
        return {"shape": "rectangle", "pencolor": "black"}
    style = {"style": "filled", "penwidth": "0"}
    style.update(
        {"shape": "ellipse"} if kind == "calculation" else {"shape": "polygon", "sides": "6"}
    )
    state = getattr(node, "process_state", None)
    state = getattr(state, "value", state)
    exit_status = getattr(node, "exit_status", None)
    if state in _FAILED_STATES or (state == "finished" and exit_status not in (None, 0)):
        style["fillcolor"] = RED
    elif state == "finished":
        style["fillcolor"] = GREEN
    else:
        style["fillcolor"] = ORANGE
    return style


def default_node_sublabels(node: Any) -> str:
    """AiiDA's second lines: ``value: 1`` of an Int or Float, the value of a Str or Bool, the
    file name of a SinglefileData, ``@computer`` of a RemoteData, a process's state and exit
    code, else the description."""
    node_type: str = getattr(node, "node_type", "") or ""
    if node_type.startswith("process."):
        lines = []
        state = getattr(node, "process_state", None)
        if state is not None:
            lines.append(f"State: {getattr(state, 'value', state)}")
        exit_status = getattr(node, "exit_status", None)
        if exit_status is not None:
            lines.append(f"Exit Code: {exit_status}")
        return "\n".join(lines)
    if node_type in ("core.int", "core.float"):
        return f"value: {getattr(node, 'value', '')}"
    if node_type in ("core.str", "core.bool"):
        return str(getattr(node, "value", ""))
    if node_type == "core.singlefile":
        return str(getattr(node, "filename", ""))
    if node_type == "core.remote":
        computer = getattr(node, "computer", None)
        return f"@{getattr(computer, 'label', '?')}" if computer is not None else "@?"
    return str(getattr(node, "description", "") or "")


def _default_origin_node_styles() -> dict[str, str]:
    return {"color": "red", "penwidth": "6"}


def _default_ignore_node_styles() -> dict[str, str]:
    return {"color": "lightgray", "fillcolor": "white", "penwidth": "2"}


class Graph:
    """A provenance graph to draw with Graphviz, as AiiDA's ``Graph``.

    ``backend`` is an open database, a path or a URL (default: the current database).  Nodes are
    given as pks, uuids or node objects.  ``node_id_type`` (``pk``, ``uuid``, ``label`` or a
    list of them) says how a node is named in its text.  The digraph is built when
    :attr:`graphviz` is read, from the nodes as they are then.
    """

    def __init__(
        self,
        engine: str | None = None,
        graph_attr: dict[str, str] | None = None,
        global_node_style: dict[str, str] | None = None,
        global_edge_style: dict[str, str] | None = None,
        include_sublabels: bool = True,
        link_style_fn: Callable[[LinkPair, bool, bool], dict[str, str]] | None = None,
        node_style_fn: Callable[[Any], dict[str, str]] | None = None,
        node_sublabel_fn: Callable[[Any], str] | None = None,
        node_id_type: IdentifierType | Sequence[IdentifierType] = "pk",
        backend: Backend | str | os.PathLike[str] | None = None,
    ) -> None:
        from miniengine.runtime.context import store_for

        self._store: Backend = store_for(backend)
        self._engine = engine
        self._graph_attr = dict(graph_attr or {})
        self._global_node_style = dict(global_node_style or {})
        self._global_edge_style = dict(global_edge_style or {})
        self._include_sublabels = include_sublabels
        self._link_styles = link_style_fn or default_link_styles
        self._node_styles = node_style_fn or default_node_styles
        self._node_sublabels = node_sublabel_fn or default_node_sublabels
        ids = [node_id_type] if isinstance(node_id_type, str) else list(node_id_type)
        for id_type in ids:
            if id_type not in ("pk", "uuid", "label"):
                raise ValueError(
                    f"`{node_id_type}` is not a valid `node_id_type`, choose from: pk, uuid, label"
                )
        self._node_id_type = ids
        self._nodes: dict[int, dict[str, str]] = {}  # pk -> style override
        self._edges: dict[tuple[int, int, LinkPair | None], dict[str, str]] = {}

    @property
    def backend(self) -> Backend:
        """The database the graph is read from."""
        return self._store

    @property
    def nodes(self) -> set[int]:
        """The pks of the nodes in the graph."""
        return set(self._nodes)

    @property
    def edges(self) -> set[tuple[int, int, LinkPair | None]]:
        """The links in the graph: (in pk, out pk, link pair)."""
        return set(self._edges)

    # adding ----------------------------------------------------------------------------------

    def _pk(self, node: Any) -> int:
        if isinstance(node, int) and not isinstance(node, bool):
            pk = node
        elif isinstance(node, str):
            pk = self._store.provenance.node(node).pk
        else:
            found = getattr(node, "pk", None)
            if not isinstance(found, int):
                raise ValueError(f"not a stored node, a pk or a uuid: {node!r}")
            pk = found
        return pk

    def add_node(
        self, node: Any, style_override: dict[str, str] | None = None, overwrite: bool = False
    ) -> int:
        """Add a node (a pk, a uuid or a stored node); return its pk.  ``style_override`` goes
        over the node's style (the first one given stays, unless ``overwrite``)."""
        pk = self._pk(node)
        if pk not in self._nodes:
            self._store.provenance.node(pk)  # NotExistent if there is no such node
        if pk not in self._nodes or overwrite:
            self._nodes[pk] = dict(style_override or {})
        return pk

    def add_edge(
        self,
        in_node: Any,
        out_node: Any,
        link_pair: LinkPair | None = None,
        style: dict[str, str] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Add a link between two nodes already in the graph."""
        in_pk, out_pk = self._pk(in_node), self._pk(out_node)
        for end, pk in (("in_node", in_pk), ("out_node", out_pk)):
            if pk not in self._nodes:
                raise AssertionError(f"{end} pk={pk} must have already been added to the graph")
        key = (in_pk, out_pk, link_pair)
        if key not in self._edges or overwrite:
            self._edges[key] = {**(style or {}), **self._global_edge_style}

    @staticmethod
    def _link_types(link_types: str | LinkType | Sequence[str | LinkType] | None) -> list[str]:
        if not link_types:
            return []
        if isinstance(link_types, str | LinkType):
            link_types = [link_types]
        return [
            item.value if isinstance(item, LinkType) else LinkType(item.lower()).value
            for item in link_types
        ]

    def _add_links(
        self,
        links: Iterable[GraphLink],
        annotate_links: LinkAnnotateType,
        styles: dict[int, dict[str, str]] | None = None,
    ) -> None:
        if annotate_links not in (None, False, "label", "type", "both"):
            raise ValueError(
                'annotate_links must be one of False, "label", "type" or "both"\n'
                f"instead, it is: {annotate_links}"
            )
        add_label = annotate_links in ("label", "both")
        add_type = annotate_links in ("type", "both")
        for link in links:
            for pk in (link.in_pk, link.out_pk):
                if pk not in self._nodes:
                    self._nodes[pk] = dict((styles or {}).get(pk, {}))
            pair = LinkPair(LinkType(link.link_type), link.label)
            self.add_edge(
                link.in_pk, link.out_pk, pair, self._link_styles(pair, add_label, add_type)
            )

    def _step(self, pks: Sequence[int], incoming: bool, types: list[str]) -> list[GraphLink]:
        return self._store.traversal.neighbour_links(pks, incoming=incoming, link_types=types)

    def add_incoming(
        self,
        node: Any,
        link_types: str | LinkType | Sequence[str | LinkType] | None = None,
        annotate_links: LinkAnnotateType = None,
        return_pks: bool = True,
    ) -> list[Any]:
        """Add a node and the nodes linked into it (of ``link_types``; any if none); return
        their pks (``return_pks``) or the nodes."""
        pk = self.add_node(node)
        links = self._step([pk], True, self._link_types(link_types))
        self._add_links(links, annotate_links)
        return self._found([pk, *(link.in_pk for link in links)], return_pks)

    def add_outgoing(
        self,
        node: Any,
        link_types: str | LinkType | Sequence[str | LinkType] | None = None,
        annotate_links: LinkAnnotateType = None,
        return_pks: bool = True,
    ) -> list[Any]:
        """Add a node and the nodes it links out to (of ``link_types``; any if none); return
        their pks (``return_pks``) or the nodes."""
        pk = self.add_node(node)
        links = self._step([pk], False, self._link_types(link_types))
        self._add_links(links, annotate_links)
        return self._found([pk, *(link.out_pk for link in links)], return_pks)

    def _found(self, pks: list[int], return_pks: bool) -> list[Any]:
        unique = list(dict.fromkeys(pks))
        if return_pks:
            return unique
        from miniengine.runtime.nodes import load_nodes

        loaded = load_nodes(self._store, unique)
        return [loaded[pk] for pk in unique if pk in loaded]

    def _recurse(
        self,
        origin: Any,
        depth: int | None,
        incoming: bool,
        link_types: str | LinkType | Sequence[str | LinkType] | None,
        annotate_links: LinkAnnotateType,
        origin_style: dict[str, str] | None,
        other_side: tuple[LinkType, ...],
        highlight_classes: Sequence[str] | None,
    ) -> None:
        origin_pk = self.add_node(origin)
        types = self._link_types(link_types)
        reached = {origin_pk}
        frontier = [origin_pk]
        links: list[GraphLink] = []
        level = 0
        while frontier and (depth is None or level < depth):
            found = self._step(frontier, incoming, types)
            links.extend(found)
            ends = {link.in_pk if incoming else link.out_pk for link in found}
            frontier = sorted(ends - reached)
            reached |= ends
            level += 1
        if other_side:
            found = self._step(sorted(reached), not incoming, [t.value for t in other_side])
            links.extend(found)
            reached |= {link.out_pk if incoming else link.in_pk for link in found}
        self._nodes[origin_pk] = dict(origin_style or _default_origin_node_styles())
        styles: dict[int, dict[str, str]] = {}
        if highlight_classes:
            rows = self._store.provenance.nodes(sorted(reached - {origin_pk}))
            for pk, row in rows.items():
                if self._class_name(row, None) not in highlight_classes:
                    styles[pk] = _default_ignore_node_styles()
        for pk in sorted(reached - set(self._nodes)):
            self._nodes[pk] = dict(styles.get(pk, {}))
        self._add_links(links, annotate_links)

    def recurse_descendants(
        self,
        origin: Any,
        depth: int | None = None,
        link_types: str | LinkType | Sequence[str | LinkType] | None = None,
        annotate_links: LinkAnnotateType = None,
        origin_style: dict[str, str] | None = None,
        include_process_inputs: bool = False,
        highlight_classes: Sequence[str] | None = None,
    ) -> None:
        """Add ``origin`` and what it leads to, up to ``depth`` links on (all if ``None``);
        with ``include_process_inputs`` also the inputs (INPUT links) of every node reached.
        Nodes whose class name is not in ``highlight_classes`` (if given) are greyed out."""
        self._recurse(
            origin,
            depth,
            False,
            link_types,
            annotate_links,
            origin_style,
            (LinkType.INPUT_WORK, LinkType.INPUT_CALC) if include_process_inputs else (),
            highlight_classes,
        )

    def recurse_ancestors(
        self,
        origin: Any,
        depth: int | None = None,
        link_types: str | LinkType | Sequence[str | LinkType] | None = None,
        annotate_links: LinkAnnotateType = None,
        origin_style: dict[str, str] | None = None,
        include_process_outputs: bool = False,
        highlight_classes: Sequence[str] | None = None,
    ) -> None:
        """Add ``origin`` and what it came from, up to ``depth`` links back (all if ``None``);
        with ``include_process_outputs`` also the outputs (CREATE and RETURN links) of every
        node reached.  Nodes whose class name is not in ``highlight_classes`` (if given) are
        greyed out."""
        self._recurse(
            origin,
            depth,
            True,
            link_types,
            annotate_links,
            origin_style,
            (LinkType.CREATE, LinkType.RETURN) if include_process_outputs else (),
            highlight_classes,
        )

    # drawing ---------------------------------------------------------------------------------

    def _class_name(self, row: NodeRow, node: Any) -> str:
        if row.node_type.startswith("process."):
            return row.process_label or type(node).__name__
        if node is None:
            node = self._load(row)
        return type(node).__name__ if node is not None else row.node_type.rpartition(".")[2]

    def _identifier(self, row: NodeRow) -> str:
        parts = {"pk": str(row.pk), "uuid": row.uuid.split("-")[0], "label": row.label}
        return "|".join(parts[id_type] for id_type in self._node_id_type)

    def _load(self, row: NodeRow) -> Any:
        from miniengine.runtime.nodes import node_from_row

        try:
            return node_from_row(self._store, row)
        except Exception:  # a type whose plugin is not installed here: drawn without its value
            return None

    @property
    def graphviz(self) -> graphviz.Digraph:
        """The graph as a new ``graphviz.Digraph``, built from the nodes as they are now
        (``.source`` is its dot text, ``.render(...)`` draws it)."""
        import graphviz

        digraph = graphviz.Digraph(engine=self._engine, graph_attr=self._graph_attr)
        rows = self._store.provenance.nodes(sorted(self._nodes))
        for pk in sorted(self._nodes):
            row = rows.get(pk)
            if row is None:
                continue  # deleted since it was added
            node = self._load(row)
            title = f"{self._class_name(row, node)} ({self._identifier(row)})"
            lines = [title]
            if self._include_sublabels and node is not None:
                sublabel = self._node_sublabels(node)
                if sublabel:
                    lines.extend(sublabel.split("\n"))
            style = dict(self._node_styles(node if node is not None else row))
            style.update(self._nodes[pk])
            style.update(self._global_node_style)
            style["label"] = "\n".join(_escape(line) for line in _clip(lines))
            digraph.node(f"N{pk}", **{key: str(value) for key, value in style.items()})
        for (in_pk, out_pk, _), style in sorted(
            self._edges.items(), key=lambda item: (item[0][0], item[0][1], str(item[0][2]))
        ):
            if in_pk in rows and out_pk in rows:
                digraph.edge(f"N{in_pk}", f"N{out_pk}", **style)
        return digraph
