"""A daemon worker: claims tasks from the queue in the database and runs their processes.

``async with Worker(db=...)`` runs one on the current event loop (an app's lifespan, a test);
``python -m miniengine.daemon worker`` runs one as an OS process for the supervisor.  A worker
holds at most ``slots`` processes at a time.  A process that waits for children is evicted to its
checkpoint and holds no slot; it comes back as a new task when its last child terminates.  The
worker's heartbeat (a background thread of its store) renews the leases of its tasks and
processes whatever user code is doing; if it dies, they expire and other workers take over.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
from types import TracebackType
from typing import Any, NamedTuple, cast

import anyio
import anyio.abc

from miniengine.core import codec
from miniengine.daemon.throttle import ThrottledLog
from miniengine.exceptions import LeaseLostError, MiniengineError, StoreError
from miniengine.runtime import context
from miniengine.runtime import submit as submit_module
from miniengine.runtime.driver import drive_async, set_step_threads
from miniengine.runtime.mode import DaemonMode
from miniengine.runtime.nodes import WorkChainNode, rows_read_ahead
from miniengine.runtime.workchain.launch import _except_owned
from miniengine.runtime.workchain.load import IMPORT_STAGE, LoadError, load_process
from miniengine.storage.host import current_host
from miniengine.storage.interfaces.broker import MAX_ATTEMPTS
from miniengine.storage.interfaces.checkpoints import LATER, Claim, StoredCheckpoint
from miniengine.storage.interfaces.provenance import NodeRow
from miniengine.storage.open import open_backend
from miniengine.storage.paths import resolve_db
from miniengine.storage.store import DEFAULT_LEASE_TIMEOUT, Store

__all__ = ["DEFAULT_SLOTS", "Worker"]

logger = logging.getLogger("miniengine.worker")

#: Processes one worker runs at once (waiting processes do not count: they are evicted).
DEFAULT_SLOTS = 200

#: How often an idle worker looks whether another connection committed (on sqlite), and the
#: shortest time between two reads of the kill and pause requests for its processes (a busy
#: database commits all the time).
POLL_INTERVAL = 0.01

#: The longest an idle worker waits for a commit before it looks for ready tasks anyway.
IDLE_WAIT = 1.0

#: Seconds before a task that a worker had to hand back is tried again.
RETRY_DELAY = 1.0

#: How long a stopping worker waits to release its tasks and leases (seconds).
RELEASE_PATIENCE = 5.0

#: Seconds before a worker claims again after a claim failed (the file stayed locked, say).
CLAIM_RETRY_DELAY = 1.0


class ReadAhead(NamedTuple):
    """What :meth:`Worker._read_ahead` read for the processes of one claim."""

    #: each process's node and checkpoint, by pk
    processes: dict[int, tuple[NodeRow, StoredCheckpoint | None]]
    #: the stored nodes those checkpoints name, by pk
    nodes: dict[int, NodeRow]


class Worker:
    """Runs submitted processes on the current event loop until the ``async with`` block ends."""

    def __init__(
        self,
        db: str | os.PathLike[str] | None = None,
        *,
        slots: int = DEFAULT_SLOTS,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
        stop_timeout: float = 10.0,
        worker_id: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        if slots < 1:
            raise ValueError(f"a worker needs at least one slot, not {slots}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        #: claims of a task whose workers all died holding it, before its process is EXCEPTED
        self.max_attempts = max_attempts
        #: the database file, or the URL of a PostgreSQL database
        self.path = resolve_db(db)
        self.slots = slots
        self.lease_timeout = lease_timeout
        self.stop_timeout = stop_timeout
        #: the host it runs on (``$MINIENGINE_HOST`` or the hostname), recorded with its row
        self.host = current_host()
        self.id = worker_id or f"worker:{self.host}:{os.getpid()}:{os.urandom(4).hex()}"
        self.busy = 0
        self.stopping = False
        self.processed = 0
        self.store: Store | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        #: set by :meth:`_wake_up` (work may be ready); the wait for work it cancels, if any
        self._woken = False
        self._waiting: anyio.CancelScope | None = None
        self._idle = anyio.Event()
        self._loop: Any = None
        #: processes running in this worker now, each with the event set when its run ends
        self._running: dict[int, anyio.Event] = {}
        #: the executors of the processes this worker runs, for kill/pause requests
        self._controlled: dict[int, tuple[Any, anyio.CancelScope]] = {}
        self.jobs: Any = None
        self._handled: set[tuple[int, str]] = set()
        #: a task run alone (its earlier workers died holding it) until it shows progress
        self._alone: int | None = None
        #: problems that recur while they last (a locked or full file) are logged once a while
        self._log = ThrottledLog(logger)
        #: the token that made this worker's database the default of its ``async with`` block
        self._block: contextvars.Token[str | None] | None = None

    # lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        import asyncio

        self._loop = asyncio.get_running_loop()
        set_step_threads(self.slots)  # a def step per slot, never more
        # cast: a PostgreSQL store serves the Backend part of Store, all the worker uses
        self.store = store = cast(
            Store, open_backend(self.path, lease_timeout=self.lease_timeout, owner=self.id)
        )
        if isinstance(store, Store):  # it polls for commits: idle, a worker looks less often
            store.commit_poll_interval = POLL_INTERVAL
        await store.broker.register_worker.aio(
            self.id, os.getpid(), self.slots, time.time(), self.host
        )
        store.broker.renew_on_heartbeat(self.id, lambda: self.busy)
        store.start_heartbeat()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._claim_loop)
        self._task_group.start_soon(self._maintenance_loop)
        self._task_group.start_soon(self._control_loop)
        from miniengine.runtime.calcjob.watcher import DaemonJobWatcher

        #: watches the scheduler jobs of this worker's evicted CalcJobs (and owns its transports)
        self.jobs = DaemonJobWatcher(store, self.id)
        await self._task_group.start(self.jobs.run)
        submit_module.register_local_worker(store.location, self)
        # what the block submits goes to this worker's database, not to the default one
        self._block = context.serve_in_block(os.fspath(self.path))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._task_group is not None and self.store is not None
        submit_module.unregister_local_worker(self.store.location, self)
        if self._block is not None:
            context.end_block(self._block)
            self._block = None
        self.stopping = True
        self._wake_up()
        logger.info(
            "stopping: claiming nothing more; %d running process(es) go back to the queue at "
            "their next commit",
            self.busy,
        )
        with anyio.move_on_after(self.stop_timeout, shield=True):
            if self.busy:
                await self._idle.wait()
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)
        try:
            # what it still holds goes back to the queue at once; if the database does not let
            # it (a server away, a file locked), the leases run out instead: no reason to wait.
            # In a thread of its own, abandoned at the limit (closing the store ends its wait):
            # ``.aio`` would not let go before the write's end, its outcome being wanted.
            release = self.store.broker.release_owner
            with anyio.move_on_after(RELEASE_PATIENCE) as waited:
                await anyio.to_thread.run_sync(release, self.id, abandon_on_cancel=True)
            if waited.cancelled_caught:
                logger.warning(
                    "could not release this worker's tasks and leases within %g s; they are "
                    "taken over once their leases run out",
                    RELEASE_PATIENCE,
                )
        finally:
            self.store.close()

    def wake_threadsafe(self) -> None:
        """Look for work now (called by ``submit`` in this OS process, from any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake_up)

    def _wake_up(self) -> None:
        """Look for work now (on the worker's loop): ends the current wait for work."""
        self._woken = True
        if self._waiting is not None:
            self._waiting.cancel()

    # claiming --------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        store = self.store
        assert store is not None and self._task_group is not None
        while not self.stopping:
            # before the reads, which the loop awaits: a wake-up or a commit meanwhile (a submit
            # in this process, a task ending) makes the wait below return at once
            marker = store.commit_marker()
            self._woken = False
            free = self.slots - self.busy
            claimed: list[Claim] = []
            try:
                if self._alone is not None and not await store.broker.runs_alone.aio(
                    self._alone, self.id
                ):
                    self._alone = None  # it committed a step (or ended): not the killer
                if (
                    free > 0
                    and self._alone is None
                    and await store.broker.has_ready_task.aio(time.time())
                    and not self.stopping  # (it may have begun to stop during that read)
                ):
                    claimed = await store.checkpoints.claim_work.aio(
                        self.id,
                        min(free, 64),
                        store.lease_expiry(),
                        time.time(),
                        self.busy == 0,
                        self.max_attempts,
                    )
            except StoreError:
                # e.g. another program kept the file locked beyond every retry: the worker stays
                # up and tries again; what it holds is protected by its leases meanwhile
                self._log.problem(
                    "claim", "claiming tasks failed; retrying every 1 s", exc_info=True
                )
                await anyio.sleep(CLAIM_RETRY_DELAY)
                continue
            ahead = self._read_ahead(claimed)
            for claim in claimed:
                self.busy += 1
                self._idle = anyio.Event()
                if claim.alone:
                    # its earlier workers died holding it: nothing else is claimed until it
                    # commits a step or ends, so that nothing else dies with it again
                    logger.warning(
                        "task %s (process %s) was held by workers that died: running it alone",
                        claim.task_pk,
                        claim.process_pk,
                    )
                    self._alone = claim.task_pk
                self._task_group.start_soon(
                    self._run_task, claim.task_pk, claim.process_pk, claim.epoch, ahead
                )
            if claimed and len(claimed) < free:
                continue
            await self._wait_for_work(marker)

    def _read_ahead(self, claimed: list[Claim]) -> ReadAhead | None:
        """The nodes and checkpoints of the processes of a claim, and the Data nodes those
        checkpoints name, in two queries instead of two per process (on a database server a
        round trip each, with the loop waiting).  ``None`` for a claim of one, or if the reads
        failed: each process is then read when it starts, as always."""
        store = self.store
        assert store is not None
        pks = [claim.process_pk for claim in claimed if claim.epoch not in (None, LATER)]
        if len(pks) < 2:
            return None
        try:
            processes = store.checkpoints.read_processes(pks)
            named = {
                pk
                for _, checkpoint in processes.values()
                if checkpoint is not None
                for pk in codec.stored_pks(checkpoint.data)
            }
            nodes = store.provenance.nodes(sorted(named)) if named else {}
        except StoreError:
            return None
        return ReadAhead(processes, nodes)

    async def _wait_for_work(self, marker: int) -> None:
        """Until woken locally (:meth:`_wake_up`) or another connection committed, since
        ``marker`` and the reset of the wake-up flag."""
        store = self.store
        assert store is not None
        with anyio.CancelScope() as scope:
            self._waiting = scope
            try:
                while not self.stopping and not self._woken:
                    if await store.await_commit(marker, IDLE_WAIT) != marker:
                        return
            finally:
                self._waiting = None

    async def _control_loop(self) -> None:
        """Act on kill and pause requests for the processes this worker holds (RPC through the
        database: a request is seen within a poll interval of its commit)."""
        store = self.store
        assert store is not None
        while True:
            marker = store.commit_marker()  # before the read: a later request changes it
            try:
                requests = await store.control.pending_controls.aio(self.id)
            except StoreError:
                self._log.problem(
                    "control", "reading control requests failed; retrying", exc_info=True
                )
                requests = []
            self._handled &= set(requests)
            for pk, control in requests:
                controlled = self._controlled.get(pk)
                if controlled is not None and (pk, control) not in self._handled:
                    self._handled.add((pk, control))
                    controlled[0].apply_control(control, controlled[1])
            await anyio.sleep(POLL_INTERVAL)
            await store.await_commit(marker, IDLE_WAIT)

    async def _maintenance_loop(self) -> None:
        """Requeue what dead owners left behind (every worker does it; it is idempotent)."""
        assert self.store is not None
        interval = max(self.lease_timeout / 2, 0.05)
        while True:
            try:
                counts = await self.store.broker.recover_expired.aio(time.time())
                await self.store.events.prune.aio(time.time())
                if any(counts):
                    logger.info("recovery: %s", counts._asdict())
                    self._wake_up()
            except MiniengineError:
                self._log.problem("recovery", "recovery failed; retrying", exc_info=True)
            await anyio.sleep(interval)

    # running ---------------------------------------------------------------------------------

    async def _run_task(
        self, task_pk: int, process_pk: int, epoch: int | None, ahead: ReadAhead | None = None
    ) -> None:
        try:
            if epoch is not None:  # None: acknowledged and dropped in the claiming transaction
                await self._execute(task_pk, process_pk, epoch, ahead)
        except (Exception, SystemExit):
            logger.exception("task %s for process %s failed", task_pk, process_pk)
            await self._give_back(task_pk, process_pk)
        finally:
            if self._alone == task_pk:
                self._alone = None
            self.busy -= 1
            self.processed += 1
            self._wake_up()
            if self.busy == 0:
                self._idle.set()

    async def _execute(
        self, task_pk: int, process_pk: int, epoch: int, ahead: ReadAhead | None
    ) -> None:
        # A second task for a process that this worker runs right now (a duplicate, or a wake-up
        # that overtook the eviction of the run that enqueued it) waits for that run to end: two
        # runs of one process in one worker would share the owner and fence each other only
        # after both had run the step.
        running = self._running.get(process_pk)
        while running is not None:
            ahead = None  # read before that run ended: stale
            await running.wait()
            running = self._running.get(process_pk)
        done = self._running[process_pk] = anyio.Event()
        try:
            await self._claim_and_drive(task_pk, process_pk, epoch, ahead)
        finally:
            del self._running[process_pk]
            done.set()

    async def _claim_and_drive(
        self, task_pk: int, process_pk: int, claimed: int, ahead: ReadAhead | None = None
    ) -> None:
        store = self.store
        assert store is not None
        epoch: int | None = claimed
        if claimed == LATER:  # its previous run here has ended meanwhile
            epoch = await store.checkpoints.claim_task_process.aio(
                task_pk, process_pk, self.id, store.lease_expiry()
            )
        if epoch is None:
            return  # terminated already, or a duplicate: acknowledged and dropped
        read = ahead.processes.get(process_pk) if ahead is not None else None
        row, checkpoint = read if read is not None else store.checkpoints.read_process(process_pk)
        node = WorkChainNode(store, row)
        try:
            with rows_read_ahead(ahead.nodes if ahead is not None else None):
                executor, state = load_process(
                    store, row, epoch, checkpoint, DaemonMode(self, task_pk)
                )
        except LoadError as exc:
            if exc.stage == IMPORT_STAGE and exc.class_path is not None:
                # the code, not the process, is at fault (changed while the daemon ran, or the
                # daemon runs from another folder): keep the process for a fixed daemon
                message = unimportable_message(process_pk, exc.class_path, exc.cause)
                logger.error("process %s %s", process_pk, message)
                await store.control.pause_unloadable.aio(
                    process_pk, self.id, epoch, message, task_pk
                )
                return
            message = f"cannot be continued by the daemon: {exc}"
            logger.error("process %s %s", process_pk, message)
            await _except_owned(store, process_pk, epoch, message, task_pk)
            return
        store.leases_taken()
        scope = anyio.CancelScope()
        self._controlled[process_pk] = (executor, scope)
        try:
            with scope:
                await drive_async(executor.lifecycle(state))
        except LeaseLostError as exc:
            # fenced off: another owner took the process over (this worker was paused or cut
            # off longer than its lease); everything this run wrote since was refused
            logger.warning(
                "process %s: this worker lost its lease; run discarded (%s)", process_pk, exc
            )
            await self._give_back(task_pk, process_pk)
        except (Exception, SystemExit):  # user code may call sys.exit(): never the worker's end
            if not node.is_terminated:
                # its last write failed (e.g. the file stayed locked): hand it back, or it would
                # stay RUNNING with a lease this worker's heartbeat renews forever
                logger.exception("process %s could not be written; handing it back", process_pk)
                await self._give_back(task_pk, process_pk)
            # else: the process's fate is on its node (EXCEPTED, with the traceback)
        finally:
            self._controlled.pop(process_pk, None)
            store.leases_released()

    async def _give_back(self, task_pk: int, process_pk: int) -> None:
        """Return a task that this worker could not finish to the queue (tried again after a
        delay), with the process's lease if this worker still holds it.  While the file stays
        locked this keeps trying: the heartbeat would otherwise renew both leases forever."""
        assert self.store is not None
        while True:
            try:
                await self.store.broker.give_back.aio(
                    task_pk, process_pk, self.id, time.time() + RETRY_DELAY
                )
                return
            except StoreError:
                self._log.problem(
                    "give back", f"could not hand back task {task_pk}; retrying", exc_info=True
                )
                if self.stopping:
                    return  # the leases go with the worker (released when it stops)
                await anyio.sleep(RETRY_DELAY)


def unimportable_message(pk: int, class_path: str, error: BaseException) -> str:
    """Why a process was paused instead of run: its class does not import in this worker.

    It names what a user needs to find the cause (the module, the worker's folder and import
    path) and the way out, because the process itself is intact.
    """
    module = class_path.partition(":")[0]
    if isinstance(error, MiniengineError) and error.__cause__ is not None:
        error = error.__cause__  # the module's own error, not our wrapper's
    return (
        f"paused: the daemon cannot import its process class {class_path} (module {module}): "
        f"{type(error).__name__}: {error}. The worker (host {current_host()}, pid "
        f"{os.getpid()}) runs in {os.getcwd()} with sys.path {sys.path}. Restart that host's "
        "daemon where that module imports, then "
        f"`miniengine process play {pk}`"
    )
