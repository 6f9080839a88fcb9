"""Tools for a provenance graph, with AiiDA's names: ``delete_nodes`` and ``delete_group_nodes``
(``aiida.tools``), ``get_nodes_delete`` and ``get_nodes_export`` (``aiida.tools.graph``) and
``Graph`` (``aiida.tools.visualization.Graph``).

Imported lazily, so that ``import miniengine.tools`` costs nothing until a tool is used (``Graph``
needs the ``graphviz`` package of the ``graph`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from miniengine.tools.deletions import (
        delete_group_nodes,
        delete_nodes,
        get_nodes_delete,
        get_nodes_export,
    )
    from miniengine.tools.graph import Graph

__all__ = ["Graph", "delete_group_nodes", "delete_nodes", "get_nodes_delete", "get_nodes_export"]

_DELETIONS = ("delete_group_nodes", "delete_nodes", "get_nodes_delete", "get_nodes_export")


def __getattr__(name: str) -> Any:
    if name in _DELETIONS:
        from miniengine.tools import deletions

        return getattr(deletions, name)
    if name == "Graph":
        from miniengine.tools.graph import Graph

        return Graph
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
