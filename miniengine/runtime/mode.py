"""How a process runs: in run mode (to its end, in this OS process) or in daemon mode (a worker).

A process lifecycle (a WorkChain's, a CalcJob's) asks its mode what to do where the two differ,
instead of testing which one it is:

- how children run: in run mode a child started by a step is a task of the launched tree, and
  the parent waits for it in memory; in daemon mode it is created as a daemon task, enqueued by
  the commit that ends the step (the outbox), and any worker runs it;
- whether waiting evicts: a daemon process that waits (for children, or paused) is written to
  its checkpoint and its lease released, holding no slot; a run-mode process stays in memory;
- when to hand back: a daemon worker that shuts down hands its processes back to the queue at
  their next step boundary;
- what a failed terminal write means: in run mode nobody else would end the process, so it is
  ended at once; in daemon mode the worker hands the task back and it is run again;
- where a CalcJob's transports come from (the tree's pool, or the worker's) and who watches its
  scheduler job (the CalcJob itself on the loop, or the worker's job watcher, woken by
  :meth:`DaemonMode.job_submitted`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

if TYPE_CHECKING:
    from miniengine.runtime.lifecycle import ProcessExecutor
    from miniengine.transports.transport import Transport

__all__ = ["DaemonMode", "Mode", "ProcessTree", "RunMode"]


class ProcessTree:
    """The task group that runs the children of one launched process tree (run mode), and
    the executors and cancel scopes of its live processes, for control requests."""

    def __init__(self, task_group: anyio.abc.TaskGroup) -> None:
        self.task_group = task_group
        self.root_scope = anyio.CancelScope()
        #: the live processes' executors (WorkChain or CalcJob), by pk
        self.executors: dict[int, ProcessExecutor] = {}
        self.scopes: dict[int, anyio.CancelScope] = {}
        self._pool: Any = None
        self._pool_scope: anyio.CancelScope | None = None
        self._pool_ready: anyio.Event | None = None

    async def transport_pool(self) -> Any:
        """The tree's :class:`~miniengine.transports.pool.TransportPool`: every CalcJob of one
        launched tree shares one connection per computer, as the jobs of a daemon worker do.
        Started in the tree's task group when a CalcJob first needs it; :meth:`close` ends it."""
        if self._pool_ready is not None:  # started, or being started by another job
            await self._pool_ready.wait()
            return self._pool
        from miniengine.transports.pool import TransportPool

        ready = self._pool_ready = anyio.Event()
        pool, scope = TransportPool(), anyio.CancelScope()
        self._pool, self._pool_scope = pool, scope

        async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with scope:
                async with pool:
                    task_status.started()
                    await anyio.sleep_forever()

        await self.task_group.start(serve)
        ready.set()
        return pool

    def close(self) -> None:
        """The root process has ended: close the tree's connections."""
        if self._pool_scope is not None:
            self._pool_scope.cancel()

    def apply_control(self, pk: int, control: str) -> bool:
        """Act on a control request for one of this tree's processes; False if not ours."""
        executor = self.executors.get(pk)
        if executor is None:
            return False
        return bool(executor.apply_control(control, self.scopes.get(pk)))

    def root_kill_message(self) -> str | None:
        """The message of the kill that reached the tree's root process (its executor is the
        first one registered), for the error its launcher raises."""
        root = next(iter(self.executors.values()), None)
        return None if root is None else root.kill_message


class RunMode:
    """Run mode: the process and its children run in one launched tree, in this OS process."""

    __slots__ = ("tree",)

    #: Children run as tasks of the tree, started after the step's commit.
    children_via_daemon = False
    #: Waiting for children, or while paused, holds the process in memory.
    evicts = False
    #: A failed terminal write is followed by ending the process at once: nobody else would.
    ends_after_failed_finish = True
    #: A lost lease inside a step (an inline call's) ends the process here: no task runs it again.
    hands_back_lost_leases = False
    #: No daemon task runs the process.
    task_pk: int | None = None

    def __init__(self, tree: ProcessTree) -> None:
        self.tree = tree

    def register(self, pk: int, executor: ProcessExecutor) -> None:
        """Make the process reachable by the tree's control requests (kill, pause)."""
        self.tree.executors[pk] = executor
        self.tree.scopes.setdefault(pk, self.tree.root_scope)

    def start_child(self, runner: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Run ``runner(*args, tree)`` as a task of the tree (a child the parent waits for)."""
        self.tree.task_group.start_soon(runner, *(*args, self.tree))

    def hands_back(self) -> bool:
        """Nothing takes a run-mode process over: it never hands itself back."""
        return False

    @contextlib.asynccontextmanager
    async def transport(self, computer: Any) -> AsyncIterator[Transport]:
        """A transport to ``computer`` from the tree's pool: all the CalcJobs of one launched
        tree share one connection per computer, as the jobs of a daemon worker do."""
        pool = await self.tree.transport_pool()
        async with pool.request(computer.uuid, computer.get_transport) as transport:
            yield transport

    def job_submitted(self) -> None:
        """A CalcJob of the tree waits for its own scheduler job, on the loop."""


class DaemonMode:
    """Daemon mode: a worker runs the process for one task, step by step from its checkpoint."""

    __slots__ = ("task_pk", "worker")

    #: Children are created as daemon tasks, enqueued by the step's commit (the outbox).
    children_via_daemon = True
    #: Waiting for children, or while paused, evicts the process to its checkpoint.
    evicts = True
    #: A failed terminal write is raised: the worker hands the task back and it runs again.
    ends_after_failed_finish = False
    #: A lost lease inside a step -- an inline call that the recovery of expired leases ended
    #: while this worker was stopped past its lease -- means this run is stale: it is raised
    #: without writing, the worker hands the task back, and the replay of the step from the
    #: checkpoint runs the call afresh (the process must not end EXCEPTED for it).
    hands_back_lost_leases = True
    #: There is no launched tree.
    tree: ProcessTree | None = None

    def __init__(self, worker: Any = None, task_pk: int | None = None) -> None:
        #: the worker running the process (with a ``stopping`` flag, and ``jobs``, the watcher
        #: of its CalcJobs' scheduler jobs, which owns its transports), if any
        self.worker = worker
        #: the task that runs the process, acknowledged when it is evicted or ends
        self.task_pk = task_pk

    def register(self, pk: int, executor: ProcessExecutor) -> None:
        """The worker keeps its own table of the processes it controls."""

    def start_child(self, runner: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        raise AssertionError("daemon mode starts children through the step's commit")

    def hands_back(self) -> bool:
        """True once the worker is shutting down: the process goes back to the queue at its
        next step boundary (or now, if it is being cancelled for the shutdown)."""
        return self.worker is not None and bool(self.worker.stopping)

    def transport(self, computer: Any) -> contextlib.AbstractAsyncContextManager[Transport]:
        """A transport to ``computer`` from the worker's pool (its job watcher owns it)."""
        return self.worker.jobs.request(computer)  # type: ignore[no-any-return]

    def job_submitted(self) -> None:
        """A CalcJob evicted with its job: wake the worker's job watcher, which leases the job."""
        if self.worker is not None and getattr(self.worker, "jobs", None):
            self.worker.jobs.wake()


#: How a process runs.
Mode = RunMode | DaemonMode
