"""Finding plugins by name: built in, by entry point, or by a dotted class path.

Schedulers, transports and (later) calculations and parsers are all found the same way, as in
AiiDA: a short name such as ``core.slurm`` for what ships with miniengine, an entry point name
registered by another package in the group ``miniengine.<kind>``, or ``package.module:Class``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TypeVar

from miniengine.exceptions import MiniengineError

__all__ = ["MissingEntryPointError", "load_plugin"]

_T = TypeVar("_T")


class MissingEntryPointError(MiniengineError, ValueError):
    """No plugin has the given name, or the name points at something of the wrong kind."""


def load_plugin(group: str, name: str, built_in: Mapping[str, str], base: type[_T]) -> type[_T]:
    """The class named ``name`` in the entry point ``group``, checked to subclass ``base``."""
    target = built_in.get(name)
    if target is None:
        # imported here: a built-in plugin needs no entry points, and the module costs ~9 ms
        from importlib.metadata import entry_points

        for entry_point in entry_points(group=group, name=name):
            return _checked(group, name, entry_point.load(), base)
        if ":" not in name and ("." not in name or name.startswith("core.")):
            known = sorted({*built_in, *(ep.name for ep in entry_points(group=group))})
            raise MissingEntryPointError(
                f"no plugin named {name!r} in {group}; known: {', '.join(known)}"
            )
        target = name
    module_name, _, attribute = target.partition(":") if ":" in target else target.rpartition(".")
    try:
        loaded = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise MissingEntryPointError(f"cannot load the plugin {name!r} ({group}): {exc}") from exc
    return _checked(group, name, loaded, base)


def _checked(group: str, name: str, loaded: object, base: type[_T]) -> type[_T]:
    if not (isinstance(loaded, type) and issubclass(loaded, base)):
        raise MissingEntryPointError(
            f"{name!r} ({group}) names {loaded!r}, which is not a {base.__name__}"
        )
    return loaded
