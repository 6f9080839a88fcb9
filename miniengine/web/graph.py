"""The provenance graph around a node, drawn as SVG by Graphviz in a worker thread.

The graph is built by :class:`miniengine.tools.Graph`, the same code as ``miniengine node
graph``, and ``dot`` runs as a subprocess with a time limit; both happen in a worker thread, so
a large graph never holds up the server.  The depth is capped, and so are the nodes (a
depth of 1 around a work chain of ten thousand calls is no picture anybody can read either,
and ``dot`` would lay it out for minutes), the time ``dot`` may take, and the drawings made at
once: a request can cost the server a few seconds of one core, not more.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import threading
from typing import TYPE_CHECKING

import anyio.to_thread

from miniengine.web.filters import BadRequest

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = [
    "DIRECTIONS",
    "MAX_DEPTH",
    "MAX_NODES",
    "GraphUnavailable",
    "missing",
    "parse_depth",
    "svg",
]

#: The deepest graph drawn (links followed from the node, each way).
MAX_DEPTH = 4
DIRECTIONS = ("both", "ancestors", "descendants")
#: Seconds ``dot`` may take before the drawing is given up.
DOT_TIMEOUT = 10.0
#: The most nodes a drawing may hold.
MAX_NODES = 300
#: Drawings made at once (one more is told to try again).
_drawing = threading.BoundedSemaphore(2)


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
    if not _drawing.acquire(blocking=False):
        raise GraphUnavailable("other graphs are being drawn right now; try again in a moment")
    try:
        return _drawn(backend, pk, depth, direction)
    finally:
        _drawing.release()


def _drawn(backend: Backend, pk: int, depth: int, direction: str) -> bytes:
    from miniengine.tools.graph import Graph, pstate_node_styles

    graph = Graph(node_style_fn=pstate_node_styles, backend=backend)
    graph.add_node(pk)
    for level in range(1, depth + 1):  # a level at a time, to stop at the first too many
        if direction in ("both", "ancestors"):
            graph.recurse_ancestors(pk, depth=level, annotate_links="both")
        if direction in ("both", "descendants"):
            graph.recurse_descendants(pk, depth=level, annotate_links="both")
        if len(graph.nodes) > MAX_NODES:
            raise GraphUnavailable(
                f"the graph around node {pk} has more than {MAX_NODES} nodes at depth "
                f"{level}: too many to draw; try a smaller depth or one direction"
            )
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
