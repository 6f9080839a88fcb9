"""The sqlite store: one locked writer connection, per-thread readers, leases and heartbeat.

Every write is one callable run as one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) on the
writer connection while holding the store's write lock, so transactions of different threads and
tasks never interleave.  A thread without a running event loop runs its transaction itself (a
thread hop costs 100-250 us on this kind of machine; a small transaction 20-60 us).  A coroutine
runs it inline on the loop when the lock is free and the file is not locked by another process --
the transaction is short and never waits -- and otherwise hands it to the store's background thread,
which does the waiting and retrying.  Reads use a connection of the calling thread, which in WAL
mode never waits for a writer.

Writes that queue up behind the lock commit together (group commit, see
:mod:`miniengine.storage.group_commit`): a daemon worker whose processes run their steps in
threads has dozens of writes waiting for the lock at once; taking the file's lock, and
committing, once per group instead of once per write is a quarter of such a worker's time.  The
main thread never joins a group (a Ctrl-C lands there), and a write that finds nothing queued
and the lock free runs at once, without the queue's cost (a WorkChain run by a script writes
from its step thread, nearly always alone).

Every process row carries an ``owner`` and a ``lease_epoch`` (the fencing token).  The background
thread renews the leases of this store's owner, independently of user code and of the loop.
"""

from __future__ import annotations

import atexit
import os
import random
import sqlite3
import threading
import time
import uuid as uuid_module
import weakref
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from miniengine.exceptions import (
    DatabaseLockedError,
    MiniengineError,
    ReadOnlyDatabaseError,
    StoreError,
)
from miniengine.storage import schema
from miniengine.storage.background import BackgroundThread
from miniengine.storage.group_commit import GroupCommit
from miniengine.storage.host import current_host
from miniengine.storage.permissions import writable
from miniengine.storage.sqlite.broker import SqliteBroker
from miniengine.storage.sqlite.caching import SqliteCaching
from miniengine.storage.sqlite.checkpoints import SqliteCheckpoints
from miniengine.storage.sqlite.control import SqliteControl
from miniengine.storage.sqlite.provenance import SqliteProvenance

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend
    from miniengine.storage.sqlite.archive import SqliteArchives
    from miniengine.storage.sqlite.async_reads import SqliteAsyncReads
    from miniengine.storage.sqlite.calcjobs import SqliteCalcJobs
    from miniengine.storage.sqlite.computers import SqliteComputers
    from miniengine.storage.sqlite.events import SqliteEvents
    from miniengine.storage.sqlite.groups import SqliteGroups
    from miniengine.storage.sqlite.queries import SqliteQueries
    from miniengine.storage.sqlite.query_builder import SqliteQueryBuilder
    from miniengine.storage.sqlite.traversal import SqliteTraversal

__all__ = ["DEFAULT_LEASE_TIMEOUT", "Store", "close_all_stores", "shared_store"]

T = TypeVar("T")

#: Seconds without a heartbeat after which another owner may take a process over.
DEFAULT_LEASE_TIMEOUT = 10.0

#: How long a write keeps retrying while another process holds the write lock of the file.
BUSY_RETRY_SECONDS = 30.0

#: The longest sleep between two attempts to take the file's write lock.
MAX_BUSY_SLEEP = 0.004

#: How often :meth:`Store.wait_for_commit` looks at ``PRAGMA data_version`` (a few microseconds).
COMMIT_POLL_INTERVAL = 0.005

#: The longest poll interval of a waiter that passes ``quiet_since`` (reached after a second
#: without commits: an idle web server wakes 20 times a second, not 200).
IDLE_POLL_INTERVAL = 0.05

#: Commits between two WAL checkpoints (run on the background thread, never on a loop).
CHECKPOINT_EVERY = 1000

#: Commits between two looks at the WAL file's size (one ``stat``): a WAL that grew past
#: :data:`WAL_RESTART_ABOVE` since the last look is checkpointed at once.  A busy daemon's
#: commit adds ~30 KiB, so this bounds the growth between two looks to a few MiB.
WAL_LOOK_EVERY = 100

#: Seconds after which a store that committed anything checkpoints even if it committed less
#: than :data:`CHECKPOINT_EVERY` times; such a quiet checkpoint also empties the WAL file, so an
#: idle daemon's WAL shrinks back to nothing.
CHECKPOINT_SECONDS = 5.0

