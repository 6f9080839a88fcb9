"""Tools for a provenance graph, with AiiDA's names: ``delete_nodes`` (``aiida.tools.delete_nodes``)
and ``Graph`` (``aiida.tools.visualization.Graph``).

Imported lazily, so that ``import miniengine.tools`` costs nothing until a tool is used (``Graph``
needs the ``graphviz`` package of the ``graph`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from miniengine.tools.deletions import delete_nodes
    from miniengine.tools.graph import Graph

__all__ = ["Graph", "delete_nodes"]


def __getattr__(name: str) -> Any:
    if name == "delete_nodes":
        from miniengine.tools.deletions import delete_nodes

        return delete_nodes
    if name == "Graph":
        from miniengine.tools.graph import Graph

        return Graph
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
