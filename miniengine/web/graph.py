"""The provenance graph around a node, drawn as SVG by Graphviz in a worker thread.

The graph is built by :class:`miniengine.tools.Graph`, the same code as ``miniengine node
graph``, and ``dot`` runs as a subprocess with a time limit; both happen in a worker thread, so
a large graph never holds up the server.  The depth is capped: a graph of a whole database is
no picture anybody can read.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from typing import TYPE_CHECKING

import anyio.to_thread

from miniengine.web.filters import BadRequest

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["DIRECTIONS", "MAX_DEPTH", "GraphUnavailable", "missing", "parse_depth", "svg"]

#: The deepest graph drawn (links followed from the node, each way).
MAX_DEPTH = 4
DIRECTIONS = ("both", "ancestors", "descendants")
#: Seconds ``dot`` may take before the drawing is given up.
DOT_TIMEOUT = 30.0


class GraphUnavailable(Exception):
    """Graphviz cannot draw here (its package or its ``dot`` program is missing, or it
    failed); the message says which."""


def missing() -> str | None:
    """Why graphs cannot be drawn here, or None when they can."""
    if importlib.util.find_spec("graphviz") is None:
        return (
            "Provenance graphs need the graphviz Python package: pip install 'miniengine[graph]'."
        )
    if shutil.which("dot") is None:
        return (
            "Provenance graphs need Graphviz's dot program, which is not installed on the "
            "server (e.g. apt-get install graphviz)."
        )
    return None


def parse_depth(text: str | None) -> int:
    """The ``depth`` of a graph request (default 1); ``BadRequest`` beyond :data:`MAX_DEPTH`."""
    if text is None or text == "":
        return 1
    if not text.isdigit() or not 0 <= int(text) <= MAX_DEPTH:
        raise BadRequest(f"depth: expected a whole number from 0 to {MAX_DEPTH}, not {text[:20]!r}")
    return int(text)


def _draw(backend: Backend, pk: int, depth: int, direction: str) -> bytes:
    from miniengine.tools.graph import Graph, pstate_node_styles

    graph = Graph(node_style_fn=pstate_node_styles, backend=backend)
    graph.add_node(pk)
    if direction in ("both", "ancestors"):
        graph.recurse_ancestors(pk, depth=depth, annotate_links="both")
    if direction in ("both", "descendants"):
        graph.recurse_descendants(pk, depth=depth, annotate_links="both")
    source = graph.graphviz.source
    try:
        done = subprocess.run(
            ["dot", "-Tsvg"],
            input=source.encode(),
            capture_output=True,
            check=False,
            timeout=DOT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise GraphUnavailable(
            f"dot took longer than {DOT_TIMEOUT:.0f} s; try a smaller depth"
        ) from None
    except OSError as exc:
        raise GraphUnavailable(f"dot could not run: {exc}") from exc
    if done.returncode != 0:
        raise GraphUnavailable(f"dot failed: {done.stderr.decode(errors='replace')[:500]}")
    drawing: bytes = done.stdout
    return drawing


async def svg(backend: Backend, pk: int, depth: int, direction: str) -> bytes:
    """The SVG of the graph around node ``pk`` (``GraphUnavailable`` when it cannot be drawn)."""
    if direction not in DIRECTIONS:
        raise BadRequest(f"direction: expected one of {', '.join(DIRECTIONS)}, not {direction!r}")
    reason = missing()
    if reason is not None:
        raise GraphUnavailable(reason)
    return await anyio.to_thread.run_sync(_draw, backend, pk, depth, direction)
