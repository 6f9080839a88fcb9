"""What the pages read, in the shapes the pages show, without blocking the server's loop.

Every method awaits the backend's async reads (aiosqlite's thread on sqlite, psycopg's async
connection on PostgreSQL) or, for the reads that have no awaitable twin yet, runs the backend's
plain read in a worker thread (``anyio.to_thread``): a slow query holds up one page, never the
server.  The pages depend on this module only, so the storage side can change underneath.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio.to_thread

from miniengine.exceptions import NotExistent
from miniengine.web.filters import ProcessFilters

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend
    from miniengine.storage.interfaces.broker import QueueDepth, WorkerRow
    from miniengine.storage.interfaces.provenance import LogRow, NodeRow
    from miniengine.storage.interfaces.queries import LinkedNode, ProcessOwner, TreeRow

__all__ = ["DaemonView", "PageReads", "ProcessDetailView", "Summary"]

#: How many of the newest processes the change watcher compares while the storage has no
#: change cursor of its own.
_WATCH_WINDOW = 500

_INPUT_LINKS = ("input_calc", "input_work")
_OUTPUT_LINKS = ("create", "return")
_CALL_LINKS = ("call_calc", "call_work")


class Summary(NamedTuple):
    """One process as the list shows it (and as the event stream sends it)."""

    pk: int
    uuid: str
    process_label: str | None
    process_state: str | None
    exit_status: int | None
    paused: bool
    ctime: float
    mtime: float

    def key(self) -> tuple[Any, ...]:
        """What a change of the row on the page is: state, exit status, paused."""
        return (self.process_state, self.exit_status, self.paused)


def _summary(row: NodeRow) -> Summary:
    return Summary(
        row.pk,
        row.uuid,
        row.process_label,
        row.process_state,
        row.exit_status,
        bool(row.paused),
        row.ctime,
        row.mtime,
    )


@dataclass
class ProcessDetailView:
    """Everything the process page shows of one process."""

    node: NodeRow
    inputs: list[LinkedNode]
    outputs: list[LinkedNode]
    caller: int | None
    owner: ProcessOwner | None
    checkpoint_step: str | None
    calcjob: dict[str, Any] | None


@dataclass
class DaemonView:
    """The daemon page: workers, the queue, and processes finished per minute (oldest first)."""

    workers: list[WorkerRow]
    queue: QueueDepth
    finished_per_minute: list[int] = field(default_factory=list)


class PageReads:
    """The reads of the web pages on one open backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._seen: dict[int, tuple[Any, ...]] = {}

    # the process list --------------------------------------------------------------------------

    async def process_page(
        self, filters: ProcessFilters, before_pk: int | None, limit: int
    ) -> list[Summary]:
        """A page of processes matching ``filters``, newest first, below ``before_pk``."""
        # TODO: use async_reads.process_page (keyset paging in SQL) once the storage has it;
        # until then the newest-first listing is read a page at a time and filtered here.
        found: list[Summary] = []
        members = await self._group_members(filters.group) if filters.group else None
        async for row in self.backend.async_reads.process_rows(
            list(filters.states) or None, None, None
        ):
            if before_pk is not None and row.pk >= before_pk:
                continue
            summary = _summary(row)
            if members is not None and row.pk not in members:
                continue
            if filters.matches(summary):
                found.append(summary)
                if len(found) >= limit:
                    break
        return found

    async def _group_members(self, label: str) -> set[int]:
        from miniengine.runtime.groups import Group
        from miniengine.runtime.nodes import ProcessNode
        from miniengine.runtime.querybuilder import QueryBuilder

        query = QueryBuilder(db=self.backend)
        query.append(Group, tag="group", filters={"label": label})
        query.append(ProcessNode, with_group="group", project="id")
        return {row[0] async for row in query.aiterall(batch_size=1000)}

    async def in_group(self, label: str, pks: Sequence[int]) -> set[int]:
        """Which of ``pks`` are in the group ``label``."""
        from miniengine.runtime.groups import Group
        from miniengine.runtime.nodes import ProcessNode
        from miniengine.runtime.querybuilder import QueryBuilder

        query = QueryBuilder(db=self.backend)
        query.append(Group, tag="group", filters={"label": label})
        query.append(
            ProcessNode, with_group="group", project="id", filters={"id": {"in": list(pks)}}
        )
        return {row[0] async for row in query.aiterall(batch_size=1000)}

    # changes, for the event stream -------------------------------------------------------------

    async def current_cursor(self) -> None:
        """Start watching from now: the changes after this call are the ones reported."""
        # TODO: use async_reads.current_cursor / changes_after once the storage has them.
        self._seen = {s.pk: s.key() for s in await self._newest(_WATCH_WINDOW)}

    async def changes(self) -> list[Summary]:
        """The processes created or changed since the last call, oldest first."""
        newest = await self._newest(_WATCH_WINDOW)
        changed = [s for s in newest if self._seen.get(s.pk) != s.key()]
        self._seen = {s.pk: s.key() for s in newest}
        return sorted(changed, key=lambda s: s.pk)

    async def _newest(self, limit: int) -> list[Summary]:
        return [
            _summary(row) async for row in self.backend.async_reads.process_rows(None, None, limit)
        ]

    async def summaries(self, pks: Sequence[int]) -> list[Summary]:
        """The processes among ``pks`` (others left out), by pk."""
        rows = await self.backend.async_reads.nodes(list(pks))
        return [_summary(rows[pk]) for pk in sorted(rows) if rows[pk].process_state is not None]

    # one process -------------------------------------------------------------------------------

    async def node(self, pk: int) -> NodeRow:
        """Node ``pk`` (``NotExistent`` if there is none)."""
        return await self.backend.async_reads.node(pk)

    async def process_detail(self, pk: int) -> ProcessDetailView:
        """The process page's reads of process ``pk`` (``NotExistent`` if it is not one)."""
        row = await self.node(pk)
        if row.process_state is None:
            raise NotExistent(f"node {pk} is not a process")
        queries = self.backend.queries
        # TODO: one awaitable process_detail read once the storage has it.
        inputs = await anyio.to_thread.run_sync(
            lambda: queries.linked_nodes(pk, incoming=True, link_types=_INPUT_LINKS)
        )
        outputs = await anyio.to_thread.run_sync(
            lambda: queries.linked_nodes(pk, incoming=False, link_types=_OUTPUT_LINKS)
        )
        callers = await anyio.to_thread.run_sync(
            lambda: queries.linked_nodes(pk, incoming=True, link_types=_CALL_LINKS)
        )
        owner = await anyio.to_thread.run_sync(queries.process_owner, pk)
        calcjob = None
        if row.node_type == "process.calcjob":
            calcjob = await self._calcjob(pk)
        return ProcessDetailView(
            node=row,
            inputs=inputs,
            outputs=outputs,
            caller=callers[0].pk if callers else None,
            owner=owner,
            checkpoint_step=None,
            calcjob=calcjob,
        )

    async def _calcjob(self, pk: int) -> dict[str, Any] | None:
        info = await anyio.to_thread.run_sync(self.backend.calcjobs.calcjob_info, pk)
        if info is None:
            return None
        return {
            "computer": info.computer_label,
            "job_id": info.job_id,
            "scheduler_state": info.scheduler_state,
            "stage": info.stage,
            "remote_workdir": info.remote_workdir,
            "retrieved": [],
        }

    async def call_tree(self, pk: int, max_depth: int = 6) -> list[TreeRow]:
        """``pk`` and its called processes down to ``max_depth``, in pk order."""
        # TODO: async_reads.call_tree once the storage has it.
        return await anyio.to_thread.run_sync(self.backend.queries.subtree, pk, max_depth)

    async def reports(self, pk: int, after_id: int | None = None) -> list[LogRow]:
        """The log lines of node ``pk`` after log id ``after_id``, oldest first."""
        # TODO: async_reads.reports once the storage has it.
        rows = await anyio.to_thread.run_sync(self.backend.provenance.logs, pk)
        return [row for row in rows if after_id is None or row.pk > after_id]

    async def links(self, pk: int, incoming: bool) -> list[LinkedNode]:
        """Every node linked into (or out of) node ``pk``."""
        from miniengine.core.links import LinkType

        types = [t.value for t in LinkType]
        return await anyio.to_thread.run_sync(
            lambda: self.backend.queries.linked_nodes(pk, incoming=incoming, link_types=types)
        )

    async def extras(self, pk: int) -> dict[str, Any]:
        """The extras of node ``pk``."""
        return dict(await anyio.to_thread.run_sync(self.backend.groups.extras, pk))

    # the daemon --------------------------------------------------------------------------------

    async def daemon(self) -> DaemonView:
        """Workers, queue depth, and processes finished in each of the last 60 minutes."""
        # TODO: async_reads.daemon_overview once the storage has it.
        broker = self.backend.broker
        workers = await anyio.to_thread.run_sync(broker.workers)
        queue = await anyio.to_thread.run_sync(broker.queue_depth)
        now = time.time()
        per_minute = [0] * 60
        async for row in self.backend.async_reads.process_rows(
            ["finished", "excepted", "killed"], None, 2000
        ):
            age = int((now - row.mtime) // 60)
            if 0 <= age < 60:
                per_minute[59 - age] += 1
        return DaemonView(workers=workers, queue=queue, finished_per_minute=per_minute)
