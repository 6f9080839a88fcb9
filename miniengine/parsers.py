"""AiiDA-shaped name for parsers: ``from miniengine.parsers import Parser`` (as ``aiida.parsers``).

Imported on first use, so ``import miniengine.parsers`` costs nothing until ``Parser`` is read.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from miniengine.runtime.calcjob.parser import Parser

__all__ = ["Parser"]


def __getattr__(name: str) -> Any:
    if name != "Parser":
        raise AttributeError(f"module 'miniengine.parsers' has no attribute {name!r}")
    value = importlib.import_module("miniengine.runtime.calcjob.parser").Parser
    globals()[name] = value
    return value
