"""The PostgreSQL store: one locked writer connection, a pool of readers, a commit listener,
leases and heartbeat -- the same contract as the sqlite :class:`~miniengine.storage.store.Store`.

Every write is one callable run as one transaction (``BEGIN`` ... ``COMMIT``) on the writer
connection while holding the store's write lock, so the statements of different threads and
tasks never interleave on it.  Writes that queue up behind the lock commit together (group
commit, see :mod:`miniengine.storage.group_commit`): a worker's processes end in bursts, and
one transaction for a burst saves each write its ``BEGIN`` and ``COMMIT`` round trips, and
every listening connection of every host a notification.  A transaction that PostgreSQL rolls
back as a serialization failure or a deadlock victim runs again whole.  A thread commits its
own transactions (or a group with them); a coroutine hands them to the store's background
thread (see :class:`PostgresTransaction` for why not an async connection).  Reads run in the
calling thread on an autocommit connection of a small pool, so every query sees the latest commit.

The commit signal: every write transaction sends ``NOTIFY`` on one channel in the same round
trip as its ``COMMIT``, and one listening connection per store counts the notifications, so
:meth:`PostgresStore.commit_marker` costs no query and a waiter wakes as soon as any process
commits.

Every process row carries an ``owner`` and a ``lease_epoch`` (the fencing token).  The background
thread renews the leases of this store's owner, independently of user code and of the loop.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import threading
import time
import uuid as uuid_module
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from miniengine.exceptions import DatabaseLockedError, DatabaseUnavailableError, StoreError
from miniengine.storage.background import BackgroundThread
from miniengine.storage.group_commit import GroupCommit
from miniengine.storage.host import current_host
from miniengine.storage.paths import lower_scheme
from miniengine.storage.postgres.broker import PostgresBroker
from miniengine.storage.postgres.caching import PostgresCaching
from miniengine.storage.postgres.calcjobs import PostgresCalcJobs
from miniengine.storage.postgres.checkpoints import PostgresCheckpoints
from miniengine.storage.postgres.clock import SERVER_NOW, lease_seconds
from miniengine.storage.postgres.computers import PostgresComputers
from miniengine.storage.postgres.connection import (
    COMMIT_CHANNEL,
    CONNECT_TIMEOUT,
    connect,
    is_retryable,
    one_line,
    store_error,
    without_password,
)
from miniengine.storage.postgres.control import PostgresControl
from miniengine.storage.postgres.events import PostgresEvents
from miniengine.storage.postgres.groups import PostgresGroups
from miniengine.storage.postgres.provenance import PostgresProvenance
from miniengine.storage.postgres.queries import PostgresQueries
from miniengine.storage.postgres.traversal import PostgresTraversal
from miniengine.storage.store import DEFAULT_LEASE_TIMEOUT

if TYPE_CHECKING:
    import psycopg

    from miniengine.storage.interfaces import Backend
    from miniengine.storage.postgres.archive import PostgresArchives
    from miniengine.storage.postgres.async_reads import PostgresAsyncReads
    from miniengine.storage.postgres.query_builder import PostgresQueryBuilder


__all__ = ["PostgresStore", "reconnect_pause"]

T = TypeVar("T")

#: How long a write keeps running again after serialization failures and deadlocks, and how
#: long writes and reads wait for a server that stopped answering (counted from the first
#: connection it refused, so that what queues up behind a long outage fails at once).
RETRY_SECONDS = 30.0

#: The longest sleep between two attempts of a transaction that was rolled back.
MAX_RETRY_SLEEP = 0.05

#: The longest sleep between two attempts to connect again to a server that stopped answering
#: (a restart refuses connections for a few seconds; a write or a read waits for it for
#: :data:`RETRY_SECONDS`, then fails with ``DatabaseUnavailableError``).
MAX_RECONNECT_SLEEP = 0.25

#: Sent with the ``COMMIT`` of every write transaction, in the same round trip.
_COMMIT = f"NOTIFY {COMMIT_CHANNEL}; COMMIT".encode()

#: A write transaction's start, with its transaction id (in the same round trip): if the
#: connection is lost at ``COMMIT``, the server is asked whether that transaction committed.
_BEGIN = b"BEGIN ISOLATION LEVEL READ COMMITTED; SELECT txid_current()"

#: How long to ask the server about a transaction whose connection was lost at ``COMMIT`` while
#: it says the transaction is still in progress (its session not yet ended).
COMMIT_STATUS_SECONDS = 10.0

#: Reads that run at once on their own connections; a further one waits for one to end.
MAX_READERS = 16

#: Read connections kept open between reads (a burst of reads opens more, then closes them).
MAX_IDLE_READERS = 4

#: How long the listener waits before connecting again after losing its connection.
LISTEN_RETRY_SECONDS = 0.5

#: An outage is over if no connection was refused for this long (while one lasts, the waiting
#: writes and reads try at least this often: a refused attempt takes at most CONNECT_TIMEOUT).
OUTAGE_GAP = CONNECT_TIMEOUT + 1.0

_ACTIVE_STATES = ("created", "running", "waiting")


class PostgresStore:
    """A miniengine database on a PostgreSQL server, opened by this OS process."""

    def __init__(
        self,
        url: str,
        *,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
        owner: str | None = None,
    ) -> None:
        import psycopg  # only a PostgreSQL store loads the driver

        self._psycopg = psycopg
        self.url = url = lower_scheme(url)
        self.lease_timeout = float(lease_timeout)
        self.owner = owner or f"{current_host()}:{os.getpid()}:{uuid_module.uuid4().hex[:8]}"
        #: PostgreSQL says per statement whether a role may write: no up-front check here
        self.readonly = False
        self._location = without_password(url)
        self._closed = False
        #: set when the store closes: wakes the writes and reads waiting for the server
        self._closing = threading.Event()
        #: since when (monotonic) the server refuses new connections; None while it answers
        self._unreachable_since: float | None = None
        #: when it last refused one (see OUTAGE_GAP)
        self._last_refused = 0.0
        self._writer = self._open_writer()
        self._write_lock = threading.Lock()
        #: the writes of threads waiting for the write lock, committed together
        self._group = GroupCommit(self._write_lock, self._commit, self._rerun_alone)
        #: read connections not in use now (autocommit), at most MAX_IDLE_READERS of them
        self._idle_readers: list[psycopg.Connection[Any]] = []
        self._reader_lock = threading.Lock()
        #: a read waits here while MAX_READERS other reads run
        self._reader_slots = threading.BoundedSemaphore(MAX_READERS)
        self._active_leases = 0
        self._lease_lock = threading.Lock()
        #: more statements for the heartbeat transaction (a worker renews its tasks' leases)
        self.heartbeat_hooks: list[Callable[[psycopg.Connection[Any], float], None]] = []
        # the commit signal: a counter bumped by the listener thread, and who waits for it
        self._marker = 0
        self._marker_changed = threading.Condition()
        self._async_waiters: set[asyncio.Future[None]] = set()
        self._wake_read, self._wake_write = os.pipe()
        self._listening = threading.Event()
        self._listener = threading.Thread(
            target=self._listen, name=f"miniengine-listen:{self._location}", daemon=True
        )
        self._listener.start()
        self._background = BackgroundThread(
            name=f"miniengine-db:{self._location}",
            on_idle=self._heartbeat,
            idle_interval=max(self.lease_timeout / 4, 0.05),
        )
        # the listener is LISTENing before the store is used, so no commit goes unnoticed
        self._listening.wait(timeout=30)
        # The concerns of the backend interface (miniengine.storage.interfaces).
        self.provenance = PostgresProvenance(self)
        self.checkpoints = PostgresCheckpoints(self)
        self.broker = PostgresBroker(self)
        self.control = PostgresControl(self)
        self.events = PostgresEvents(self)
        self.queries = PostgresQueries(self)
        self.computers = PostgresComputers(self)
        self.calcjobs = PostgresCalcJobs(self)
        self.groups = PostgresGroups(self)
        self.traversal = PostgresTraversal(self)
        self.caching = PostgresCaching(self)
        self._query_builder: PostgresQueryBuilder | None = None  # built on first use
        self._archives: PostgresArchives | None = None  # built on first use
        self._async_reads: PostgresAsyncReads | None = None  # opened on first use
        #: how long a read in a thread waits for a server that went away: a caller with other
        #: duties (the daemon's supervisor, which reads again a moment later) waits less
        self.read_patience = RETRY_SECONDS

    # lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background and listener threads and close every connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        if self._async_reads is not None:
            self._async_reads.close_all()
        self._background.close()
        os.write(self._wake_write, b"x")
        if self._listener is not threading.current_thread():
            self._listener.join()
        os.close(self._wake_read)
        os.close(self._wake_write)
        self._drop_idle_readers()  # one in use now is closed when its read gives it back
        with self._write_lock:
            self._writer.close()
        with self._marker_changed:  # waiters return at once
            self._marker += 1
            self._marker_changed.notify_all()
        self._wake_async_waiters()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def archives(self) -> PostgresArchives:
        """Archive exports and imports (built on first use: the engine itself never makes one)."""
        if self._archives is None:
            from miniengine.storage.postgres.archive import PostgresArchives

            self._archives = PostgresArchives(self)
        return self._archives

    @property
    def query_builder(self) -> PostgresQueryBuilder:
        """QueryBuilder queries (built on first use: the engine itself never makes one)."""
        if self._query_builder is None:
            from miniengine.storage.postgres.query_builder import PostgresQueryBuilder

            self._query_builder = PostgresQueryBuilder(self)
        return self._query_builder

    @property
    def async_reads(self) -> PostgresAsyncReads:
        """The awaitable reads: psycopg async connections, one per event loop."""
        reads = self._async_reads
        if reads is None:
            from miniengine.storage.postgres.async_reads import PostgresAsyncReads

            with self._reader_lock:
                reads = self._async_reads
                if reads is None:
                    reads = self._async_reads = PostgresAsyncReads(self)
        return reads

    @property
    def location(self) -> str:
        """The URL of the database without its password, for messages."""
        return self._location

    def __repr__(self) -> str:
        return f"<PostgresStore {self._location!r} owner={self.owner!r}>"

    # writes ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self._location}: the store is closed")

    def check_writable(self) -> None:
        """Nothing to check before a write: a role without the right is told by the server."""

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
        if threading.current_thread() is threading.main_thread():
            # The one thread a Ctrl-C lands in runs its own transaction and no other's, so
            # that an interrupt never leaves its write queued for another thread to commit.
            with self._write_lock:
                return self._transaction(fn, args)
        return self._group.write(fn, args), None

    def _commit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """Run ``fn`` as one transaction (the caller holds the write lock, and is not the main
        thread: no Ctrl-C lands here)."""
        return self._transaction(fn, args)[0]

    def _rerun_alone(self, exc: BaseException) -> bool:
        """Whether a group that failed with ``exc`` runs again write by write: yes, unless
        rows stayed locked or the server stayed away (each write would wait as long again), an
        interrupt, or the connection was lost and the server could not say whether the
        ``COMMIT`` reached it (running the writes again could store them twice;
        :meth:`_transaction` ran the group again when nothing of it was committed)."""
        return (
            isinstance(exc, Exception)
            and not isinstance(
                exc, DatabaseLockedError | DatabaseUnavailableError | _CommitUnknownError
            )
            and not self._writer.broken
            and not self._closed
        )

    def write_sync_within(self, busy_seconds: float, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`write_sync`, waiting at most ``busy_seconds`` for locks held by other
        connections (then ``DatabaseLockedError``): for a caller with other duties, such as the
        supervisor, which retries later instead of being stuck."""
        self._check_open()
        with self._write_lock:
            result, interrupted = self._transaction(fn, args, busy_seconds=busy_seconds)
        if interrupted is not None:
            raise interrupted
        return result

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` as one transaction on the background thread."""
        self._check_open()
        return await self._background.call(self.write_sync, fn, *args)

    def _transaction(
        self, fn: Callable[..., T], args: tuple[Any, ...], *, busy_seconds: float | None = None
    ) -> tuple[T, KeyboardInterrupt | None]:
        """Run ``fn`` inside ``BEGIN``/``COMMIT`` (the caller holds the write lock), again
        whole after a serialization failure or a deadlock, for :data:`RETRY_SECONDS`.

        Again whole, on a new connection, if the connection was lost before ``COMMIT`` was sent:
        the server rolled the transaction back (it ends a writer session that waited inside a
        transaction for half a lease, e.g. of a worker stopped by SIGSTOP; the writes of a
        process are fenced by its lease, so a worker that lost it meanwhile learns so from the
        run again).  If it was lost at ``COMMIT``, the server is asked on a new connection
        whether the transaction committed: if so, its result is returned; if not, it runs again
        whole; if the server cannot tell (:data:`COMMIT_STATUS_SECONDS`), or does not answer
        for :data:`RETRY_SECONDS`, it fails.

        Not in psycopg's pipeline mode, although it would send ``BEGIN`` with the first
        statement: measured here, a calcfunction took 1.11-1.66 ms in a pipeline against
        0.92-1.17 ms without (entering and leaving one costs more than the round trips it
        saves), and ``rowcount`` stays -1 in a pipeline until an answer is read."""
        error = self._psycopg.Error
        patience = RETRY_SECONDS if busy_seconds is None else busy_seconds
        deadline = time.monotonic() + patience
        delay = 0.001
        while True:
            try:
                connection = self._writer_connection()
            except StoreError as exc:
                # the server went away (a restart, a failover): wait for it to answer again
                delay = self._wait_to_reconnect(exc, deadline, patience, delay)
                continue
            committed = False
            commit_sent = False
            xid: int | None = None
            try:
                # the row functions rely on READ COMMITTED (each statement sees the commits it
                # waited for), whatever the server's default_transaction_isolation says
                began = connection.execute(_BEGIN)
                began.nextset()
                xid = began.fetchone()[0]  # type: ignore[index]
                if busy_seconds is not None:
                    milliseconds = max(int(busy_seconds * 1000), 1)
                    connection.execute(f"SET LOCAL lock_timeout = {milliseconds}".encode())
                try:
                    result = fn(connection, *args)
                    commit_sent = True
                    connection.execute(_COMMIT)
                    committed = True
                except BaseException:
                    _rollback(connection)
                    raise
                self.server_answered()
                return result, None
            except KeyboardInterrupt as exc:
                if committed:
                    return result, exc
                raise
            except error as exc:
                # a lock not available: ours (``busy_seconds``) ran out, or the server's own
                # lock_timeout (set for the database or the role), which is waited out below for
                # the write's patience, as a lock is on sqlite
                locked = getattr(exc, "sqlstate", None) == "55P03"
                expired = time.monotonic() > deadline
                if locked and (busy_seconds is not None or expired):
                    raise DatabaseLockedError(
                        f"{self._location}: rows stayed locked by another connection for "
                        f"{patience:g} s"
                    ) from exc
                if connection.broken:
                    # the server restarted, or ended the session (idle, or stalled inside
                    # this transaction), or the network failed: connect again and learn
                    # whether the transaction committed; if not, run it whole again
                    if commit_sent and xid is not None:
                        try:
                            # a write that ran long still waits a little for a restarting server
                            status = self._commit_status(
                                xid, max(deadline, time.monotonic() + COMMIT_STATUS_SECONDS)
                            )
                        except StoreError as closed:  # the store closed while it asked
                            raise _CommitUnknownError(
                                f"{self._location}: write failed, and whether it was committed "
                                f"is unknown ({closed})"
                            ) from exc
                        if status == "committed":
                            return result, None
                        if status == "unreachable":
                            raise _UnavailableAtCommitError(
                                f"{self._location}: the connection was lost at COMMIT and the "
                                f"server could not be reached for {patience:g} s: whether the "
                                "write was committed is unknown"
                            ) from exc
                        if status != "aborted":
                            raise _CommitUnknownError(
                                f"{self._location}: write failed, and whether it was committed "
                                f"is unknown: {one_line(exc)}"
                            ) from exc
                        # rolled back, by a server that just answered: run it again now
                        # (within the time the answer took, past the write's own deadline)
                        if time.monotonic() < deadline + COMMIT_STATUS_SECONDS:
                            continue
                    # lost, not refused: the next attempt connects again before any outage
                    # counts against it
                    delay = self._wait_to_reconnect(exc, deadline, patience, delay, refused=False)
                    continue
                if not (locked or is_retryable(exc)) or expired:
                    raise store_error(self._location, "write failed", exc) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, MAX_RETRY_SLEEP)

    def _commit_status(self, xid: int, unreachable_until: float) -> str | None:
        """Whether transaction ``xid``, whose connection was lost at ``COMMIT``, committed
        (``committed``, ``aborted``), asked on a new writer connection.  ``unreachable`` if the
        server did not answer until ``unreachable_until`` (a restart is waited for as long as
        any write waits); ``None`` if it answered but could not tell (the transaction still in
        progress, its session not ended) for :data:`COMMIT_STATUS_SECONDS`."""
        undecided_until = time.monotonic() + COMMIT_STATUS_SECONDS
        delay = 0.001
        while True:
            self._check_open()
            try:
                row = self._writer_connection().execute("SELECT txid_status(%s)", (xid,)).fetchone()
            except StoreError:  # no connection: the server is away
                if time.monotonic() > unreachable_until:
                    return "unreachable"
                self._pause(delay)
                delay = min(delay * 2, MAX_RECONNECT_SLEEP)
                continue
            except self._psycopg.Error:
                if not self._writer.broken:
                    return None  # it answered, with an error: it cannot tell
                if time.monotonic() > unreachable_until:
                    return "unreachable"
                self._pause(delay)
                delay = min(delay * 2, MAX_RECONNECT_SLEEP)
                continue
            status = None if row is None else row[0]
            if status in ("committed", "aborted"):
                return str(status)
            if time.monotonic() > undecided_until:
                return None
            self._pause(delay)
            delay = min(delay * 2, MAX_RETRY_SLEEP)

    def _open_writer(self) -> psycopg.Connection[Any]:
        """The first writer connection, to a database whose schema it checked (and created or
        migrated first, if needed), with :meth:`_limit_stalls`.

        A server that refuses the first connection fails the open at once: a command started
        while it is down says so.  A session lost once the server answered (ended by an
        administrator, or by a restart beginning) is opened again, for :data:`RETRY_SECONDS`,
        as a write would be."""
        from miniengine.storage.postgres import schema

        deadline: float | None = None
        delay = 0.0
        while True:
            try:
                connection = self._connect()
            except StoreError as exc:
                if deadline is None:
                    raise
                delay = self._wait_to_reconnect(exc, deadline, RETRY_SECONDS, delay)
                continue
            try:
                schema.ensure_schema(connection, self._location)
                self._limit_stalls(connection)
                return connection
            except (StoreError, self._psycopg.Error) as exc:
                lost = connection.broken
                connection.close()
                if not lost:
                    if isinstance(exc, StoreError):
                        raise
                    raise store_error(self._location, "cannot prepare the database", exc) from exc
                if deadline is None:
                    deadline = time.monotonic() + RETRY_SECONDS
                delay = self._wait_to_reconnect(exc, deadline, RETRY_SECONDS, delay)
            except BaseException:
                connection.close()
                raise

    def _writer_connection(self) -> psycopg.Connection[Any]:
        """The writer connection, connected again if the last one was lost (not once the store
        is closed: a write that waited for the lock meanwhile fails)."""
        if self._writer.broken or self._writer.closed:
            self._writer.close()
            self._check_open()
            connection = self._connect()
            try:
                self._limit_stalls(connection)
            except BaseException:
                connection.close()
                raise
            self._writer = connection
        return self._writer

    def _limit_stalls(self, connection: psycopg.Connection[Any]) -> None:
        """Have the server end this writer's session if it ever sits inside a transaction,
        waiting for this process, for half a lease (at least a second).

        A host that stops mid-transaction (SIGSTOP, a paused VM, a network partition) keeps
        its row locks while the server waits for it; the other hosts' claims and recoveries
        would wait on those rows without end, and their workers, stuck, would miss their own
        heartbeats.  Ended by the server, the transaction rolls back whole and the locks are
        free in time for the lease to run out; the stopped host, when it comes back, finds
        its connection gone and its processes taken over.  A transaction of the engine never
        waits for its client that long (bulk imports turn the limit off for theirs)."""
        milliseconds = max(int(self.lease_timeout * 500), 1000)
        try:
            connection.execute(f"SET idle_in_transaction_session_timeout = {milliseconds}".encode())
        except self._psycopg.Error as exc:
            raise store_error(self._location, "cannot configure the connection", exc) from exc

    # reads -----------------------------------------------------------------------------------

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(read_connection, *args)`` in the calling thread, on an autocommit connection
        of the store's pool (every query sees the latest commit); again on a new connection if
        the server had dropped the one taken, waiting for a server that went away (a restart)
        for :attr:`read_patience` (:data:`RETRY_SECONDS`).

        A pool rather than a connection per thread as on sqlite: a worker runs a step thread
        per slot (hundreds), and a server connection costs a process and memory there.
        """
        error = self._psycopg.Error
        self._check_open()
        patience = self.read_patience
        deadline = time.monotonic() + patience
        delay = 0.001
        tries = 0
        self._reader_slots.acquire()
        try:
            while True:
                try:
                    connection = self._take_reader()
                except StoreError as exc:
                    self._check_open()
                    delay = self._wait_to_reconnect(exc, deadline, patience, delay)
                    continue
                try:
                    found = fn(connection, *args)
                    self.server_answered()
                    return found
                except error as exc:
                    if not connection.broken:
                        raise store_error(self._location, "read failed", exc) from exc
                    # the server dropped it (idle, restarted): its idle siblings are gone too
                    self._drop_idle_readers()
                    self._check_open()
                    # the first time at once (one dropped connection is no outage)
                    if tries:
                        delay = self._wait_to_reconnect(
                            exc, deadline, patience, delay, refused=False
                        )
                    tries += 1
                finally:
                    self._give_back(connection)
        finally:
            self._reader_slots.release()

    def _drop_idle_readers(self) -> None:
        """Close the kept read connections (the store closes, or one was found dropped by the
        server: a restart drops them all, and each would cost a failed query to find out)."""
        with self._reader_lock:
            idle, self._idle_readers = self._idle_readers, []
        for connection in idle:
            connection.close()

    def _take_reader(self) -> psycopg.Connection[Any]:
        with self._reader_lock:
            if self._idle_readers:
                return self._idle_readers.pop()
        return self._connect()

    # a server that went away -----------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection (writer or reader), noting whether the server refused it."""
        try:
            connection = connect(self.url)
        except StoreError:
            self.server_refused()
            raise
        self.server_answered()
        return connection

    def server_refused(self) -> None:
        """A new connection was refused: the outage starts now, unless one is going on (its
        last refusal within :data:`OUTAGE_GAP`; an older one ended unnoticed, nobody having
        connected since the server came back)."""
        now = time.monotonic()
        if self._unreachable_since is None or now - self._last_refused > OUTAGE_GAP:
            self._unreachable_since = now
        self._last_refused = now

    def server_answered(self) -> None:
        """A connection was made, or a transaction or a read succeeded: no outage."""
        self._unreachable_since = None

    def outage_deadline(self, deadline: float, patience: float) -> float:
        """``deadline``, or sooner once the server has refused connections for ``patience``:
        the writes and reads that queued up behind a long outage fail at once instead of
        each waiting as long again."""
        since = self._unreachable_since
        return deadline if since is None else min(deadline, since + patience)

    def _wait_to_reconnect(
        self,
        exc: Exception,
        deadline: float,
        patience: float,
        delay: float,
        *,
        refused: bool = True,
    ) -> float:
        """Sleep as :func:`reconnect_pause` says (or raise), woken by :meth:`close`; the next
        sleep.  The outage's deadline counts only for a connection that was ``refused``; one
        that was lost gets another attempt first."""
        if refused:
            deadline = self.outage_deadline(deadline, patience)
        now, following = reconnect_pause(self._location, exc, deadline, patience, delay)
        self._pause(now)
        return following

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the store closes meanwhile (then ``StoreError``)."""
        self._closing.wait(seconds)
        self._check_open()

    def _give_back(self, connection: psycopg.Connection[Any]) -> None:
        """Keep ``connection`` for the next read, unless it is lost, the store closed or
        enough are kept already."""
        if not connection.broken and not self._closed:
            with self._reader_lock:
                if len(self._idle_readers) < MAX_IDLE_READERS and not self._closed:
                    self._idle_readers.append(connection)
                    return
        connection.close()

    # something committed ---------------------------------------------------------------------

    def commit_marker(self) -> int:
        """How many commit notifications the listener has seen (no query runs)."""
        self._check_open()
        return self._marker

    def wait_for_commit(
        self, marker: int, timeout: float, *, quiet_since: float | None = None
    ) -> int:
        """Block until the marker differs from ``marker`` or ``timeout`` passed (the listener
        wakes this thread as soon as a notification arrives, so ``quiet_since`` changes
        nothing); return the current marker."""
        self._check_open()  # (closing wakes the threads waiting already)
        with self._marker_changed:
            self._marker_changed.wait_for(lambda: self._marker != marker, timeout)
            return self._marker

    async def await_commit(
        self, marker: int, timeout: float, *, quiet_since: float | None = None
    ) -> int:
        """:meth:`wait_for_commit` for a coroutine: the listener resolves a future of its loop."""
        self._check_open()
        if self._marker != marker:
            return self._marker
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._marker_changed:
            self._async_waiters.add(future)
            changed = self._marker != marker
        try:
            if not changed:
                await asyncio.wait((future,), timeout=timeout)
        finally:
            with self._marker_changed:
                self._async_waiters.discard(future)
        return self._marker

    def _listen(self) -> None:
        """The listener thread: LISTEN on the commit channel and count what arrives."""
        error = self._psycopg.Error
        connection: psycopg.Connection[Any] | None = None
        while not self._closed:
            try:
                if connection is None:
                    connection = connect(self.url)
                    connection.execute(f"LISTEN {COMMIT_CHANNEL}".encode())
                    self.server_answered()  # (it tries every half second during an outage)
                    if self._listening.is_set():
                        self._bump()  # commits may have gone unnoticed while reconnecting
                    self._listening.set()
                # what arrived, read from the socket or already buffered by the driver (a
                # notification that came with LISTEN's reply leaves the socket quiet)
                if any(True for _ in connection.notifies(timeout=0)):
                    self._bump()
                if connection.broken or connection.closed:
                    raise OSError("the listening connection was lost")
                ready, _, _ = select.select([connection.fileno(), self._wake_read], [], [])
                if self._wake_read in ready:
                    break
            except (error, StoreError, OSError, ValueError):
                if connection is not None:
                    connection.close()
                    connection = None
                self._listening.set()  # the store works without it; waits then time out
                if select.select([self._wake_read], [], [], LISTEN_RETRY_SECONDS)[0]:
                    break
        if connection is not None:
            connection.close()

    def _bump(self) -> None:
        with self._marker_changed:
            self._marker += 1
            self._marker_changed.notify_all()
        self._wake_async_waiters()

    def _wake_async_waiters(self) -> None:
        with self._marker_changed:
            waiters = list(self._async_waiters)
        for future in waiters:
            try:
                future.get_loop().call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass

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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _rollback(connection: psycopg.Connection[Any]) -> None:
    """Roll back after a failed statement (nothing to do on a connection already lost)."""
    if connection.broken or connection.closed:
        return
    try:
        connection.execute(b"ROLLBACK")
    except Exception:
        pass  # the connection failed meanwhile: the server rolls back what it had


def _renew_leases(
    connection: psycopg.Connection[Any],
    owner: str,
    expires: float,
    hooks: list[Callable[[psycopg.Connection[Any], float], None]],
) -> None:
    connection.execute(
        f"UPDATE nodes SET lease_expires = {SERVER_NOW} + %s "
        "WHERE process_state IN (%s, %s, %s) AND owner = %s",
        (lease_seconds(expires), *_ACTIVE_STATES, owner),
    )
    for hook in hooks:
        hook(connection, expires)


if TYPE_CHECKING:  # mypy checks here that the PostgreSQL store implements the backend interface

    def _is_a_backend(store: PostgresStore) -> Backend:
        return store


class _CommitUnknownError(StoreError):
    """A write whose connection was lost at ``COMMIT``, and the server could not say whether
    it committed: the writes of its group are not run again (they could be stored twice)."""


class _UnavailableAtCommitError(DatabaseUnavailableError, _CommitUnknownError):
    """:class:`_CommitUnknownError` because the server could not be reached to ask."""


def reconnect_pause(
    location: str, exc: Exception, deadline: float, patience: float, delay: float
) -> tuple[float, float]:
    """Before connecting again to a server that stopped answering: the sleep now (``delay``)
    and the next one (doubling up to :data:`MAX_RECONNECT_SLEEP`); past ``deadline``
    ``DatabaseUnavailableError`` is raised instead, from ``exc``."""
    if time.monotonic() > deadline:
        # a failed connect is a StoreError that names the database already: say its cause
        cause = exc.__cause__ if isinstance(exc, StoreError) and exc.__cause__ else exc
        raise DatabaseUnavailableError(
            f"{location}: the server could not be reached for {patience:g} s ({one_line(cause)})"
        ) from exc
    return delay, min(max(delay * 2, 0.001), MAX_RECONNECT_SLEEP)
