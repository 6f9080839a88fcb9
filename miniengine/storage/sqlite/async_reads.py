"""Awaitable reads on sqlite: one aiosqlite read-only connection per event loop.

A query runs on the connection's own thread, so the loop only hands it over and picks up the
rows (an aiosqlite hop costs ~70 us here).  A scan of a million rows therefore never stalls the
loop, with one caveat that sets the page size: building Python rows holds the GIL, which the
loop then waits for (up to the interpreter's switch interval, 5 ms).  So results come a page of
:data:`PAGE_ROWS` at a time, each page a fraction of a millisecond of GIL, and between pages the
connection's thread sleeps on its queue and the loop runs freely.

A connection belongs to one loop: it is opened on the loop's first read and closed when the loop
shuts down its async generators (``asyncio.run``, ``uvloop.run``, ``anyio.run`` and pytest's
loops do), or when the store closes.  Its thread is a daemon thread, so a loop closed without
that shutdown (or never closed) cannot keep the interpreter alive at exit.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from miniengine.exceptions import NotExistent, StoreError
from miniengine.storage import (
    broker_rows,
    process_changes,
    process_detail,
    query_rows,
    rows,
    schema,
)
from miniengine.storage.async_paging import PAGE_ROWS, process_rows_in_pages
from miniengine.storage.interfaces.provenance import LogRow, NodeRow, ambiguous_prefix
from miniengine.storage.interfaces.queries import LinkedNode, TreeRow
from miniengine.storage.interfaces.reads import DaemonOverview, ProcessDetail, ProcessSummary
from miniengine.storage.web_reads import check_page, daemon_overview, page_summaries

if TYPE_CHECKING:
    from miniengine.core.query import QuerySpec
    from miniengine.storage.interfaces.reads import AsyncReads
    from miniengine.storage.process_changes import ChangeCursor
    from miniengine.storage.store import Store

_T = TypeVar("_T")

__all__ = ["PAGE_ROWS", "SqliteAsyncReads"]

_NODE_BY_PK = f"SELECT {rows.NODE_COLUMNS} FROM nodes WHERE pk = ?"
_NODE_BY_UUID = f"SELECT {rows.NODE_COLUMNS} FROM nodes WHERE uuid = ?"


class _LoopReader:
    """The connection of one event loop, and what closes it with the loop."""

    __slots__ = ("closer", "connection", "opening")

    def __init__(self) -> None:
        self.connection: aiosqlite.Connection | None = None
        #: held while the connection opens, so that concurrent first reads open one
        self.opening: asyncio.Lock | None = asyncio.Lock()
        #: an async generator suspended until the loop shuts its generators down
        self.closer: Any = None


class SqliteAsyncReads:
    """:class:`miniengine.storage.interfaces.reads.AsyncReads` on a sqlite :class:`Store`."""

    __slots__ = ("_lock", "_readers", "_store")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._readers: dict[asyncio.AbstractEventLoop, _LoopReader] = {}
        self._lock = threading.Lock()  # the loops of several threads may open connections

    # the connection of the running loop ------------------------------------------------------

    async def _connection(self) -> aiosqlite.Connection:
        loop = asyncio.get_running_loop()
        reader = self._readers.get(loop)
        if reader is not None and reader.connection is not None:
            return reader.connection
        if reader is None:
            self._store._check_open()
            with self._lock:
                reader = self._readers.setdefault(loop, _LoopReader())
                # loops closed without shutting down their generators leave their connection
                closed = [self._readers.pop(old) for old in list(self._readers) if old.is_closed()]
            for old_reader in closed:
                _stop(old_reader)
        assert reader.opening is not None
        async with reader.opening:
            if reader.connection is None:
                reader.connection = await self._open()
                reader.closer = _close_with_loop(self, loop, reader)
                await reader.closer.asend(None)  # now the loop knows it: closed at shutdown
                reader.opening = None  # (a lock keeps a reference to its loop)
        return reader.connection

    async def _open(self) -> aiosqlite.Connection:
        path = self._store.path
        connection = aiosqlite.Connection(
            lambda: schema.connect(path, readonly=True), iter_chunk_size=PAGE_ROWS
        )
        # aiosqlite's thread is not a daemon thread: a connection left open on a loop that is
        # never shut down (a loop closed without it, the engine's own loop thread) would keep
        # the interpreter from exiting, since threads are joined before any atexit handler.
        connection._thread.daemon = True
        try:
            return await connection
        except sqlite3.Error as exc:
            raise schema.store_error(path, "read failed", exc) from exc

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
        """Stop every loop's connection, from any thread (the store is closing)."""
        with self._lock:
            readers = list(self._readers.values())
            self._readers.clear()
        for reader in readers:
            _stop(reader)

    # reads -----------------------------------------------------------------------------------

    async def _fetch(self, query: str, params: Iterable[Any]) -> list[Any]:
        connection = await self._connection()
        try:
            return list(await connection.execute_fetchall(query, params))
        except sqlite3.Error as exc:
            raise schema.store_error(self._store.path, "read failed", exc) from exc
        except ValueError as exc:  # aiosqlite: "Connection closed"
            if self._store.closed:
                raise StoreError(f"{self._store.path}: the store is closed") from exc
            raise

    async def node(self, identifier: int | str) -> NodeRow:
        if isinstance(identifier, int):
            found = (
                await self._fetch(_NODE_BY_PK, (identifier,))
                if identifier in rows.SQL_INTEGERS
                else []
            )
            if not found:
                raise NotExistent(f"no node with the pk {identifier}")
            return NodeRow._make(found[0])
        found = await self._fetch(_NODE_BY_UUID, (identifier.lower(),))
        if found:
            return NodeRow._make(found[0])
        query = rows.uuid_prefix_query(identifier)
        pks = [row[0] for row in await self._fetch(*query)] if query is not None else []
        if not pks:
            raise NotExistent(f"no node with the uuid (or uuid prefix) {identifier!r}")
        if len(pks) > 1:
            raise ambiguous_prefix(identifier, pks)
        found = await self._fetch(_NODE_BY_PK, (pks[0],))
        if not found:  # deleted in between
            raise NotExistent(f"no node with the uuid (or uuid prefix) {identifier!r}")
        return NodeRow._make(found[0])

    async def nodes(self, pks: Sequence[int]) -> dict[int, NodeRow]:
        found: dict[int, NodeRow] = {}
        wanted = [pk for pk in dict.fromkeys(pks) if pk in rows.SQL_INTEGERS]
        # a page at a time: the same bound on the GIL as process_rows, and sqlite's limit on
        # the number of parameters of one statement is never reached
        for start in range(0, len(wanted), PAGE_ROWS):
            page = wanted[start : start + PAGE_ROWS]
            marks = ",".join("?" * len(page))
            query = f"SELECT {rows.NODE_COLUMNS} FROM nodes WHERE pk IN ({marks})"
            for row in await self._fetch(query, page):
                found[row[0]] = NodeRow._make(row)
        return found

    async def query_rows(self, spec: QuerySpec) -> list[tuple[Any, ...]]:
        from miniengine.storage.query_builder_sql import compile_query
        from miniengine.storage.sqlite.query_builder import SQLITE

        compiled = compile_query(spec, SQLITE)
        return [tuple(row) for row in await self._fetch(compiled.sql, compiled.params)]

    def process_rows(
        self, states: Sequence[str] | None, process_label: str | None, limit: int | None
    ) -> AsyncIterator[NodeRow]:
        return process_rows_in_pages(
            self._fetch, rows.process_rows_query, states, process_label, limit
        )

    async def _run(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``function(connection, *args)`` on the connection's thread: the sync read itself,
        so the awaitable twin runs the very same statements."""
        connection = await self._connection()
        try:
            result = await connection._execute(  # type: ignore[no-untyped-call]
                function, connection._connection, *args, **kwargs
            )
            return result  # type: ignore[no-any-return]
        except sqlite3.Error as exc:
            raise schema.store_error(self._store.path, "read failed", exc) from exc
        except ValueError as exc:  # aiosqlite: "Connection closed"
            if self._store.closed:
                raise StoreError(f"{self._store.path}: the store is closed") from exc
            raise

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
            groups = await self._fetch(
                query_rows.groups_of_label_query(query_rows.SQLITE), (group,)
            )
            if not groups:
                return []
            group_pk = int(groups[0][0]) if len(groups) == 1 else None
        query = query_rows.process_page_query(
            query_rows.SQLITE, states, label, group, since, until, page, limit, group_pk
        )
        return page_summaries(await self._fetch(*query))

    async def current_cursor(self) -> ChangeCursor:
        top = await self._fetch("SELECT coalesce(max(pk), 0) FROM nodes", ())
        active = await process_changes.active_processes(self.process_page, PAGE_ROWS)
        return process_changes.first_cursor(active, int(top[0][0]))

    async def changes_after(
        self, cursor: ChangeCursor
    ) -> tuple[ChangeCursor, list[ProcessSummary]]:
        dialect = query_rows.SQLITE
        return await process_changes.read_changes(
            self._fetch, dialect, query_rows.changes_query(dialect), cursor, False
        )

    async def process_detail(self, pk: int) -> ProcessDetail:
        if pk not in rows.SQL_INTEGERS:
            raise NotExistent(f"no process with the pk {pk}")
        found = await self._fetch(process_detail.detail_query("?"), (pk,))
        if not found or found[0][5] is None:
            raise NotExistent(f"no process with the pk {pk}")
        inputs = await self._run(
            query_rows.linked_nodes, pk, incoming=True, link_types=process_detail.INPUT_LINKS
        )
        outputs = await self._run(
            query_rows.linked_nodes, pk, incoming=False, link_types=process_detail.OUTPUT_LINKS
        )
        return process_detail.assemble(pk, found, inputs, outputs)

    async def call_tree(self, pk: int, max_depth: int | None = None) -> list[TreeRow]:
        if pk not in rows.SQL_INTEGERS:
            return []
        return await self._run(query_rows.subtree, pk, max_depth)

    async def reports(self, pk: int, after_id: int | None = None) -> list[LogRow]:
        if pk not in rows.SQL_INTEGERS:
            return []
        after = -1 if after_id is None else max(-1, min(after_id, rows.SQL_INTEGERS[-1]))
        found = await self._fetch(query_rows.reports_query(query_rows.SQLITE), (pk, after))
        return [LogRow._make(row) for row in found]

    async def linked_nodes(
        self, pk: int, *, incoming: bool, link_types: Sequence[str]
    ) -> list[LinkedNode]:
        if pk not in rows.SQL_INTEGERS:
            return []
        return await self._run(
            query_rows.linked_nodes, pk, incoming=incoming, link_types=list(link_types)
        )

    async def extras(self, pk: int) -> dict[str, Any]:
        from miniengine.storage.sqlite import group_rows

        return await self._run(group_rows.read_extras, pk)

    async def daemon_overview(self) -> DaemonOverview:
        now = time.time()
        dialect = query_rows.SQLITE
        workers = await self._fetch(broker_rows.READ_WORKERS, ())
        queue = await self._fetch(query_rows.queue_counts_query(dialect), (now,))
        first_minute = (now // 60 - 59) * 60
        minutes = await self._fetch(query_rows.finished_per_minute_query(dialect), (first_minute,))
        return daemon_overview(now, self._store.lease_timeout, workers, queue[0], minutes)


async def _close_with_loop(
    reads: SqliteAsyncReads, loop: asyncio.AbstractEventLoop, reader: _LoopReader
) -> AsyncIterator[None]:
    """Suspended for the life of the loop's connection; the loop closes it (``aclose``) when it
    shuts down its async generators, and then the connection."""
    try:
        yield
    finally:
        reads._forget(loop, reader)
        connection = _take(reader)
        if connection is not None:  # else already stopped with the store
            try:
                await connection.close()
            except (ValueError, sqlite3.Error):
                pass  # stopped meanwhile


#: the store closing (any thread) and the loop shutting down may take a connection at once
_taking = threading.Lock()


def _take(reader: _LoopReader) -> Any:
    """The reader's connection, now no longer its: one closer only ever gets it."""
    with _taking:
        connection, reader.connection = reader.connection, None
    return connection


def _stop(reader: _LoopReader) -> None:
    """Stop a loop's connection from any thread: its thread closes the sqlite connection and
    ends, and the closer generator is finished so that nothing runs later on the loop."""
    connection = _take(reader)
    closer, reader.closer = reader.closer, None
    if connection is not None:
        # stop() looks for the current event loop, which in a main thread without one would
        # create one: ask from a short-lived thread, where it finds none and just stops.
        stopper = threading.Thread(target=connection.stop, name="aiosqlite-stop", daemon=True)
        try:
            stopper.start()
        except RuntimeError:
            pass  # the interpreter is finalizing: its daemon thread goes with it
        else:
            stopper.join()
    if closer is not None:
        try:
            closer.aclose().send(None)  # its close() finds the connection stopped at once
        except (StopIteration, RuntimeError):
            pass  # finished, or being closed by its loop right now


if TYPE_CHECKING:  # mypy checks here that the class implements the interface

    def _is_async_reads(reads: SqliteAsyncReads) -> AsyncReads:
        return reads
