"""Provenance graphs as Graphviz, with the names of AiiDA's ``aiida.tools.visualization.Graph``.

A :class:`Graph` collects nodes and links (``add_node``, ``add_incoming``, ``add_outgoing``,
``recurse_ancestors``, ``recurse_descendants``) and builds a ``graphviz.Digraph`` from them
(:attr:`Graph.graphviz`), styled as AiiDA's: data are green ellipses showing their value,
processes rectangles coloured by their state; CREATE and INPUT links solid, RETURN and
INPUT_WORK dashed, CALL links dotted.  Every text from the database is escaped for ``dot``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from miniengine.core.links import LinkType

if TYPE_CHECKING:
    import graphviz

    from miniengine.storage.interfaces import Backend
    from miniengine.storage.interfaces.provenance import NodeRow
    from miniengine.storage.interfaces.traversal import GraphLink

__all__ = ["Graph", "default_link_styles", "default_node_styles", "default_node_sublabels"]

#: The fill of a process by its state (a finished process that failed is red).
PROCESS_STATE_COLOURS = {
    "created": "#ffffffff",
    "waiting": "#e0e0e0ff",
    "running": "#4ca4b9aa",
    "finished": "#8cd499ff",
    "killed": "#de707f77",
    "excepted": "#de707fff",
}
FAILED_COLOUR = "#de707fff"
DATA_COLOUR = "#8cd499ff"

#: A value longer than this is cut in a node's sublabel.
_VALUE_WIDTH = 40


def _escape(text: str) -> str:
    """``text`` shown as it is by ``dot`` (backslashes and record characters escaped)."""
    import graphviz

    return str(graphviz.escape(text))


def _node_pk(node: Any) -> int:
    pk = node if isinstance(node, int) else getattr(node, "pk", None)
    if not isinstance(pk, int):
        raise ValueError(f"not a stored node or a pk: {node!r}")
    return pk


def _class_name(row: NodeRow) -> str:
    if row.process_state is not None or row.node_type.startswith("process."):
        return row.process_label or row.node_type.rpartition(".")[2]
    name = row.node_type.rpartition(".")[2]
    return name[:1].upper() + name[1:]


def default_node_styles(row: NodeRow) -> dict[str, str]:
    """AiiDA's look: processes as rectangles filled by their state, data as green ellipses."""
    if row.node_type.startswith("process."):
        colour = PROCESS_STATE_COLOURS.get(row.process_state or "", "#ffffffff")
        if row.process_state == "finished" and row.exit_status not in (None, 0):
            colour = FAILED_COLOUR
        return {"shape": "rectangle", "style": "filled", "fillcolor": colour, "pencolor": "black"}
    return {"shape": "ellipse", "style": "filled", "fillcolor": DATA_COLOUR, "penwidth": "0"}


def default_node_sublabels(row: NodeRow, node: Any) -> str:
    """The second line of a node: a process's state and exit code, a data node's value."""
    if row.node_type.startswith("process."):
        lines = [f"State: {row.process_state}"]
        if row.exit_status is not None:
            lines.append(f"Exit Code: {row.exit_status}")
        return "\n".join(lines)
    value = getattr(node, "value", None)
    if value is None or isinstance(value, dict | list):
        return ""
    text = str(value)
    if len(text) > _VALUE_WIDTH:
        text = text[: _VALUE_WIDTH - 3] + "..."
    return f"value: {text}"


def default_link_styles(link: GraphLink, annotate: str | None) -> dict[str, str]:
    """AiiDA's look: CREATE and INPUT_CALC solid, RETURN and INPUT_WORK dashed, CALL dotted;
    ``annotate`` (``"label"``, ``"type"`` or ``"both"``) writes the link's label or type."""
    kind = LinkType(link.link_type)
    if kind in (LinkType.CREATE, LinkType.INPUT_CALC):
        style = {"style": "solid", "color": "#000000"}
    elif kind in (LinkType.RETURN, LinkType.INPUT_WORK):
        style = {"style": "dashed", "color": "#000000"}
    else:
        style = {"style": "dotted", "color": "#000000"}
    parts = {
        "label": [link.label],
        "type": [kind.name],
        "both": [kind.name, link.label],
    }.get(annotate or "", [])
    if parts:
        style["label"] = "\n".join(_escape(part) for part in parts)
    return style


