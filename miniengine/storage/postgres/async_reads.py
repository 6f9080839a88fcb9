"""Awaitable reads on PostgreSQL: one psycopg async connection per event loop.

The loop waits for the server on the connection's socket like for any other socket, so a query
over a million rows never holds it up; rows come a page of :data:`PAGE_ROWS` per query (as on
sqlite), so turning them into Python objects on the loop takes a fraction of a millisecond at a
time, and no statement stays open between pages.

An async connection belongs to the loop it was opened on: it is opened on the loop's first read
and closed when the loop shuts down its async generators (``asyncio.run`` does), or when the
store closes.  It has no thread of its own, so one left open cannot keep a script alive.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from miniengine.exceptions import NotExistent, StoreError
from miniengine.storage import process_changes, process_detail
from miniengine.storage.async_paging import PAGE_ROWS, process_rows_in_pages
from miniengine.storage.broker_rows import READ_WORKERS
from miniengine.storage.interfaces.provenance import LogRow, NodeRow, ambiguous_prefix
from miniengine.storage.interfaces.queries import LinkedNode, TreeRow
from miniengine.storage.interfaces.reads import DaemonOverview, ProcessDetail, ProcessSummary
from miniengine.storage.postgres import query_rows, rows
from miniengine.storage.postgres.connection import (
    connection_options,
    one_line,
    store_error,
    without_secrets,
)
from miniengine.storage.query_rows import (
    SUBTREE_SELECT,
    changes_query,
    finished_per_minute_query,
    groups_of_label_query,
    process_page_query,
    queue_counts_query,
    reports_query,
)
from miniengine.storage.rows import NODE_COLUMNS, SQL_INTEGERS  # the same row on every backend
from miniengine.storage.web_reads import check_page, daemon_overview, page_summaries

if TYPE_CHECKING:
    import psycopg

    from miniengine.core.query import QuerySpec
    from miniengine.storage.interfaces.reads import AsyncReads
    from miniengine.storage.postgres.store import PostgresStore
    from miniengine.storage.process_changes import ChangeCursor

__all__ = ["PAGE_ROWS", "PostgresAsyncReads"]

_NODE_BY_PK = f"SELECT {NODE_COLUMNS} FROM nodes WHERE pk = %s"
_NODE_BY_UUID = f"SELECT {NODE_COLUMNS} FROM nodes WHERE uuid = %s"


class _LoopReader:
    """The connection of one event loop, and what closes it with the loop."""

    __slots__ = ("closer", "connection", "opening")

    def __init__(self) -> None:
        self.connection: psycopg.AsyncConnection[Any] | None = None
        #: held while the connection opens, so that concurrent first reads open one
        self.opening: asyncio.Lock | None = asyncio.Lock()
        #: an async generator suspended until the loop shuts its generators down
        self.closer: Any = None


class PostgresAsyncReads:
    """:class:`miniengine.storage.interfaces.reads.AsyncReads` on a :class:`PostgresStore`."""

    __slots__ = ("_lock", "_readers", "_store")

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._readers: dict[asyncio.AbstractEventLoop, _LoopReader] = {}
        self._lock = threading.Lock()  # the loops of several threads may open connections

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        loop = asyncio.get_running_loop()
        reader = self._readers.get(loop)
        if reader is not None and reader.connection is not None:
            if not _unusable(reader.connection):
                return reader.connection
            # closed under us (psycopg closes a connection whose query was cancelled, or the
            # server went): this loop opens a new one, instead of failing every later read
            self._forget(loop, reader)
            _finish(reader)
            reader = None
        if reader is None:
            if self._store.closed:
                raise store_error(self._store.location, "read failed", _Closed())
            with self._lock:
                reader = self._readers.setdefault(loop, _LoopReader())
                closed = [self._readers.pop(old) for old in list(self._readers) if old.is_closed()]
            for old_reader in closed:
                _finish(old_reader)
        assert reader.opening is not None
        async with reader.opening:
            if reader.connection is None:
                reader.connection = await self._open()
                reader.closer = _close_with_loop(self, loop, reader)
                await reader.closer.asend(None)  # now the loop knows it: closed at shutdown
                reader.opening = None  # (a lock keeps a reference to its loop)
        return reader.connection

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        try:
            return await psycopg.AsyncConnection.connect(
                self._store.url,
                autocommit=True,  # every query sees the latest commit, no snapshot held
                **connection_options(self._store.url),
            )
        except psycopg.Error as exc:
            raise StoreError(
                f"{self._store.location}: cannot connect to the database: "
                f"{without_secrets(one_line(exc), self._store.url)}"
            ) from exc

    def _forget(self, loop: asyncio.AbstractEventLoop, reader: _LoopReader) -> None:
        with self._lock:
            if self._readers.get(loop) is reader:
                del self._readers[loop]

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            reader = self._readers.pop(loop, None)
        if reader is not None and reader.closer is not None:
            await reader.closer.aclose()

    def close_all(self) -> None:
        """Close every loop's connection, from any thread (the store is closing): on its own
        loop's thread when that loop runs, else here."""
        with self._lock:
            readers = list(self._readers.items())
            self._readers.clear()
        for loop, reader in readers:
            if loop.is_running() and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(_finish, reader)
                    continue
                except RuntimeError:
                    pass  # closed meanwhile
            _finish(reader)

    async def fetch(self, query: str, params: Iterable[Any]) -> list[Any]:
        """The rows of ``query``; again on a new connection if the server dropped this loop's,
        waiting (without blocking the loop) for a server that went away, as a read on a
        thread does (:meth:`PostgresStore.read`)."""
        import psycopg

        from miniengine.storage.postgres import store as store_module

        store = self._store
        values = list(params)
        patience = store_module.RETRY_SECONDS
        deadline = time.monotonic() + patience
        delay = 0.0
        while True:
            try:
                connection = await self._connection()
            except StoreError as exc:
                if store.closed:
                    raise
                store.server_refused()
                now, delay = store_module.reconnect_pause(
                    store.location, exc, store.outage_deadline(deadline, patience), patience, delay
                )
                await asyncio.sleep(now)
                continue
            try:
                cursor = await connection.execute(query, values)
                found = await cursor.fetchall()
                store.server_answered()
                return found
            except psycopg.Error as exc:
                if not _unusable(connection) or store.closed:
                    reason: Exception = _Closed() if store.closed else exc
                    raise store_error(store.location, "read failed", reason) from exc
                # lost (the server restarted, or another read on this loop lost it): again,
                # connecting before any outage counts against it
                now, delay = store_module.reconnect_pause(
                    store.location, exc, deadline, patience, delay
                )
                await asyncio.sleep(now)

    async def node(self, identifier: int | str) -> NodeRow:
        if isinstance(identifier, int):
            found = (
                await self.fetch(_NODE_BY_PK, (identifier,)) if identifier in SQL_INTEGERS else []
            )
            if not found:
                raise NotExistent(f"no node with the pk {identifier}")
            return NodeRow._make(found[0])
        found = await self.fetch(_NODE_BY_UUID, (identifier.lower(),))
        if found:
            return NodeRow._make(found[0])
        query = rows.uuid_prefix_query(identifier)
        pks = [int(row[0]) for row in await self.fetch(*query)] if query is not None else []
        if not pks:
            raise NotExistent(f"no node with the uuid (or uuid prefix) {identifier!r}")
        if len(pks) > 1:
            raise ambiguous_prefix(identifier, pks)
        found = await self.fetch(_NODE_BY_PK, (pks[0],))
        if not found:  # deleted in between
            raise NotExistent(f"no node with the uuid (or uuid prefix) {identifier!r}")
        return NodeRow._make(found[0])

    async def nodes(self, pks: Sequence[int]) -> dict[int, NodeRow]:
        wanted = [pk for pk in dict.fromkeys(pks) if pk in SQL_INTEGERS]
        found: dict[int, NodeRow] = {}
        for start in range(0, len(wanted), PAGE_ROWS):
            page = wanted[start : start + PAGE_ROWS]
            query = f"SELECT {NODE_COLUMNS} FROM nodes WHERE pk = ANY(%s)"
            for row in await self.fetch(query, (page,)):
                found[row[0]] = NodeRow._make(row)
        return found

    async def query_rows(self, spec: QuerySpec) -> list[tuple[Any, ...]]:
        from miniengine.storage.postgres.query_builder import POSTGRES
        from miniengine.storage.query_builder_sql import compile_query

        compiled = compile_query(spec, POSTGRES)
        return [tuple(row) for row in await self.fetch(compiled.sql, compiled.params)]

    def process_rows(
        self, states: Sequence[str] | None, process_label: str | None, limit: int | None
    ) -> AsyncIterator[NodeRow]:
        return process_rows_in_pages(
            self.fetch, rows.process_rows_query, states, process_label, limit
        )

    # the web view's reads --------------------------------------------------------------------

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
        page = check_page(states, label, group, since, until, before_pk, limit)
        if page is None:
            return []
        group_pk = None
        if group is not None:  # one group of that label (the usual case): walk its members
            groups = await self.fetch(groups_of_label_query(query_rows.POSTGRES), (group,))
            if not groups:
                return []
            group_pk = int(groups[0][0]) if len(groups) == 1 else None
        query = process_page_query(
            query_rows.POSTGRES, states, label, group, since, until, page, limit, group_pk
        )
        return page_summaries(await self.fetch(*query))

    async def current_cursor(self) -> ChangeCursor:
        # the pks below the highest one that have not committed yet are gaps a running
        # transaction may still fill: the window below the top is read to find them
        found = await self.fetch(_TOP_AND_WINDOW, (process_changes.INITIAL_GAP_WINDOW,))
        top = int(found[0][0]) if found else 0
        active = await process_changes.active_processes(self.process_page, PAGE_ROWS)
        present = [int(row[1]) for row in found if row[1] is not None]
        return process_changes.first_cursor(active, top, present)

    async def changes_after(
        self, cursor: ChangeCursor
    ) -> tuple[ChangeCursor, list[ProcessSummary]]:
        return await process_changes.read_changes(
            self.fetch, query_rows.POSTGRES, _SNAPSHOT_AND_CHANGES, cursor, True
        )

    async def process_detail(self, pk: int) -> ProcessDetail:
        if pk not in SQL_INTEGERS:
            raise NotExistent(f"no process with the pk {pk}")
        found = await self.fetch(process_detail.detail_query("%s"), (pk,))
        if not found or found[0][5] is None:
            raise NotExistent(f"no process with the pk {pk}")
        inputs = await self._linked(pk, True, process_detail.INPUT_LINKS)
        outputs = await self._linked(pk, False, process_detail.OUTPUT_LINKS)
        return process_detail.assemble(pk, found, inputs, outputs)

    async def _linked(self, pk: int, incoming: bool, types: Sequence[str]) -> list[LinkedNode]:
        found = await self.fetch(query_rows.linked_nodes_query(incoming), (pk, list(types)))
        return [LinkedNode._make(row) for row in found]

    async def call_tree(self, pk: int, max_depth: int | None = None) -> list[TreeRow]:
        if pk not in SQL_INTEGERS:
            return []
        cte, depth = query_rows._tree(max_depth)
        found = await self.fetch(cte + SUBTREE_SELECT, (pk, depth))
        return [TreeRow._make(row) for row in found]

    async def reports(self, pk: int, after_id: int | None = None) -> list[LogRow]:
        if pk not in SQL_INTEGERS:
            return []
        after = -1 if after_id is None else max(-1, min(after_id, SQL_INTEGERS[-1]))
        found = await self.fetch(reports_query(query_rows.POSTGRES), (pk, after))
        return [LogRow._make(row) for row in found]

    async def linked_nodes(
        self, pk: int, *, incoming: bool, link_types: Sequence[str]
    ) -> list[LinkedNode]:
        if pk not in SQL_INTEGERS:
            return []
        return await self._linked(pk, incoming, link_types)

    async def extras(self, pk: int) -> dict[str, Any]:
        from miniengine.storage.postgres import group_rows

        if pk not in SQL_INTEGERS:
            return group_rows.read_extras_row("nodes", pk, None)
        found = await self.fetch(group_rows.extras_query("nodes"), (pk,))
        return group_rows.read_extras_row("nodes", pk, found[0] if found else None)

    async def daemon_overview(self) -> DaemonOverview:
        now = time.time()
        dialect = query_rows.POSTGRES
        workers = await self.fetch(READ_WORKERS, ())
        queue = await self.fetch(queue_counts_query(dialect), (now,))
        first_minute = (now // 60 - 59) * 60
        minutes = await self.fetch(finished_per_minute_query(dialect), (first_minute,))
        return daemon_overview(now, self._store.lease_timeout, workers, queue[0], minutes)


#: The highest node pk, and the pks present in the window below it (one snapshot).
_TOP_AND_WINDOW = (
    "WITH top AS (SELECT coalesce(max(pk), 0) AS pk FROM nodes) SELECT top.pk, n.pk FROM top "
    "LEFT JOIN nodes n ON n.pk > top.pk - %s AND n.pk < top.pk"
)

#: The read's transaction horizon and the rows of ``changes_query``, in one statement (one
#: snapshot: ``pg_current_snapshot`` is the statement's own).
_SNAPSHOT_AND_CHANGES = (
    "WITH s AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin, "
    "pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax) "
    f"SELECT s.xmin, s.xmax, c.* FROM s LEFT JOIN ({changes_query(query_rows.POSTGRES)}) c "
    "ON true"
)


def _unusable(connection: psycopg.AsyncConnection[Any]) -> bool:
    """Whether a loop's connection can no longer read (closed, or broken by an error)."""
    return bool(connection.closed or connection.broken)


class _Closed(Exception):
    def __str__(self) -> str:
        return "the store is closed"


async def _close_with_loop(
    reads: PostgresAsyncReads, loop: asyncio.AbstractEventLoop, reader: _LoopReader
) -> AsyncIterator[None]:
    """Suspended for the life of the loop's connection; the loop closes it (``aclose``) when it
    shuts down its async generators, and then the connection."""
    try:
        yield
    finally:
        reads._forget(loop, reader)
        connection = _take(reader)
        if connection is not None:  # else already closed with the store
            await connection.close()


#: the store closing (any thread) and the loop shutting down may take a connection at once
_taking = threading.Lock()


def _take(reader: _LoopReader) -> Any:
    """The reader's connection, now no longer its: one closer only ever gets it."""
    with _taking:
        connection, reader.connection = reader.connection, None
    return connection


def _finish(reader: _LoopReader) -> None:
    """Close a loop's connection without awaiting (its socket and libpq's state), on the
    loop's thread or once the loop stopped, and finish its closer generator."""
    connection = _take(reader)
    closer, reader.closer = reader.closer, None
    if connection is not None:
        connection.pgconn.finish()
    if closer is not None:
        try:
            closer.aclose().send(None)  # its close() finds the connection gone at once
        except (StopIteration, RuntimeError):
            pass  # finished, or being closed by its loop right now


if TYPE_CHECKING:  # mypy checks here that the class implements the interface

    def _is_async_reads(reads: PostgresAsyncReads) -> AsyncReads:
        return reads
