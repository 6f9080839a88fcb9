"""The queries concern on sqlite."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from miniengine.storage import query_rows
from miniengine.storage.interfaces.queries import (
    DatabaseCounts,
    LinkedNode,
    LogLine,
    NodeView,
    ProcessOwner,
    ProcessRow,
    TreeRow,
)

__all__ = ["ReadsRows", "SqliteQueries"]

T = TypeVar("T")


class ReadsRows(Protocol):
    """Where the reads run: a :class:`~miniengine.storage.store.Store` (a reader connection of
    the calling thread) or a :class:`~miniengine.storage.sqlite.reader.SqliteReader`."""

    def read(self, fn: Callable[..., T], *args: Any) -> T: ...


class SqliteQueries:
    """:class:`miniengine.storage.interfaces.queries.Queries` on a sqlite database."""

    __slots__ = ("_store",)

    def __init__(self, store: ReadsRows) -> None:
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
        from miniengine.storage.rows import uuid_matches

        return self._store.read(uuid_matches, text)

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
    connection: sqlite3.Connection, pk: int, incoming: bool, link_types: Sequence[str]
) -> list[LinkedNode]:
    return query_rows.linked_nodes(connection, pk, incoming=incoming, link_types=link_types)


def _counts(connection: sqlite3.Connection) -> DatabaseCounts:
    """The counts of ``db info``; the queue once the file has one (schema version 2)."""
    nodes, processes, paused = query_rows.count_nodes(connection)
    queue = None
    if query_rows.schema_version(connection) >= 2:
        from miniengine.storage.broker_rows import queue_depth
        from miniengine.storage.interfaces.broker import QueueDepth

        depth = queue_depth(connection)
        queue = QueueDepth(depth["ready"], depth["leased"])
    return DatabaseCounts(nodes, processes, paused, queue)