class Graph:
    """A provenance graph to draw with Graphviz, as AiiDA's ``Graph``.

    ``backend`` is an open database, a path or a URL (default: the current database).  Nodes are
    given as pks or node objects.  ``graph_attr`` goes to the ``graphviz.Digraph``.
    """

    def __init__(
        self,
        engine: str | None = None,
        graph_attr: dict[str, str] | None = None,
        include_sublabels: bool = True,
        link_style_fn: Callable[[GraphLink, str | None], dict[str, str]] | None = None,
        node_style_fn: Callable[[NodeRow], dict[str, str]] | None = None,
        node_sublabel_fn: Callable[[NodeRow, Any], str] | None = None,
        backend: Backend | str | os.PathLike[str] | None = None,
    ) -> None:
        from miniengine.runtime.context import store_for

        self._store = store_for(backend)
        self._engine = engine
        self._graph_attr = dict(graph_attr or {})
        self._include_sublabels = include_sublabels
        self._link_style = link_style_fn or default_link_styles
        self._node_style = node_style_fn or default_node_styles
        self._node_sublabel = node_sublabel_fn or default_node_sublabels
        self._nodes: dict[int, dict[str, str]] = {}  # pk -> style override
        self._edges: dict[tuple[int, int, str, str], str | None] = {}  # link -> annotation

    @property
    def nodes(self) -> set[int]:
        """The pks of the nodes in the graph."""
        return set(self._nodes)

    @property
    def edges(self) -> set[tuple[int, int, str, str]]:
        """The links in the graph: (in pk, out pk, link type, label)."""
        return set(self._edges)

    def add_node(self, node: Any, style_override: dict[str, str] | None = None) -> int:
        """Add a node (a pk or a stored node); return its pk."""
        pk = _node_pk(node)
        if pk not in self._store.provenance.nodes([pk]):
            from miniengine.exceptions import NotExistent

            raise NotExistent(f"no node with pk {pk}")
        self._nodes.setdefault(pk, {}).update(style_override or {})
        return pk

    def _add_links(self, links: Iterable[GraphLink], annotate: str | None) -> list[int]:
        reached: list[int] = []
        for link in links:
            for pk in (link.in_pk, link.out_pk):
                self._nodes.setdefault(pk, {})
            self._edges[tuple(link)] = annotate  # type: ignore[index]
            reached.extend((link.in_pk, link.out_pk))
        return reached

    def _neighbours(
        self,
        pks: Sequence[int],
        incoming: bool,
        link_types: Sequence[LinkType | str],
        annotate_links: str | None,
    ) -> set[int]:
        types = [LinkType(t).value for t in link_types]
        links = self._store.traversal.neighbour_links(pks, incoming=incoming, link_types=types)
        self._add_links(links, annotate_links)
        return {link.in_pk if incoming else link.out_pk for link in links}

    def add_incoming(
        self,
        node: Any,
        link_types: Sequence[LinkType | str] = (),
        annotate_links: str | None = None,
        return_pks: bool = True,
    ) -> set[Any]:
        """Add a node and the nodes linked into it (of ``link_types``; any if none); return
        their pks (``return_pks``) or the nodes."""
        pk = self.add_node(node)
        return self._found(self._neighbours([pk], True, link_types, annotate_links), return_pks)

    def add_outgoing(
        self,
        node: Any,
        link_types: Sequence[LinkType | str] = (),
        annotate_links: str | None = None,
        return_pks: bool = True,
    ) -> set[Any]:
        """Add a node and the nodes it links out to (of ``link_types``; any if none); return
        their pks (``return_pks``) or the nodes."""
        pk = self.add_node(node)
        return self._found(self._neighbours([pk], False, link_types, annotate_links), return_pks)

    def _found(self, pks: set[int], return_pks: bool) -> set[Any]:
        if return_pks:
            return pks
        from miniengine.runtime.nodes import load_nodes

        return set(load_nodes(self._store, sorted(pks)).values())

    def _recurse(
        self,
        origin: Any,
        depth: int | None,
        incoming: bool,
        link_types: Sequence[LinkType | str],
        annotate_links: str | None,
        origin_style: dict[str, str] | None,
        include_other_side: bool,
    ) -> None:
        pk = self.add_node(origin, style_override=origin_style)
        seen = {pk}
        frontier = {pk}
        level = 0
        while frontier and (depth is None or level < depth):
            reached = self._neighbours(sorted(frontier), incoming, link_types, annotate_links)
            if include_other_side:
                processes = [
                    found
                    for found, row in self._store.provenance.nodes(sorted(reached)).items()
                    if row.node_type.startswith("process.")
                ]
                if processes:
                    self._neighbours(processes, not incoming, link_types, annotate_links)
            frontier = reached - seen
            seen |= reached
            level += 1

    def recurse_ancestors(
        self,
        origin: Any,
        depth: int | None = None,
        link_types: Sequence[LinkType | str] = (),
        annotate_links: str | None = None,
        origin_style: dict[str, str] | None = None,
        include_process_outputs: bool = False,
    ) -> None:
        """Add ``origin`` and its ancestors up to ``depth`` links back (all if ``None``); with
        ``include_process_outputs``, also the outputs of every process reached."""
        self._recurse(
            origin,
            depth,
            True,
            link_types,
            annotate_links,
            origin_style,
            include_process_outputs,
        )

    def recurse_descendants(
        self,
        origin: Any,
        depth: int | None = None,
        link_types: Sequence[LinkType | str] = (),
        annotate_links: str | None = None,
        origin_style: dict[str, str] | None = None,
        include_process_inputs: bool = False,
    ) -> None:
        """Add ``origin`` and its descendants up to ``depth`` links on (all if ``None``); with
        ``include_process_inputs``, also the inputs of every process reached."""
        self._recurse(
            origin,
            depth,
            False,
            link_types,
            annotate_links,
            origin_style,
            include_process_inputs,
        )

    @property
    def graphviz(self) -> graphviz.Digraph:
        """The graph as a ``graphviz.Digraph`` (built now, from the nodes as they are now)."""
        import graphviz

        from miniengine.storage.interfaces.traversal import GraphLink

        digraph = graphviz.Digraph(engine=self._engine, graph_attr=self._graph_attr)
        rows = self._store.provenance.nodes(sorted(self._nodes))
        for pk in sorted(self._nodes):
            row = rows.get(pk)
            if row is None:
                continue  # deleted since it was added
            title = f"{_escape(_class_name(row))} ({pk})"
            if self._include_sublabels:
                node = None if row.node_type.startswith("process.") else self._safe_load(row)
                sublabel = self._node_sublabel(row, node)
                if sublabel:
                    title += "\n" + "\n".join(_escape(line) for line in sublabel.split("\n"))
            style = {**self._node_style(row), **self._nodes[pk]}
            digraph.node(f"N{pk}", label=title, **style)
        for (in_pk, out_pk, link_type, label), annotate in sorted(
            self._edges.items(), key=lambda item: item[0]
        ):
            if in_pk in rows and out_pk in rows:
                link = GraphLink(in_pk, out_pk, link_type, label)
                digraph.edge(f"N{in_pk}", f"N{out_pk}", **self._link_style(link, annotate))
        return digraph

    def _safe_load(self, row: NodeRow) -> Any:
        from miniengine.runtime.nodes import node_from_row

        try:
            return node_from_row(self._store, row)
        except Exception:  # a type whose plugin is not installed here: shown without a value
            return None
