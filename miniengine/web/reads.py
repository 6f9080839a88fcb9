"""What the pages read, without blocking the server's loop.

Every read awaits the backend's async reads (aiosqlite's thread on sqlite, psycopg's async
connection on PostgreSQL), the node page's links and extras as QueryBuilder queries on them.  A
slow query holds up one page, never the server.  The pages depend on this module only.

A read is not shielded from its request's cancellation: a client that goes away stops its
query (on PostgreSQL psycopg then drops the loop's connection, and the next read opens
another), so nobody waits on work whose page nobody will see.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from miniengine.storage.interfaces.reads import (
    DaemonOverview,
    ProcessDetail,
    ProcessSummary,
)
from miniengine.web.filters import ProcessFilters

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend
    from miniengine.storage.interfaces.provenance import LogRow, NodeRow
    from miniengine.storage.interfaces.queries import TreeRow
    from miniengine.storage.process_changes import ChangeCursor

__all__ = ["NodeLink", "PageReads", "change_key"]

#: How deep the process page's call tree goes.
TREE_DEPTH = 8
#: The most processes the process page's call tree shows.
TREE_ROWS = 500


def change_key(summary: ProcessSummary) -> tuple[Any, ...]:
    """What a row on a page shows that may change: state, exit status, paused, status."""
    return (
        summary.process_state,
        summary.exit_status,
        summary.paused,
        summary.process_status,
    )


class NodeLink(NamedTuple):
    """A link of a node as its page lists it: the link and the node at the other end."""

    link_label: str
    link_type: str
    pk: int
    node_type: str
    process_label: str | None
    process_state: str | None


def _summary(row: NodeRow) -> ProcessSummary:
    return ProcessSummary(
        row.pk,
        row.uuid,
        row.process_label,
        row.process_state or "",
        row.exit_status,
        bool(row.paused),
        row.ctime,
        row.mtime,
        None,
        row.process_status,
    )


class PageReads:
    """The reads of the web pages on one open backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._cursor: ChangeCursor | None = None

    # the process list --------------------------------------------------------------------------

    async def process_page(
        self, filters: ProcessFilters, before_pk: int | None, limit: int
    ) -> list[ProcessSummary]:
        """A page of processes matching ``filters``, newest first, below ``before_pk``."""
        return await self.backend.async_reads.process_page(
            states=list(filters.states) or None,
            label=filters.label or None,
            group=filters.group or None,
            since=filters.since,
            until=filters.until,
            before_pk=before_pk,
            limit=limit,
        )

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

        async def members() -> set[int]:
            return {row[0] async for row in query.aiterall(batch_size=1000)}

        return await members()

    # changes, for the event streams -------------------------------------------------------------

    async def current_cursor(self) -> None:
        """Start watching from now: the changes after this call are the ones reported."""
        self._cursor = await self.backend.async_reads.current_cursor()

    async def changes(self) -> list[ProcessSummary]:
        """The processes created or changed since the last call, in pk order."""
        if self._cursor is None:
            await self.current_cursor()
        assert self._cursor is not None
        self._cursor, changed = await self.backend.async_reads.changes_after(self._cursor)
        return changed

    async def summaries(self, pks: Sequence[int]) -> list[ProcessSummary]:
        """The processes among ``pks`` (others left out), by pk."""
        rows = await self.backend.async_reads.nodes(list(pks))
        return [_summary(rows[pk]) for pk in sorted(rows) if rows[pk].process_state is not None]

    # one process -------------------------------------------------------------------------------

    async def node(self, pk: int) -> NodeRow:
        """Node ``pk`` (``NotExistent`` if there is none)."""
        return await self.backend.async_reads.node(pk)

    async def process_detail(self, pk: int) -> ProcessDetail:
        """The process page's reads of process ``pk`` (``NotExistent`` if it is not one)."""
        return await self.backend.async_reads.process_detail(pk)

    async def call_tree(self, pk: int, max_depth: int = TREE_DEPTH) -> list[TreeRow]:
        """``pk`` and its called processes down to ``max_depth``, in pk order, at most
        :data:`TREE_ROWS` of them (a fan-out of thousands is no tree to read on a page)."""
        rows = await self.backend.async_reads.call_tree(pk, max_depth)
        return rows[:TREE_ROWS]

    async def reports(self, pk: int, after_id: int | None = None) -> list[LogRow]:
        """The log lines of node ``pk`` after log id ``after_id``, oldest first."""
        return await self.backend.async_reads.reports(pk, after_id)

    async def links(self, pk: int, incoming: bool) -> list[NodeLink]:
        """Every node linked into (or out of) node ``pk``, oldest link first (a QueryBuilder
        query on the async reads)."""
        from miniengine.runtime.nodes import Node
        from miniengine.runtime.querybuilder import QueryBuilder

        query = QueryBuilder(db=self.backend)
        query.append(Node, tag="node", filters={"id": pk})
        relation: dict[str, Any] = {"with_outgoing" if incoming else "with_incoming": "node"}
        query.append(
            Node,
            tag="other",
            project=["id", "node_type", "process_label", "process_state"],
            edge_project=["id", "label", "type"],
            **relation,
        )

        async def rows() -> list[NodeLink]:
            found = [
                (link_pk, NodeLink(label, link_type, other, node_type, plabel, state))
                async for other, node_type, plabel, state, link_pk, label, link_type in (
                    query.aiterall(batch_size=1000)
                )
            ]
            return [link for _, link in sorted(found)]

        return await rows()

    async def extras(self, pk: int) -> dict[str, Any]:
        """The extras of node ``pk`` (a QueryBuilder query on the async reads)."""
        from miniengine.runtime.nodes import Node
        from miniengine.runtime.querybuilder import QueryBuilder

        query = QueryBuilder(db=self.backend)
        query.append(Node, filters={"id": pk}, project="extras")

        async def first() -> dict[str, Any]:
            async for (extras,) in query.aiterall(batch_size=1):
                return dict(extras or {})
            return {}

        return await first()

    # the daemon --------------------------------------------------------------------------------

    async def daemon(self) -> DaemonOverview:
        """Workers, queue depth, and processes ended in each of the last 60 minutes."""
        return await self.backend.async_reads.daemon_overview()
