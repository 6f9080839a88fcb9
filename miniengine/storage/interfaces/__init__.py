"""What the runtime, daemon, control, CLI and testing code may ask of a database.

Each concern is a :class:`typing.Protocol` of its own module (provenance, checkpoints, broker,
control, events, queries, computers, calcjobs), and :class:`Backend` bundles them with the
lifecycle of one open database.  Methods take and return typed records (named tuples and
dataclasses), never row positions and never a connection, so a second database (PostgreSQL)
implements the same protocols and nothing above ``miniengine.storage`` changes.

A write that must be atomic (a step's outputs, checkpoint and wake-ups) is one
:class:`Transaction`: calling it runs it in the calling thread; awaiting ``.aio(...)`` runs it
without blocking the event loop.  Reads are plain methods run in the calling thread (they never
wait for a writer); awaitable reads for applications go through the async read path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from miniengine.storage.interfaces.backend import Backend
    from miniengine.storage.interfaces.transaction import Transaction

__all__ = ["Backend", "Transaction"]


def __getattr__(name: str) -> Any:
    # Lazy: a module needing one concern's records imports only that concern (the command line
    # starts faster), while ``from miniengine.storage.interfaces import Backend`` still works.
    if name == "Backend":
        from miniengine.storage.interfaces.backend import Backend

        return Backend
    if name == "Transaction":
        from miniengine.storage.interfaces.transaction import Transaction

        return Transaction
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
