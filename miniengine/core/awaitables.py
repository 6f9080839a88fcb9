"""How a WorkChain step waits for children: ``ToContext``, ``append_`` and ``assign_``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ContextAction", "ToContext", "append_", "assign_"]


class ToContext(dict[str, Any]):
    """Returned by a step: wait for these children and put their nodes in the context.

    It is a dict, so a step may return a plain dict too; keys may be dotted (``'a.b'``).
    """


@dataclass(frozen=True)
class ContextAction:
    """How a child's node lands in the context: assigned to the key, or appended to a list."""

    target: Any
    append: bool


def assign_(target: Any) -> ContextAction:
    """Put the child's node at the key (the default for a plain value in ``ToContext``)."""
    return ContextAction(target, append=False)


def append_(target: Any) -> ContextAction:
    """Append the child's node to the list at the key (created if missing)."""
    return ContextAction(target, append=True)
