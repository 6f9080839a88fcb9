"""How nodes read in the CLI: state with exit status, class names, short values."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["plain_value", "shorten", "state_text", "type_name", "value_text"]

# The registered type names of the core Data classes (miniengine.core.data) and the node classes
# of processes (miniengine.runtime.nodes), by name: importing those modules would cost the CLI
# more than the whole query.  A user's own Data type shows its registered type name.
_TYPE_NAMES = {
    "process.calcfunction": "CalcFunctionNode",
    "process.workfunction": "WorkFunctionNode",
    "process.workchain": "WorkChainNode",
    "process.calcjob": "CalcJobNode",
    "core.data": "Data",
    "core.int": "Int",
    "core.float": "Float",
    "core.str": "Str",
    "core.bool": "Bool",
    "core.dict": "Dict",
    "core.list": "List",
}
_BASE_TYPES = frozenset({"core.int", "core.float", "core.str", "core.bool"})
_CONTAINER_TYPES = frozenset({"core.dict", "core.list"})
VALUE_WIDTH = 60


def type_name(node_type: str) -> str:
    """``WorkChainNode``, ``Int``, ...; a process type we do not know is a ``ProcessNode``."""
    known = _TYPE_NAMES.get(node_type)
    if known is not None:
        return known
    return "ProcessNode" if node_type.startswith("process.") else node_type


def state_text(state: str | None, exit_status: int | None, paused: bool) -> str:
    """``Finished [0]``, ``Excepted``, ``Waiting (paused)``: the state as ``verdi`` shows it."""
    if state is None:
        return ""
    text = state.capitalize()
    if state == "finished" and exit_status is not None:
        text += f" [{exit_status}]"
    if paused:
        text += " (paused)"
    return text


def _unpack(blob: bytes | None) -> Any:
    import msgpack

    return None if blob is None else msgpack.unpackb(blob, raw=False, strict_map_key=False)


def plain_value(node_type: str, attributes: bytes | None) -> Any:
    """The Python value of an ``Int, Float, Str, Bool`` node (JSON-safe), else None."""
    if node_type not in _BASE_TYPES:
        return None
    value = _unpack(attributes)
    if node_type == "core.int" and isinstance(value, str):
        return int(value)  # an int beyond 64 bits is stored as its decimal string
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    return value


def value_text(node_type: str, attributes: bytes | None) -> str:
    """A one-line view of a node's value: ``3``, ``hello``, ``{"a": 1, ...}``; else empty."""
    if node_type in _BASE_TYPES:
        return shorten(str(plain_value(node_type, attributes)))
    if node_type in _CONTAINER_TYPES:
        import json

        return shorten(json.dumps(_unpack(attributes), ensure_ascii=False, default=repr))
    return ""


def shorten(text: str, width: int = VALUE_WIDTH) -> str:
    """One line of at most ``width`` characters (newlines shown as ``\\n``)."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."
