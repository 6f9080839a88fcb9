"""Reads that an application awaits, served without ever blocking its event loop.

The backend's plain reads run in the calling thread: right for a script, a worker thread or the
engine's own short lookups, wrong for an application whose loop also answers requests while it
lists a million processes.  :class:`AsyncReads` is the awaitable twin of those reads; the sqlite
backend serves it on aiosqlite's connection thread, PostgreSQL on psycopg's async connection.
Rows are the provenance concern's :class:`~miniengine.storage.interfaces.provenance.NodeRow`, so
the same node objects are built from either path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from miniengine.storage.interfaces.provenance import LogRow, NodeRow
from miniengine.storage.interfaces.queries import LinkedNode, ProcessOwner, TreeRow

if TYPE_CHECKING:
    from miniengine.core.query import QuerySpec
    from miniengine.storage.process_changes import ChangeCursor

__all__ = [
    "AsyncReads",
    "CalcJobDetail",
    "CheckpointStep",
    "DaemonOverview",
    "ProcessDetail",
    "ProcessSummary",
    "WorkerOverview",
]


class ProcessSummary(NamedTuple):
    """A process as a list of processes shows it (the web view's list, its event stream)."""

    pk: int
    uuid: str
    process_label: str | None
    process_state: str
    exit_status: int | None
    paused: bool
    ctime: float
    mtime: float
    #: the pk of the process that called it, if any
    parent: int | None
    #: what it is doing ("Waiting for ...", "Paused", a scheduler's word), if anything
    process_status: str | None = None


class CheckpointStep(NamedTuple):
    """Where a process's checkpoint says it stands (decoded without importing its class)."""

    #: ``"workchain"`` or ``"calcjob"``
    kind: str
    #: ``module:qualname`` of the process class, as text
    class_path: str
    #: how many steps have run
    seq: int | None
    #: the outline position of the step that ran last (None before the first step)
    cursor: tuple[int, ...] | None
    #: the name of that step
    step_name: str | None


class CalcJobDetail(NamedTuple):
    """What the process page shows of a CalcJob besides its inputs and outputs."""

    computer_label: str | None
    computer_uuid: str | None
    job_id: str | None
    #: the scheduler's last word on the job (the watcher's, while it is with the scheduler)
    scheduler_state: str | None
    #: ``uploading``, ``withscheduler``, ``retrieving``, ... (the CalcJob's own stage)
    stage: str | None
    remote_workdir: str | None
    #: the paths of the files retrieved (``retrieved`` output), sorted; empty before
    retrieved: list[str]


class ProcessDetail(NamedTuple):
    """Everything the process page shows of one process, read from one database.

    ``node`` holds the state, exit status and message, the exception with its traceback
    (``node.exception``, as formatted when it was raised) and the paused flag; inputs and
    outputs are :class:`LinkedNode` rows, whose ``attributes`` give the value of each."""

    node: NodeRow
    #: the pk of the process that called it, if any
    caller: int | None
    #: who holds its lease and on which host, while someone runs it
    owner: ProcessOwner | None
    #: its checkpoint's position, while it has one (a process that ended has none)
    checkpoint: CheckpointStep | None
    inputs: list[LinkedNode]
    outputs: list[LinkedNode]
    #: for a CalcJob, its computer, job and retrieved files
    calcjob: CalcJobDetail | None


class WorkerOverview(NamedTuple):
    """A registered daemon worker, as the daemon page shows it."""

    id: str
    host: str
    pid: int
    #: tasks it holds now
    slots_used: int
    slots_total: int
    #: when it last renewed its leases (``time.time()`` of its host)
    heartbeat: float
    #: whether that heartbeat is younger than the lease timeout (else its leases lapse)
    alive: bool


class DaemonOverview(NamedTuple):
    """The daemon page: workers, the queue, and processes ended per minute."""

    workers: list[WorkerOverview]
    #: tasks ready to be claimed now
    queue_depth: int
    #: tasks claimed by a worker and not yet done
    running_tasks: int
    #: the start (``time.time()``, a whole minute) of the oldest of the 60 minutes below
    first_minute: float
    #: processes that ended (finished, excepted or killed) in each of the last 60 minutes,
    #: oldest first; the last is the current, unfinished minute
    finished_per_minute: list[int]


class AsyncReads(Protocol):
    """Awaitable reads of one open database, for coroutines on any event loop.

    Each loop gets its own connection, opened on first use and closed with the loop (or with
    the database, whichever comes first), so nothing outlives the application's loop.
    """

    async def node(self, identifier: int | str) -> NodeRow:
        """A node by pk, or by uuid or a unique prefix of it, as the provenance concern's
        ``node``: the same errors (``NotExistent``, ``MultipleObjectsError``)."""
        ...

    async def nodes(self, pks: Sequence[int]) -> dict[int, NodeRow]:
        """The rows of the nodes in ``pks`` by pk; a missing pk is left out."""
        ...

    def process_rows(
        self, states: Sequence[str] | None, process_label: str | None, limit: int | None
    ) -> AsyncIterator[NodeRow]:
        """Process nodes, newest first, with the filters of the provenance concern's
        ``process_rows``, read a page at a time.

        Each page is read from the latest commit and the next page continues below the last pk
        seen, so a long iteration holds no read snapshot open between pages, and breaking off
        (or being cancelled) leaves nothing to clean up."""
        ...

    async def query_rows(self, spec: QuerySpec) -> list[tuple[Any, ...]]:
        """The rows of a QueryBuilder query, as the query builder concern's ``rows``."""
        ...

    async def process_page(
        self,
        *,
        states: Sequence[str] | None = None,
        label: str | None = None,
        group: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before_pk: int | None = None,
        limit: int = 50,
    ) -> list[ProcessSummary]:
        """One page of processes, newest (highest pk) first, with pks below ``before_pk``
        (keyset paging: the next page is ``before_pk=page[-1].pk``), at most ``limit``.

        Filters: ``states`` (any of them), ``label`` (a case-insensitive substring of the
        process label), ``group`` (members of a group of that label), ``ctime`` in
        ``[since, until)``.  A page walks the primary key (or the index of the active
        processes) and stops after ``limit`` matches, so it costs the same on the millionth
        process as on the first, except for a filter that almost nothing matches, which
        reads what lies between two matches.  ``ValidationError`` for an unknown state or a
        limit below 1, before anything is read."""
        ...

    async def current_cursor(self) -> ChangeCursor:
        """A cursor at "now": :meth:`changes_after` reports what changes after this call."""
        ...

    async def changes_after(
        self, cursor: ChangeCursor
    ) -> tuple[ChangeCursor, list[ProcessSummary]]:
        """The processes created or changed since ``cursor``, and the cursor to pass next.

        Guarantee: every process created after the cursor, and every change of an active
        process's state, exit status, status, paused flag or mtime, is in the result of a
        later call (at least once; a change may be reported again, and only the latest of
        several changes between two calls is seen).  No write is needed for this (no
        watcher is registered): the cursor holds the active processes as last read, with a
        fingerprint per bucket of pks, and a call reads in one snapshot the fingerprints of
        the active processes now and the nodes above the cursor's highest pk, then the rows
        of the buckets whose fingerprint changed.  On PostgreSQL, where a transaction may
        commit a lower pk after a higher one, the pks skipped below the highest are kept in
        the cursor until they commit, or until every transaction that was running when they
        were first missed has ended.  Cost: the database walks the active processes
        (``nodes_active``) once per call, but only the changed buckets and the new nodes
        become Python rows (10,000 active processes and nothing changed: one statement,
        a few hundred short strings).  Results are in pk order."""
        ...

    async def process_detail(self, pk: int) -> ProcessDetail:
        """Everything the process page shows of process ``pk`` (see :class:`ProcessDetail`).

        ``NotExistent`` if ``pk`` is not a process.  The checkpoint is decoded by the codec
        alone: its class is named, never imported."""
        ...

    async def call_tree(self, pk: int, max_depth: int | None = None) -> list[TreeRow]:
        """``pk`` and the processes it called, down to ``max_depth`` (all if None), in pk
        order: the awaitable twin of the queries concern's ``subtree``."""
        ...

    async def reports(self, pk: int, after_id: int | None = None) -> list[LogRow]:
        """The log lines of node ``pk`` with ids above ``after_id`` (all if None), oldest
        first: the awaitable twin of the provenance concern's ``logs``, for following a
        process (pass the last id seen)."""
        ...

    async def linked_nodes(
        self, pk: int, *, incoming: bool, link_types: Sequence[str]
    ) -> list[LinkedNode]:
        """The nodes linked into (or out of) ``pk`` by links of ``link_types``, oldest link
        first: the awaitable twin of the queries concern's ``linked_nodes`` (the node page)."""
        ...

    async def extras(self, pk: int) -> dict[str, Any]:
        """The extras of node ``pk`` (``NotExistent`` if there is no such node): the awaitable
        twin of the groups concern's ``extras``."""
        ...

    async def daemon_overview(self) -> DaemonOverview:
        """The workers, the task queue and the processes ended per minute over the last hour
        (one grouped query over the processes' ``mtime``)."""
        ...

    async def close(self) -> None:
        """Close the connection of the running loop (the next read opens a new one)."""
        ...
