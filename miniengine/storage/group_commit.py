"""Group commit: writes that queue up behind a store's write lock commit as one transaction.

Both stores (sqlite and PostgreSQL) run every write as one callable in one transaction on one
writer connection, under a lock.  A daemon worker has dozens of writes waiting for that lock at
once (its step threads finish processes together, a batch of claimed tasks ends its sleeps
together); committing them one by one costs each its ``BEGIN`` and ``COMMIT`` (round trips to a
server, the file's lock on sqlite) and each commit wakes every listener.  So the thread that gets
the lock runs every write waiting for it in one transaction.  If one of them fails, the whole
transaction rolls back and each write runs again in a transaction of its own, so that only the
failing one fails and its caller gets its error while the others commit.  Writes fail rarely (a
lost lease, a refused value); a savepoint around each would cost two statements per write every
time.

Every caller still returns only once its own write is committed, with its own result or error.
A write that finds nothing queued and the lock free runs at once, without the queue's cost.
The store decides who may join a group: the main thread never does (a Ctrl-C lands there, and
must never leave a write of its own queued for another thread to commit).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_GROUP", "GroupCommit", "QueuedWrite"]

#: The most writes one transaction takes (the rest form the next group), so that the locks it
#: takes are given back to other processes within a few milliseconds.
MAX_GROUP = 64


class QueuedWrite:
    """One caller's transaction waiting for the write lock, and then its outcome."""

    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """The writes waiting for one store's write lock, and the committing of them.

    ``commit(fn, args)`` runs ``fn(connection, *args)`` as one transaction, retried as the store
    retries (the caller holds ``lock``), and returns its result.  ``rerun_alone(exc)`` says
    whether a group that failed with ``exc`` committed nothing that a second run could repeat
    and may run again write by write; otherwise every write of the group fails with ``exc`` (the
    store stayed locked by another program or its server away, an interrupt, a connection lost
    at ``COMMIT`` with the outcome unknown).
    """

    def __init__(
        self,
        lock: threading.Lock,
        commit: Callable[[Callable[..., Any], tuple[Any, ...]], Any],
        rerun_alone: Callable[[BaseException], bool],
    ) -> None:
        self._lock = lock
        self._commit = commit
        self._rerun_alone = rerun_alone
        #: the writes of threads waiting for the lock, oldest first
        self.queued: collections.deque[QueuedWrite] = collections.deque()

    def write(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Run ``fn(connection, *args)`` committed, alone or with the writes queued beside it;
        its result, or what it raised (in this thread)."""
        if not self.queued and self._lock.acquire(blocking=False):
            try:  # nothing to group with: run it at once
                return self._commit(fn, args)
            finally:
                self._lock.release()
        mine = QueuedWrite(fn, args)
        self.queued.append(mine)
        while not mine.done:
            with self._lock:
                if not mine.done:  # else the thread before us committed it with its own
                    self._commit_queued(mine)
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _commit_queued(self, mine: QueuedWrite) -> None:
        """Run the first queued write, or when several are queued the first :data:`MAX_GROUP`
        as one transaction (the caller holds the lock).

        A group is taken from the queue once the transaction has begun, so that the writes
        queued while this thread waited (for another process's lock, say) join it.
        """
        queued = self.queued
        if len(queued) == 1 or MAX_GROUP == 1:  # alone: run as it is
            write = queued.popleft()
            self._commit_alone(write)
            write.done = True
            return
        group: list[QueuedWrite] = []
        try:
            self._commit(_run_group, (queued, group))
        except BaseException as exc:  # nothing was committed, or (a lost COMMIT) not known
            if not group:  # the transaction never began: the others try again themselves
                queued.remove(mine)
                group.append(mine)
                mine.error = exc
            elif self._rerun_alone(exc):
                for write in group:  # one of them failed: each alone, so only that one fails
                    self._commit_alone(write)
            else:
                for write in group:
                    write.error = exc
        for write in group:
            write.done = True

    def _commit_alone(self, write: QueuedWrite) -> None:
        """Run one queued write as a transaction of its own; whatever it raises is kept for
        its caller, who raises it in its own thread."""
        try:
            write.result = self._commit(write.fn, write.args)
        except BaseException as exc:
            write.error = exc


def _run_group(
    connection: Any, queued: collections.deque[QueuedWrite], group: list[QueuedWrite]
) -> None:
    """The body of a group commit: the first :data:`MAX_GROUP` writes of ``queued`` (moved to
    ``group``; a retry runs the same group again), one after the other.  Only the thread
    holding the lock takes from the queue, so the two or more writes that
    :meth:`GroupCommit._commit_queued` saw there are still there.

    A write that raises ends the whole transaction (the store's busy or retryable errors are
    retried as one, by the store)."""
    if not group:
        while queued and len(group) < MAX_GROUP:
            group.append(queued.popleft())
    for write in group:
        write.result = write.fn(connection, *write.args)
