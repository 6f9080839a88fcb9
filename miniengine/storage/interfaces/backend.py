"""One open database, whichever engine holds it: its concerns, leases and commit signal."""

from __future__ import annotations

from typing import Protocol

from miniengine.storage.interfaces.archive import Archives
from miniengine.storage.interfaces.broker import Broker
from miniengine.storage.interfaces.caching import Caching
from miniengine.storage.interfaces.calcjobs import CalcJobs
from miniengine.storage.interfaces.checkpoints import Checkpoints
from miniengine.storage.interfaces.computers import Computers
from miniengine.storage.interfaces.control import Control
from miniengine.storage.interfaces.events import Events
from miniengine.storage.interfaces.groups import Groups
from miniengine.storage.interfaces.provenance import Provenance
from miniengine.storage.interfaces.queries import Queries
from miniengine.storage.interfaces.query_builder import QueryBuilderBackend
from miniengine.storage.interfaces.reads import AsyncReads
from miniengine.storage.interfaces.traversal import Traversal

__all__ = ["Backend"]


class Backend(Protocol):
    """A database opened by this OS process (the sqlite :class:`Store` is one).

    ``owner`` names this process in leases; every process row it runs carries it with an epoch
    (the fencing token), renewed in the background while :meth:`leases_taken` counts any.
    """

    owner: str
    lease_timeout: float
    readonly: bool
    #: How long a read in a thread waits for a database server that went away (seconds); a
    #: caller with other duties, such as the daemon's supervisor, sets less.  A sqlite file has
    #: no server: its reads never wait for one.
    read_patience: float

    @property
    def provenance(self) -> Provenance: ...

    @property
    def checkpoints(self) -> Checkpoints: ...

    @property
    def broker(self) -> Broker: ...

    @property
    def control(self) -> Control: ...

    @property
    def events(self) -> Events: ...

    @property
    def queries(self) -> Queries: ...

    @property
    def computers(self) -> Computers: ...

    @property
    def calcjobs(self) -> CalcJobs: ...

    @property
    def groups(self) -> Groups:
        """Extras, comments and groups of nodes."""
        ...

    @property
    def traversal(self) -> Traversal:
        """Following provenance links (AiiDA's traversal rules), and deleting along them."""
        ...

    @property
    def caching(self) -> Caching:
        """Process hashes, and finishing a new process as a copy of an equal one."""
        ...

    @property
    def archives(self) -> Archives:
        """Reading a part of the graph out for an archive, and importing one."""
        ...

    @property
    def query_builder(self) -> QueryBuilderBackend:
        """QueryBuilder queries, each compiled to one statement."""
        ...

    @property
    def async_reads(self) -> AsyncReads:
        """Reads for coroutines of applications, which never block their event loop."""
        ...

    @property
    def closed(self) -> bool: ...

    @property
    def location(self) -> str:
        """The file path or URL (without password), for messages."""
        ...

    def close(self) -> None: ...

    def check_writable(self) -> None:
        """Raise :class:`~miniengine.exceptions.ReadOnlyDatabaseError` if writes would fail."""

    # something committed ---------------------------------------------------------------------

    def commit_marker(self) -> int:
        """A number that changes whenever another connection commits (cheap: no query runs)."""
        ...

    def wait_for_commit(
        self, marker: int, timeout: float, *, quiet_since: float | None = None
    ) -> int:
        """Block this (non-loop) thread until the marker differs from ``marker`` or ``timeout``
        seconds passed; return the current marker.

        Every waiter uses this or :meth:`await_commit`.  A waiter that may see a commit up
        to ~50 ms late passes ``quiet_since``, the ``time.monotonic()`` of the last commit
        it saw: a backend that polls (sqlite) then polls less often the longer nothing
        commits; one that is notified (PostgreSQL) ignores it."""
        ...

    async def await_commit(
        self, marker: int, timeout: float, *, quiet_since: float | None = None
    ) -> int:
        """:meth:`wait_for_commit` for a coroutine, never blocking the loop."""
        ...

    # leases ----------------------------------------------------------------------------------

    def lease_expiry(self) -> float: ...

    def leases_taken(self, count: int = 1) -> None: ...

    def leases_released(self, count: int = 1) -> None: ...

    def start_heartbeat(self) -> None: ...
