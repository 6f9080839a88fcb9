"""Every type defined above the core that a stored node or a checkpoint may hold.

Data subclasses register under their type name when their class is defined, and the codec's
runtime types (process nodes, computers) are registered next to their class.  A stored node or
a checkpoint read in a fresh interpreter may name a type whose module nothing has imported yet
(a ``core.singlefile`` output, a computer in a CalcJob's checkpoint).  The core never imports the
runtime, so this module is the one place that knows them all: importing it imports each module
that defines one.  The runtime imports it before it builds a stored node of a type not yet
registered and before it decodes a checkpoint, so what can be read never depends on what
happened to be imported before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from miniengine.core import codec
from miniengine.runtime import codes, computers, file_data, nodes, remote_data

__all__ = ["MODULES", "decode"]

#: The modules whose types this registry guarantees (importing them registered the types).
MODULES = (codes, computers, file_data, nodes, remote_data)


def decode(blob: bytes, *, resolve_pk: Callable[[int], Any] | None = None) -> Any:
    """:func:`miniengine.core.codec.decode` with every runtime type known: how the runtime
    reads a checkpoint (a bare ``codec.decode`` knows the core's types and those imported)."""
    return codec.decode(blob, resolve_pk=resolve_pk)
