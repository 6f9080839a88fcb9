"""The daemon: workers that run submitted processes, and the supervisor that keeps them alive.

``Worker`` runs a worker inside an existing event loop; ``python -m miniengine.daemon start``
starts a supervisor process with worker child processes.
"""

from __future__ import annotations

from miniengine.daemon.worker import DEFAULT_SLOTS, Worker

__all__ = ["DEFAULT_SLOTS", "Worker"]
