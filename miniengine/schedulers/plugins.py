"""Finding a scheduler plugin: ``core.direct``, ``core.slurm``, an entry point or a class path."""

from __future__ import annotations

from miniengine.plugins import load_plugin
from miniengine.schedulers.scheduler import Scheduler

__all__ = ["ENTRY_POINT_GROUP", "SchedulerFactory", "load_scheduler"]

#: The entry point group where packages register scheduler plugins.
ENTRY_POINT_GROUP = "miniengine.schedulers"

_BUILT_IN = {
    "core.direct": "miniengine.schedulers.direct:DirectScheduler",
    "core.slurm": "miniengine.schedulers.slurm:SlurmScheduler",
}


def SchedulerFactory(name: str) -> type[Scheduler]:
    """The scheduler class named ``name``."""
    return load_plugin(ENTRY_POINT_GROUP, name, _BUILT_IN, Scheduler)  # type: ignore[type-abstract]


def load_scheduler(name: str) -> Scheduler:
    """An instance of the scheduler plugin named ``name``."""
    return SchedulerFactory(name)()
