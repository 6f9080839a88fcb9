"""The daemon: workers that run submitted processes, and the supervisor that keeps them alive.

``Worker`` runs a worker inside an existing event loop; ``python -m miniengine.daemon start``
starts a supervisor process with worker child processes.  ``Worker`` is imported on first use,
so that the command line's daemon checks do not load the runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from miniengine.daemon.worker import DEFAULT_SLOTS, Worker

__all__ = ["DEFAULT_SLOTS", "Worker"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from miniengine.daemon import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'miniengine.daemon' has no attribute {name!r}")