#: Above this size a busy store's checkpoint copies the whole WAL and makes the next commit
#: start it over (``RESTART``), which waits for readers; below, a ``PASSIVE`` checkpoint copies
#: what it can without waiting for anyone.
WAL_RESTART_ABOVE = 16 * 1024 * 1024

#: How long a restarting checkpoint waits for other connections (it blocks writers meanwhile,
#: so briefly; readers that start once the WAL is copied read the database file and do not count).
WAL_RESTART_WAIT_MS = 100

#: ``journal_size_limit`` of the writer: a WAL that starts over is cut back to this size, so
#: the file never keeps a larger size for good, and its growth past :data:`WAL_RESTART_ABOVE`
#: shows new content (smaller would cost re-growing the file under load).
WAL_SIZE_LIMIT = WAL_RESTART_ABOVE

_ACTIVE_STATES = ("created", "running", "waiting")


class _Busy(Exception):
    """The file's write lock is held by another connection (inline attempt only)."""


class Store:
    """A miniengine database file opened by this OS process."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
        owner: str | None = None,
        commit_poll_interval: float = COMMIT_POLL_INTERVAL,
    ) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = Path(path)
        self._location = str(self.path)  # read at every launch: built once
        self.synchronous = synchronous.upper()
        self.lease_timeout = float(lease_timeout)
        #: (a read of a local file never waits for a server; set for the backend interface)
        self.read_patience = 0.0
        #: how often :meth:`wait_for_commit` looks (a daemon worker, idle most of the time and
        #: with several waiters, looks less often than a script waiting for its result)
        self.commit_poll_interval = commit_poll_interval
        self.owner = owner or f"{current_host()}:{os.getpid()}:{uuid_module.uuid4().hex[:8]}"
        schema.create_file(self.path)
        schema.refuse_without_writing(self.path)
        schema.warn_if_network_file_system(self.path)
        #: True when this user cannot write the file or its folder: it is read, never changed
        #: (no WAL switch, no migration), and every write raises ReadOnlyDatabaseError.
        self.readonly = not writable(self.path)
        if self.readonly:
            connection = schema.connect(self.path, readonly=True)
        else:
            # busy_timeout 0: a locked file is reported at once and retried by us, so that a
            # write attempted inline on an event loop never sleeps there.
            connection = schema.connect(self.path, synchronous=self.synchronous, busy_timeout_ms=0)
        try:
            if self.readonly:
                schema.check_readable_schema(connection, self.path)
            else:
                schema.ensure_schema(connection, self.path)
                connection.execute("PRAGMA wal_autocheckpoint = 0")
                connection.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        except BaseException:
            connection.close()
            raise
        self._writer = connection
        self._write_lock = threading.Lock()
        #: the writes of threads waiting for the write lock, committed together
        self._group = GroupCommit(self._write_lock, self._commit, _rerun_alone)
        #: cleared while a restarting checkpoint waits for the write lock: writers wait for it
        self._writers_may_go = threading.Event()
        self._writers_may_go.set()
        # With synchronous=FULL every commit waits for the disk: never do that on a loop.
        self._inline_writes = self.synchronous == "NORMAL"
        self._commits = 0
        self._last_checkpoint = time.monotonic()
        self._checkpoint_queued = False
        #: the connection of the checkpoint threads (one at a time), opened on first use
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_thread: threading.Thread | None = None
        self._page_size = 4096
        self._wal = self.path.with_name(self.path.name + "-wal")
        self._wal_size = 0  # at the last look
        self._closed = False
        self._readers = threading.local()
        self._reader_connections: set[sqlite3.Connection] = set()
        self._reader_lock = threading.Lock()
        self._active_leases = 0
        self._lease_lock = threading.Lock()
        #: more statements for the heartbeat transaction (a worker renews its tasks' leases)
        self.heartbeat_hooks: list[Callable[[sqlite3.Connection, float], None]] = []
        self._background = BackgroundThread(
            name=f"miniengine-db:{self.path.name}",
            on_idle=self._heartbeat,
            idle_interval=max(self.lease_timeout / 4, 0.05),
        )
        # The concerns of the backend interface (miniengine.storage.interfaces), bound to this
        # store; everything above storage reaches the database through them.
        self.provenance = SqliteProvenance(self)
        self.checkpoints = SqliteCheckpoints(self)
        self.broker = SqliteBroker(self)
        self.control = SqliteControl(self)
        self.caching = SqliteCaching(self)
        # events, queries, computers, calcjobs, groups and traversal are built on first use
        # (below): a script that only runs process functions never imports their records
        self._query_builder: SqliteQueryBuilder | None = None  # built on first use
        self._archives: SqliteArchives | None = None  # built on first use
        self._async_reads: SqliteAsyncReads | None = None  # opened on first use (aiosqlite)

    # lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background thread and close every connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._async_reads is not None:
            self._async_reads.close_all()
        self._background.close()
        if self._checkpoint_thread is not None and self._checkpoint_thread is not (
            threading.current_thread()
        ):
            self._checkpoint_thread.join()
        if self._checkpointer is not None:
            self._checkpointer.close()
        # Readers first, then the writer: the last connection to close copies the WAL back
        # into the database file, so a plain `cp` of the file afterwards has everything.
        with self._reader_lock:
            for connection in self._reader_connections:
                connection.close()
            self._reader_connections.clear()
        with self._write_lock:
            try:
                if not self.readonly:
                    self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # another process is using the file: its last close checkpoints instead
            self._writer.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # Built on first use, then kept in the instance's ``__dict__`` (no cost per access after it).

    @cached_property
    def events(self) -> SqliteEvents:
        """State changes for watchers (event streams), and the test gates."""
        from miniengine.storage.sqlite.events import SqliteEvents

        return SqliteEvents(self)

    @cached_property
    def queries(self) -> SqliteQueries:
        """Read-only listings and views (process lists, node details, logs, counts)."""
        from miniengine.storage.sqlite.queries import SqliteQueries

        return SqliteQueries(self)

    @cached_property
    def computers(self) -> SqliteComputers:
        """Computers and codes."""
        from miniengine.storage.sqlite.computers import SqliteComputers

        return SqliteComputers(self)

    @cached_property
    def calcjobs(self) -> SqliteCalcJobs:
        """The rows of CalcJobs: their stage, job and retrieved files."""
        from miniengine.storage.sqlite.calcjobs import SqliteCalcJobs

        return SqliteCalcJobs(self)

    @cached_property
    def groups(self) -> SqliteGroups:
        """Extras, comments and groups of nodes."""
        from miniengine.storage.sqlite.groups import SqliteGroups

        return SqliteGroups(self)

    @cached_property
    def traversal(self) -> SqliteTraversal:
        """Following provenance links, and deleting along them."""
        from miniengine.storage.sqlite.traversal import SqliteTraversal

        return SqliteTraversal(self)

    @property
    def archives(self) -> SqliteArchives:
        """Archive exports and imports (built on first use: the engine itself never makes one)."""
        if self._archives is None:
            from miniengine.storage.sqlite.archive import SqliteArchives

            self._archives = SqliteArchives(self)
        return self._archives

    @property
    def query_builder(self) -> SqliteQueryBuilder:
        """QueryBuilder queries (built on first use: the engine itself never makes one)."""
        if self._query_builder is None:
            from miniengine.storage.sqlite.query_builder import SqliteQueryBuilder

            self._query_builder = SqliteQueryBuilder(self)
        return self._query_builder

    @property
    def async_reads(self) -> SqliteAsyncReads:
        """The awaitable reads (aiosqlite, imported here on first use: ``import miniengine``
        and a script that never awaits a read do not load it)."""
        reads = self._async_reads
        if reads is None:
            from miniengine.storage.sqlite.async_reads import SqliteAsyncReads

            with self._reader_lock:
                reads = self._async_reads
                if reads is None:
                    reads = self._async_reads = SqliteAsyncReads(self)
        return reads

    @property
    def location(self) -> str:
        """The database file, for messages (and as the key of per-database caches)."""
        return self._location

    def __repr__(self) -> str:
        return f"<Store {str(self.path)!r} owner={self.owner!r}>"

    # writes ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")

    def check_writable(self) -> None:
        """Raise :class:`ReadOnlyDatabaseError` if this user cannot write the database."""
        if self.readonly:
            folder = self.path.parent
            reason = (
                "the file is not writable"
                if not os.access(self.path, os.W_OK)
                else f"its folder {folder} is not writable (sqlite keeps its write-ahead log there)"
            )
            raise ReadOnlyDatabaseError(
                f"{self.path} is read-only for this user ({reason}): it can be read, but "
                "nothing can be stored in it"
            )

    def write_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` as one transaction in this (non-loop) thread."""
        result, interrupted = self.write_sync_deferring_interrupt(fn, *args)
        if interrupted is not None:
            raise interrupted
        return result

    def write_sync_deferring_interrupt(
        self, fn: Callable[..., T], *args: Any
    ) -> tuple[T, KeyboardInterrupt | None]:
        """:meth:`write_sync`, but a Ctrl-C that lands just after the commit is returned with
        the result instead of raised, so the caller learns what was committed."""
        self._check_open()
        self.check_writable()
        if not self._writers_may_go.is_set():
            self._writers_may_go.wait()  # a restarting checkpoint wants the lock first
        if threading.current_thread() is threading.main_thread():
            # The one thread a Ctrl-C lands in runs its own transaction and no other's, so
            # that an interrupt never leaves its write queued for another thread to commit.
            with self._write_lock:
                return self._transaction(fn, args, retry=True)
        return self._group.write(fn, args), None

    def _commit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """Run ``fn`` as one transaction, retried while the file is locked (the caller
        holds the write lock, and is not the main thread: no Ctrl-C lands here)."""
        return self._transaction(fn, args, retry=True)[0]

    def write_sync_within(self, busy_seconds: float, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`write_sync`, waiting at most ``busy_seconds`` for another connection's write
        lock (then ``DatabaseLockedError``): for a caller with other duties, such as the
        supervisor, which retries later instead of being stuck for the default patience."""
        self._check_open()
        if not self._writers_may_go.is_set():
            self._writers_may_go.wait()
        with self._write_lock:
            result, interrupted = self._transaction(fn, args, retry=True, busy_seconds=busy_seconds)
        if interrupted is not None:
            raise interrupted
        return result

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` as one transaction and await its result."""
        self._check_open()
        self.check_writable()
        if (
            self._inline_writes
            and self._writers_may_go.is_set()
            and self._write_lock.acquire(blocking=False)
        ):
            try:
                result, _ = self._transaction(fn, args, retry=False)
                return result
            except _Busy:
                pass
            finally:
                self._write_lock.release()
        return await self._background.call(self.write_sync, fn, *args)

    def _transaction(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        *,
        retry: bool,
        busy_seconds: float | None = None,
    ) -> tuple[T, KeyboardInterrupt | None]:
        """Run ``fn`` inside ``BEGIN IMMEDIATE``/``COMMIT`` (the caller holds the write lock).

        While the file is locked by another process the whole transaction is retried with
        backoff (``retry``) for ``busy_seconds`` (default :data:`BUSY_RETRY_SECONDS`), or
        ``_Busy`` is raised at once (not ``retry``).
        """
        connection = self._writer
        patience = BUSY_RETRY_SECONDS if busy_seconds is None else busy_seconds
        deadline = time.monotonic() + patience
        delay = 0.0005
        while True:
            committed = False
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(connection, *args)
                    connection.execute("COMMIT")
                    committed = True
                except BaseException:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise
                self._after_commit()
                return result, None
            except KeyboardInterrupt as exc:
                if committed:
                    return result, exc
                raise
            except sqlite3.OperationalError as exc:
                if not schema.is_busy(exc):
                    raise schema.store_error(self.path, "write failed", exc) from exc
                if not retry:
                    raise _Busy from exc
                if time.monotonic() > deadline:
                    raise DatabaseLockedError(
                        f"{self.path}: the database stayed locked by another connection for "
                        f"{patience:g} s"
                    ) from exc
                # Short, jittered sleeps: another process's transaction lasts ~0.1 ms, so a long
                # backoff would only idle this writer after the lock is free again.
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, MAX_BUSY_SLEEP)
            except sqlite3.Error as exc:
                raise schema.store_error(self.path, "write failed", exc) from exc

    def _after_commit(self) -> None:
        self._commits += 1
        if self._checkpoint_queued:
            return  # one at a time: a thread kept from running must not pile them up
        if self._commits >= CHECKPOINT_EVERY or (
            self._commits % WAL_LOOK_EVERY == 0 and self._wal_grew()
        ):
            quiet = False
        elif time.monotonic() - self._last_checkpoint > CHECKPOINT_SECONDS:
            quiet = True
        else:
            return
        self._commits = 0
        self._last_checkpoint = time.monotonic()
        self._checkpoint_queued = True
        # A thread of its own, not the background thread: under load that one has writes queued
        # (each waiting for the file's lock), and the WAL grows while a checkpoint waits there.
        thread = threading.Thread(
            target=self._checkpoint_once, args=(quiet,), name="miniengine-checkpoint", daemon=True
        )
        self._checkpoint_thread = thread
        thread.start()

    def _wal_grew(self) -> bool:
        """Whether the WAL file is above :data:`WAL_RESTART_ABOVE` and larger than at the last
        look (a WAL that starts over keeps its size, so only growth means new content)."""
        try:
            size = os.stat(self._wal).st_size
        except OSError:
            return False
        grew = size > WAL_RESTART_ABOVE and size > self._wal_size
        self._wal_size = size
        return grew

    def _checkpoint_once(self, quiet: bool) -> None:
        """:meth:`_checkpoint` in its thread; the next one may be queued only once it ended.

        Two at once would share the one checkpointer connection from two threads (one waiting
        in sqlite for the file while the other needs the same connection), and a checkpoint
        kept waiting under load would otherwise be joined by another at every later commit.
        """
        try:
            self._checkpoint(quiet)
        finally:
            self._checkpoint_queued = False

    def _checkpoint(self, quiet: bool = False) -> None:
        """Copy the WAL back into the database file, and keep the WAL file small.

        A ``PASSIVE`` checkpoint copies what it can without blocking anyone, but the WAL only
        starts over when a writer finds it wholly copied and no reader in it, which a busy
        daemon (several writers, readers always somewhere) almost never offers: the file grew
        to gigabytes.  So a WAL above :data:`WAL_RESTART_ABOVE` is then checkpointed with
        ``RESTART``, which waits briefly for the readers, so that the next commit starts the
        WAL over (and cuts the file to :data:`WAL_SIZE_LIMIT`); if they stay, the next
        checkpoint tries again.  It holds this store's write lock meanwhile: this store's own
        writes, back to back under load, would otherwise keep it from ever taking the file's.
        A ``quiet`` store (few commits lately) empties the file (``TRUNCATE``): under load that
        would only make the file grow again.
        """
        if self._closed:
            return
        connection = self._checkpointer
        try:
            if connection is None:
                connection = self._checkpointer = schema.connect(self.path, busy_timeout_ms=0)
                self._page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
            _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames * self._page_size > WAL_RESTART_ABOVE or (
                quiet and os.path.getsize(self._wal) > 0
            ):
                connection.execute(f"PRAGMA busy_timeout = {WAL_RESTART_WAIT_MS}")
                mode = "TRUNCATE" if quiet else "RESTART"
                # this store's writers (a loop, step threads waiting for the file's lock) would
                # otherwise keep the lock from this thread for hundreds of milliseconds
                self._writers_may_go.clear()
                try:
                    with self._write_lock:
                        connection.execute(f"PRAGMA wal_checkpoint({mode})")
                finally:
                    self._writers_may_go.set()
                    connection.execute("PRAGMA busy_timeout = 0")
        except (MiniengineError, sqlite3.Error, OSError):
            pass  # readers or writers were busy: the next checkpoint catches up

    # reads -----------------------------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (autocommit: every query sees the latest commit)."""
        reader: _ThreadReader | None = getattr(self._readers, "reader", None)
        if reader is None:
            self._check_open()
            reader = _ThreadReader(schema.connect(self.path, readonly=True))
            with self._reader_lock:
                self._reader_connections.add(reader.connection)
            # Threads come and go (worker threads expire when idle): close a thread's connection
            # when the thread ends, or a long-running process would leak one per thread.
            weakref.finalize(
                reader,
                _close_reader,
                self._reader_lock,
                self._reader_connections,
                reader.connection,
            )
            self._readers.reader = reader
        return reader.connection

    def data_version(self) -> int:
        """``PRAGMA data_version`` of this thread's reader: it changes whenever another
        connection commits, so a waiter queries only after a change (a few microseconds).
        On a closed store: :class:`StoreError` naming the file, like every other call."""
        try:
            return int(self.reader().execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.ProgrammingError as exc:  # this thread's reader was closed with the store
            if self._closed:
                raise StoreError(f"{self.path}: the store is closed") from exc
            raise

    def commit_marker(self) -> int:
        """:meth:`data_version`: the backend interface's "has anything committed" counter."""
        return self.data_version()

    def wait_for_commit(
        self, marker: int, timeout: float, *, quiet_since: float | None = None
    ) -> int:
        """Sleep in short steps until :meth:`data_version` differs from ``marker`` or
        ``timeout`` passed; return the current value.  sqlite has no notification between
        processes, and reading the counter costs a few microseconds, so polling every
        :attr:`commit_poll_interval` is both cheap and prompt.

        ``quiet_since`` (a ``time.monotonic()`` value: the last commit the caller saw) lets
        the interval grow with the quiet, to :data:`IDLE_POLL_INTERVAL` after a second: for
        a waiter that can answer a commit 50 ms late, and would rather not wake 200 times a
        second while nothing happens."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.data_version()
            if current != marker:
                return current
            now = time.monotonic()
            if deadline <= now:
                return current
            time.sleep(min(self._poll_interval(now, quiet_since), deadline - now))

    async def await_commit(
        self, marker: int, timeout: float, *, quiet_since: float | None = None
    ) -> int:
        """:meth:`wait_for_commit` for a coroutine (``anyio.sleep`` between looks)."""
        import anyio  # the store is also used without an event loop; anyio is loaded anyway

        deadline = time.monotonic() + timeout
        while True:
            current = self.data_version()
            if current != marker:
                return current
            now = time.monotonic()
            if deadline <= now:
                return current
            await anyio.sleep(min(self._poll_interval(now, quiet_since), deadline - now))

    def _poll_interval(self, now: float, quiet_since: float | None) -> float:
        """The commit poll's next sleep: :attr:`commit_poll_interval`, or for a waiter that
        passed ``quiet_since`` a twentieth of the quiet so far, within that and
        :data:`IDLE_POLL_INTERVAL`."""
        if quiet_since is None:
            return self.commit_poll_interval
        grown = (now - quiet_since) / 20
        return max(self.commit_poll_interval, min(grown, IDLE_POLL_INTERVAL))

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(read_connection, *args)`` in the calling thread."""
        try:
            return fn(self.reader(), *args)
        except sqlite3.Error as exc:
            raise schema.store_error(self.path, "read failed", exc) from exc

    # leases ----------------------------------------------------------------------------------

    def lease_expiry(self) -> float:
        return time.time() + self.lease_timeout

    def leases_taken(self, count: int = 1) -> None:
        with self._lease_lock:
            self._active_leases += count
        self._background.start()

    def leases_released(self, count: int = 1) -> None:
        with self._lease_lock:
            self._active_leases -= count

    def start_heartbeat(self) -> None:
        """Start renewing leases now (a worker does, before it holds any process)."""
        self._background.start()

    def _heartbeat(self) -> None:
        """Extend the leases of every live process this store owns (background thread)."""
        if self._closed or (self._active_leases <= 0 and not self.heartbeat_hooks):
            return
        self.write_sync(_renew_leases, self.owner, self.lease_expiry(), self.heartbeat_hooks)


class _ThreadReader:
    """Holds one thread's read connection; dropped with the thread's locals when it ends."""

    __slots__ = ("__weakref__", "connection")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection


def _close_reader(
    lock: threading.Lock, connections: set[sqlite3.Connection], connection: sqlite3.Connection
) -> None:
    with lock:
        if connection not in connections:
            return  # already closed with the store
        connections.discard(connection)
    connection.close()


def _renew_leases(
    connection: sqlite3.Connection,
    owner: str,
    expires: float,
    hooks: list[Callable[[sqlite3.Connection, float], None]],
) -> None:
    connection.execute(
        "UPDATE nodes SET lease_expires = ? WHERE process_state IN (?, ?, ?) AND owner = ?",
        (expires, *_ACTIVE_STATES, owner),
    )
    for hook in hooks:
        hook(connection, expires)


def _rerun_alone(exc: BaseException) -> bool:
    """Whether a group that failed with ``exc`` runs again write by write: yes, unless the
    file stayed locked by another program (each would wait as long again) or an interrupt."""
    return isinstance(exc, Exception) and not isinstance(exc, DatabaseLockedError)


# the stores shared by launches in this OS process ---------------------------------------------

_shared: dict[Path, Store] = {}
_shared_lock = threading.Lock()


def shared_store(path: Path) -> Store:
    """The store for ``path`` shared by every launch in this process, opened on first use."""
    store = _shared.get(path)
    if store is not None and not store.closed:
        return store
    with _shared_lock:
        store = _shared.get(path)
        if store is None or store.closed:
            store = _shared[path] = Store(path)
    return store


def close_all_stores() -> None:
    """Close every shared store (run at interpreter exit, and by the test fixtures)."""
    with _shared_lock:
        stores = list(_shared.values())
        _shared.clear()
    for store in stores:
        store.close()


atexit.register(close_all_stores)


if TYPE_CHECKING:  # mypy checks here that the sqlite store implements the backend interface

    def _is_a_backend(store: Store) -> Backend:
        return store
