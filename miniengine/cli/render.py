"""How nodes read in the CLI: state with exit status, class names, short values."""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = [
    "json_safe",
    "plain_value",
    "printable",
    "shorten",
    "state_text",
    "type_name",
    "value_text",
]

# What must not reach a terminal raw: C0 and C1 control characters (ESC starts the sequences
# that recolour, move the cursor or retitle the window; 0x9B is an 8-bit CSI), DEL, the bidi
# overrides and isolates (which reorder what is shown), and lone surrogates (which the terminal's
# encoding cannot write at all).  Labels, messages, values and tracebacks come from users.
_OTHER_UNSAFE = "\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[\x00-\x1f{_OTHER_UNSAFE}]")
_UNSAFE_IN_TEXT = re.compile(f"[\x00-\x08\x0b-\x1f{_OTHER_UNSAFE}]")  # keeps \t and \n
_UNSAFE_IN_JSON = re.compile(f"[{_OTHER_UNSAFE}]")  # json.dumps escapes \x00-\x1f itself


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` with its control characters shown as escapes (``\\x1b``, ``\\n``,
    ``\\u202e``), so that it prints as the characters it holds and cannot drive the terminal.

    With ``lines``, newlines and tabs are kept (a block of several lines, a traceback).
    """
    pattern = _UNSAFE_IN_TEXT if lines else _UNSAFE
    return pattern.sub(_escape, text)


def json_safe(text: str) -> str:
    """JSON text whose strings hold no character a terminal acts on: ``json.dumps`` escapes
    C0 controls itself; this escapes the others (``\\u009b``) the same way, still valid JSON."""
    return _UNSAFE_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


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
