"""Lazy exports for the package's namespaces: a name's module is imported on first use.

``import miniengine`` (and ``miniengine.orm``, ``miniengine.engine``) must stay cheap: the
runtime, its dependencies and the storage layer load only when a name that needs them is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

__all__ = ["DATA_MODULE", "load_data_backend", "resolve"]


def resolve(
    namespace: str, exports: Mapping[str, tuple[str, str]], name: str, scope: dict[str, Any]
) -> Any:
    """The value of ``namespace.name`` from ``exports`` (name -> (module, attribute)), cached in
    the namespace's ``scope`` so that the next access is a plain global lookup."""
    try:
        module, attribute = exports[name]
    except KeyError:
        raise AttributeError(f"module {namespace!r} has no attribute {name!r}") from None
    if module == DATA_MODULE:
        load_data_backend()
    value = getattr(importlib.import_module(module), attribute)
    scope[name] = value
    return value


#: The pure module of the Data types: it stores nothing itself, the runtime installs the backend.
DATA_MODULE = "miniengine.core.data"


def load_data_backend() -> None:
    """Import the runtime module that installs how Data is stored: a Data type taken from the
    package (``from miniengine import Int``) can then be stored, while the pure core itself
    never imports the runtime."""
    importlib.import_module("miniengine.runtime.nodes")
