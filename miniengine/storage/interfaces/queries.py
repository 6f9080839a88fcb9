"""The queries concern of a backend: what an operator reads (the ``process`` and ``db`` commands).

Each query is one or two statements that an index answers; rows come back as named tuples, so
the commands render fields by name.  :class:`Reader` is a database opened only to read these:
no file is created, migrated or changed, and nothing of the event-loop machinery is imported,
which keeps a read-only command fast to start and harmless on a database another version wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from typing import Self

    from miniengine.storage.interfaces.broker import Broker, QueueDepth
    from miniengine.storage.interfaces.calcjobs import CalcJobs
    from miniengine.storage.interfaces.provenance import Provenance
    from miniengine.storage.interfaces.query_builder import QueryBuilderBackend

__all__ = [
    "UNLIMITED_DEPTH",
    "DatabaseCounts",
    "LinkedNode",
    "LogLine",
    "NodeView",
    "ProcessOwner",
    "ProcessRow",
    "Queries",
    "Reader",
    "TreeRow",
]

#: deeper than any real call tree: "no limit" for the recursive queries
UNLIMITED_DEPTH = 1 << 30


class ProcessRow(NamedTuple):
    """A process in a listing; ``caller`` is the pk of the process that called it, if any."""

    pk: int
    uuid: str
    ctime: float
    process_label: str | None
    process_state: str
    exit_status: int | None
    process_status: str | None
    paused: bool
    caller: int | None


class NodeView(NamedTuple):
    """What ``process show`` shows of a node (its attributes and lease left out)."""

    pk: int
    uuid: str
    node_type: str
    process_type: str | None
    process_label: str | None
    process_state: str | None
    process_status: str | None
    exit_status: int | None
    exit_message: str | None
    exception: str | None
    paused: bool
    label: str
    description: str
    ctime: float
    mtime: float


class ProcessOwner(NamedTuple):
    """Who holds the lease of a live process, and on which host (``process show``)."""

    #: the lease holder's id: a daemon worker's (``worker:<host>:<pid>:...``) or a script's
    owner: str
    #: when the lease runs out unless renewed (``time.time()``); past: its owner is gone
    lease_expires: float | None
    #: the host of the worker holding it, if a registered worker does (a script is none)
    host: str | None


class LinkedNode(NamedTuple):
    """A node at the other end of a link, with what a listing of links shows of it."""

    link_label: str
    link_type: str
    pk: int
    node_type: str
    attributes: bytes | None  # msgpack, see interfaces.provenance.unpack_attributes
    process_label: str | None
    process_state: str | None
    exit_status: int | None
    paused: bool


class TreeRow(NamedTuple):
    """A process of a call tree, with its caller (``parent``) and depth below the root."""

    pk: int
    parent: int | None
    depth: int
    process_label: str | None
    process_state: str | None
    exit_status: int | None
    process_status: str | None
    paused: bool


class LogLine(NamedTuple):
    """A log line of a call tree, with the depth of its process below the root."""

    time: float
    levelname: str
    message: str
    node_pk: int
    depth: int
    process_label: str | None


class DatabaseCounts(NamedTuple):
    """What ``db info`` counts: nodes, processes by state (states without any left out), the
    paused active processes, and the task queue (None before the queue existed)."""

    nodes: int
    processes: dict[str, int]
    paused: int
    queue: QueueDepth | None


class Queries(Protocol):
    """The reads of the operator's commands."""

    def list_processes(
        self, states: Sequence[str] | None, since: float | None, limit: int | None
    ) -> list[ProcessRow]:
        """Process nodes newest first, in ``states`` (all if None), created at or after
        ``since``, at most ``limit``.  ``ValueError`` for a state that does not exist."""
        ...

    def node(self, pk: int) -> NodeView | None:
        """Node ``pk``, or None (also for a pk no node could have)."""
        ...

    def process_owner(self, pk: int) -> ProcessOwner | None:
        """Who holds the lease of process ``pk`` and on which host; None when nobody does."""
        ...

    def uuid_matches(self, text: str) -> list[int]:
        """The pks (a few, at most) of the nodes whose uuid, or its part after the timestamp,
        starts with ``text``."""
        ...

    def linked_nodes(
        self, pk: int, *, incoming: bool, link_types: Sequence[str]
    ) -> list[LinkedNode]:
        """The nodes linked into (or out of) ``pk`` by links of ``link_types``, oldest first."""
        ...

    def log_count(self, pk: int) -> int:
        """How many log lines node ``pk`` has."""
        ...

    def subtree(self, pk: int, max_depth: int | None) -> list[TreeRow]:
        """``pk`` and its descendants in the call tree (down to ``max_depth``), in pk order."""
        ...

    def subtree_logs(self, pk: int, max_depth: int | None) -> list[LogLine]:
        """The log lines of ``pk`` and its descendants, oldest first, each with its depth."""
        ...

    def counts(self) -> DatabaseCounts:
        """Nodes, processes by state, paused processes and the task queue."""
        ...

    def schema_version(self) -> int:
        """The schema version the database is at."""
        ...

    def integrity_check(self) -> str:
        """``"ok"``, or the first problem the database engine's own check finds."""
        ...


class Reader(Protocol):
    """A database opened only to read: the queries, and the reads of the other concerns.

    Opening checks that the database is one of ours that this version can read (refusing a
    newer one); it never creates, migrates or changes anything.  Writes through it raise
    :class:`~miniengine.exceptions.ReadOnlyDatabaseError`.
    """

    @property
    def queries(self) -> Queries: ...

    @property
    def provenance(self) -> Provenance: ...

    @property
    def calcjobs(self) -> CalcJobs: ...

    @property
    def broker(self) -> Broker: ...

    @property
    def query_builder(self) -> QueryBuilderBackend:
        """QueryBuilder queries (their reads only)."""
        ...

    @property
    def location(self) -> str:
        """The file path or URL (without password), for messages."""
        ...

    def check(self) -> int:
        """The schema version, after checking that the database is one of ours that this
        version can read (done on opening unless asked not to)."""
        ...

    def backup(self, target: Path) -> None:
        """Write a consistent, compact copy of the database into ``target``, a new empty file,
        from one snapshot (writers go on meanwhile)."""
        ...

    def vacuum(self) -> None:
        """Rebuild the database without its free space and empty its write-ahead log.  The
        caller makes sure no daemon serves it (this waits for no one)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
