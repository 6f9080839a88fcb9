"""The queries concern on PostgreSQL: the operator's reads of
:mod:`miniengine.storage.postgres.query_rows` on the calling thread's reader connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from miniengine.storage.interfaces.broker import QueueDepth
from miniengine.storage.interfaces.queries import (
    DatabaseCounts,
    LinkedNode,
    LogLine,
    NodeView,
    ProcessOwner,
    ProcessRow,
    TreeRow,
)
from miniengine.storage.postgres import broker_rows, query_rows, rows

if TYPE_CHECKING:
    import psycopg

    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresQueries"]


class PostgresQueries:
    """:class:`miniengine.storage.interfaces.queries.Queries` on a :class:`PostgresStore`."""

    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    def list_processes(
        self, states: Sequence[str] | None, since: float | None, limit: int | None
    ) -> list[ProcessRow]:
        return self._store.read(query_rows.list_processes, states, since, limit)

    def node(self, pk: int) -> NodeView | None:
        return self._store.read(query_rows.node, pk)

    def process_owner(self, pk: int) -> ProcessOwner | None:
        return self._store.read(query_rows.process_owner, pk)

    def uuid_matches(self, text: str) -> list[int]:
        return self._store.read(rows.uuid_matches, text)

    def linked_nodes(
        self, pk: int, *, incoming: bool, link_types: Sequence[str]
    ) -> list[LinkedNode]:
        return self._store.read(_linked_nodes, pk, incoming, link_types)

    def log_count(self, pk: int) -> int:
        return self._store.read(query_rows.log_count, pk)

    def subtree(self, pk: int, max_depth: int | None) -> list[TreeRow]:
        return self._store.read(query_rows.subtree, pk, max_depth)

    def subtree_logs(self, pk: int, max_depth: int | None) -> list[LogLine]:
        return self._store.read(query_rows.subtree_logs, pk, max_depth)

    def counts(self) -> DatabaseCounts:
        return self._store.read(_counts)

    def schema_version(self) -> int:
        return self._store.read(query_rows.schema_version)

    def integrity_check(self) -> str:
        return self._store.read(query_rows.integrity_check)


def _linked_nodes(
    connection: psycopg.Connection[Any], pk: int, incoming: bool, link_types: Sequence[str]
) -> list[LinkedNode]:
    return query_rows.linked_nodes(connection, pk, incoming=incoming, link_types=link_types)


def _counts(connection: psycopg.Connection[Any]) -> DatabaseCounts:
    """The counts of ``db info``, the task queue included (every PostgreSQL schema has one)."""
    nodes, processes, paused = query_rows.count_nodes(connection)
    depth = broker_rows.queue_depth(connection)
    return DatabaseCounts(nodes, processes, paused, QueueDepth(depth["ready"], depth["leased"]))
