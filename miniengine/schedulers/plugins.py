"""Finding a scheduler plugin by name: built in, by entry point, or by a dotted class path."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from miniengine.schedulers.errors import SchedulerError
from miniengine.schedulers.scheduler import Scheduler

__all__ = ["ENTRY_POINT_GROUP", "SchedulerFactory", "load_scheduler"]

#: The entry point group where packages register scheduler plugins.
ENTRY_POINT_GROUP = "miniengine.schedulers"

_BUILT_IN = {
    "core.direct": "miniengine.schedulers.direct:DirectScheduler",
    "core.slurm": "miniengine.schedulers.slurm:SlurmScheduler",
}


class UnknownSchedulerError(SchedulerError, ValueError):
    """No scheduler plugin has the given name."""


def SchedulerFactory(name: str) -> type[Scheduler]:
    """The scheduler class named ``name`` (``core.slurm``, an entry point, or a class path)."""
    target = _BUILT_IN.get(name)
    if target is None:
        found = entry_points(group=ENTRY_POINT_GROUP, name=name)
        for entry_point in found:
            loaded = entry_point.load()
            return _checked(name, loaded)
        if ":" not in name and ("." not in name or name.startswith("core.")):
            known = sorted({*_BUILT_IN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
            raise UnknownSchedulerError(
                f"no scheduler plugin named {name!r}; known: {', '.join(known)}"
            )
        target = name
    module_name, _, attribute = target.partition(":") if ":" in target else target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        loaded = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise UnknownSchedulerError(f"cannot load the scheduler {name!r}: {exc}") from exc
    return _checked(name, loaded)


def load_scheduler(name: str) -> Scheduler:
    """An instance of the scheduler plugin named ``name``."""
    return SchedulerFactory(name)()


def _checked(name: str, loaded: object) -> type[Scheduler]:
    if not (isinstance(loaded, type) and issubclass(loaded, Scheduler)):
        raise UnknownSchedulerError(f"{name!r} names {loaded!r}, which is not a Scheduler")
    return loaded
