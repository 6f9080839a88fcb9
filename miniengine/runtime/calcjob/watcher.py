"""Waiting for scheduler jobs: one query per computer per poll interval, whoever waits.

:class:`LoopJobWatcher` serves run mode: the coroutines waiting for jobs of one computer elect
one of them to query the scheduler for all of them, once per the computer's minimum poll
interval.  :class:`DaemonJobWatcher` serves a worker: its waiting CalcJobs are evicted, so it
watches their jobs under a lease (renewed by the worker's heartbeat), queries each computer
once per interval for all of its jobs, and, when a job is done, marks it and enqueues the
process's continuation in one transaction.

A job of ``core.direct`` on ``core.local`` is a process of this machine: its end is learnt at
once from a pidfd (``os.pidfd_open``) that becomes readable when it exits, with no query at
all; where pidfds are not available the scheduler is polled as for any other computer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from miniengine.schedulers.datastructures import JobInfo, JobState
from miniengine.transports.pool import TransportPool
from miniengine.transports.transport import Transport

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend
    from miniengine.storage.interfaces.calcjobs import JobRow, JobStateChange

__all__ = ["DaemonJobWatcher", "LoopJobWatcher", "is_local_direct", "open_pidfd"]

logger = logging.getLogger("miniengine.calcjob")

#: The daemon watcher looks at its rows at most this often (seconds), after a commit by anyone.
WATCH_TICK = 0.02

#: The longest the daemon watcher waits for a commit before it looks again anyway (seconds).
WATCH_IDLE = 1.0

RequestTransport = Callable[[Any], AbstractAsyncContextManager[Transport]]


def is_local_direct(computer: Any) -> bool:
    return bool(
        computer.transport_type == "core.local" and computer.scheduler_type == "core.direct"
    )


def open_pidfd(job_id: str) -> int | None:
    """A pidfd for a local job, ``-1`` if the process is already gone, ``None`` if pidfds are
    not available here (then the scheduler is polled)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None or not job_id.isdigit():
        return None
    try:
        return int(pidfd_open(int(job_id)))
    except ProcessLookupError:
        return -1
    except OSError:
        return None


async def wait_for_local_exit(job_id: str) -> bool:
    """Wait until the local process ``job_id`` exits; False if that cannot be watched."""
    fd = open_pidfd(job_id)
    if fd is None:
        return False
    if fd < 0:
        return True
    try:
        await anyio.wait_readable(fd)
    finally:
        os.close(fd)
    return True


@dataclass
class _Waiter:
    wake: anyio.Event = field(default_factory=anyio.Event)
    info: JobInfo | None = None
    done: bool = False
    error: BaseException | None = None


@dataclass
class _Group:
    waiters: dict[str, _Waiter] = field(default_factory=dict)
    leader: bool = False


class LoopJobWatcher:
    """Run mode: waits for jobs on the running loop, one scheduler query per computer per
    interval for every job waited for there."""

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}
        #: scheduler queries made, per computer uuid (for tests and benchmarks)
        self.queries: dict[str, int] = {}

    async def wait(self, computer: Any, job_id: str, request: RequestTransport) -> JobInfo | None:
        """Until the job is done; its last report (``None`` when it was learnt from a pidfd)."""
        if is_local_direct(computer) and await wait_for_local_exit(job_id):
            return None
        group = self._groups.setdefault(computer.uuid, _Group())
        me = group.waiters.setdefault(job_id, _Waiter())
        try:
            while not me.done and me.error is None:
                if not group.leader:
                    group.leader = True
                    try:
                        await self._lead(computer, group, me, request)
                    finally:
                        group.leader = False
                        for waiter in group.waiters.values():
                            waiter.wake.set()  # someone else leads from now on
                else:
                    await me.wake.wait()
                    me.wake = anyio.Event()
            if me.error is not None:
                raise me.error
            return me.info
        finally:
            group.waiters.pop(job_id, None)
            if not group.waiters:
                self._groups.pop(computer.uuid, None)

    async def _lead(
        self, computer: Any, group: _Group, me: _Waiter, request: RequestTransport
    ) -> None:
        scheduler = computer.get_scheduler()
        interval = computer.get_minimum_job_poll_interval()
        while not me.done:
            pending = [job for job, waiter in group.waiters.items() if not waiter.done]
            try:
                async with request(computer) as transport:
                    from miniengine.runtime.calcjob.tasks import query_jobs

                    self.queries[computer.uuid] = self.queries.get(computer.uuid, 0) + 1
                    infos = await query_jobs(transport, scheduler, pending)
            except Exception as exc:
                # every waiter's executor backs off (and, in the end, pauses) on its own
                for job in pending:
                    failed = group.waiters.get(job)
                    if failed is not None:
                        failed.error = exc
                        failed.wake.set()
                return
            for job, info in infos.items():
                waiter = group.waiters.get(job)
                if waiter is not None and info.job_state is JobState.DONE:
                    waiter.info, waiter.done = info, True
                    waiter.wake.set()
            if not me.done:
                await anyio.sleep(interval)


_loop_watchers: dict[asyncio.AbstractEventLoop, LoopJobWatcher] = {}


def loop_watcher() -> LoopJobWatcher:
    """The run-mode watcher of the running loop."""
    loop = asyncio.get_running_loop()
    for old in [other for other in _loop_watchers if other.is_closed()]:
        del _loop_watchers[old]
    watcher = _loop_watchers.get(loop)
    if watcher is None:
        watcher = _loop_watchers[loop] = LoopJobWatcher()
    return watcher


class DaemonJobWatcher:
    """A worker's watcher of the scheduler jobs of evicted CalcJobs (rows it leases)."""

    def __init__(self, store: Backend, owner: str) -> None:
        self.store = store
        self.owner = owner
        self.pool: TransportPool | None = None
        self._wake = anyio.Event()
        self._computers: dict[str, Any] = {}
        self._last_query: dict[str, float] = {}
        #: consecutive failed queries per computer (backoff, then the processes are paused)
        self._failures: dict[str, int] = {}
        self._pidfds: dict[int, tuple[int, str]] = {}  # process pk -> (fd, job id)
        self._exited: set[int] = set()  # process pks whose local job exited
        #: when the next scheduler query is due (monotonic); rows are only looked at then, or
        #: when something changed
        self._next_due = math.inf
        #: scheduler queries made, per computer uuid (for tests and benchmarks)
        self.queries: dict[str, int] = {}

    def wake(self) -> None:
        """Look at the rows now (a job was committed in this worker, or a pidfd fired)."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def request(self, computer: Any) -> AsyncIterator[Transport]:
        """The worker's pooled transport for ``computer`` (one connection per computer)."""
        assert self.pool is not None
        async with self.pool.request(computer.uuid, computer.get_transport) as transport:
            yield transport

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with TransportPool() as pool:
            self.pool = pool
            try:
                with self.store.calcjobs.renewing_jobs(self.owner):
                    task_status.started()
                    try:
                        await self._watch()
                    finally:
                        with anyio.CancelScope(shield=True):
                            self._close_pidfds()
            finally:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self.store.calcjobs.release_jobs.aio(self.owner)

    def _close_pidfds(self) -> None:
        loop = asyncio.get_running_loop()
        for fd, _ in self._pidfds.values():
            loop.remove_reader(fd)
            os.close(fd)
        self._pidfds.clear()

    def _computer(self, uuid: str) -> Any:
        computer = self._computers.get(uuid)
        if computer is None:
            from miniengine.runtime.computers import load_computer

            computer = self._computers[uuid] = load_computer(uuid=uuid, db=self.store)
        return computer

    async def _watch(self) -> None:
        jobs = self.store.calcjobs
        version = -1
        rows: list[JobRow] = []
        while True:
            current = self.store.commit_marker()
            changed = current != version or self._wake.is_set()
            if changed:
                version = current
                self._wake = anyio.Event()
                try:
                    if await jobs.has_unwatched_jobs.aio(time.time()):
                        await jobs.claim_jobs.aio(
                            self.owner, self.store.lease_expiry(), time.time()
                        )
                    rows = await jobs.read_watched_jobs.aio(self.owner)
                except Exception:
                    logger.warning("reading the watched jobs failed", exc_info=True)
                    rows = []
            if rows and (changed or time.monotonic() >= self._next_due):
                try:
                    await self._check(rows)
                except Exception:
                    # (e.g. the file stayed locked beyond every retry): the rows stay leased and
                    # are looked at again; the worker itself must not stop for it
                    logger.warning("watching jobs failed; trying again in 1 s", exc_info=True)
                    await anyio.sleep(1.0)
                    version = -1  # read the rows again
            await self._idle(version, bool(rows))

    async def _idle(self, marker: int, watching: bool) -> None:
        """Wait for :meth:`wake`, a commit by anyone after ``marker``, or the next scheduler
        query that is due, whichever comes first; but at least :data:`WATCH_TICK` unless woken,
        so a busy database is looked at no more often than that."""
        with anyio.move_on_after(WATCH_TICK):
            await self._wake.wait()
        if self._wake.is_set() or marker < 0:
            return
        timeout = WATCH_IDLE
        if watching:
            timeout = min(timeout, self._next_due - time.monotonic())
        if timeout <= 0:
            return
        async with anyio.create_task_group() as group:

            async def woken() -> None:
                await self._wake.wait()
                group.cancel_scope.cancel()

            group.start_soon(woken)
            await self.store.await_commit(marker, timeout)
            group.cancel_scope.cancel()

    async def _check(self, rows: list[JobRow]) -> None:
        self._next_due = math.inf
        by_computer: dict[str, list[Any]] = {}
        for row in rows:
            by_computer.setdefault(row.computer_uuid, []).append(row)
        live = {row.process_pk for row in rows}
        for pk in [pk for pk in self._pidfds if pk not in live]:
            fd, _ = self._pidfds.pop(pk)
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        changed = False
        #: jobs whose scheduler state differs from the one recorded
        states: list[JobStateChange] = []
        for uuid, group in by_computer.items():
            try:
                computer = self._computer(uuid)
            except Exception:
                logger.warning("cannot load the computer %s", uuid, exc_info=True)
                continue
            finished: list[tuple[Any, JobInfo | None]] = []
            cancel = [row for row in group if row.process_state not in _ACTIVE]
            watch = [row for row in group if row.process_state in _ACTIVE]
            polled = watch
            if is_local_direct(computer):
                polled = []
                for row in watch:
                    if row.process_pk in self._exited:
                        finished.append((row, None))
                    elif row.process_pk not in self._pidfds:
                        pidfd = open_pidfd(row.job_id)
                        if pidfd is None:
                            polled.append(row)
                        elif pidfd < 0:
                            finished.append((row, None))
                        else:
                            self._watch_fd(row.process_pk, pidfd, row.job_id)
                            # the job's process exists: with core.direct that is running
                            _note_state(states, row, JobState.RUNNING.value)
            now = time.monotonic()
            interval = computer.get_minimum_job_poll_interval()
            failures = self._failures.get(uuid, 0)
            if failures:
                from miniengine.runtime.calcjob.executor import backoff_settings

                interval = max(interval, backoff_settings()[0] * 2 ** (failures - 1))
            due = self._last_query.get(uuid, -math.inf) + interval
            if polled and now < due:
                self._next_due = min(self._next_due, due)
            if polled and now >= due:
                self._last_query[uuid] = now
                self._next_due = min(self._next_due, now + interval)
                try:
                    from miniengine.runtime.calcjob.tasks import query_jobs

                    async with self.request(computer) as transport:
                        self.queries[uuid] = self.queries.get(uuid, 0) + 1
                        infos = await query_jobs(
                            transport, computer.get_scheduler(), [row.job_id for row in polled]
                        )
                    self._failures.pop(uuid, None)
                    for row in polled:
                        info = infos.get(row.job_id)
                        if info is not None and info.job_state is JobState.DONE:
                            finished.append((row, info))
                        elif info is not None:
                            _note_state(states, row, info.job_state.value)
                except Exception as exc:
                    await self._query_failed(computer, polled, exc)
            for row, info in finished:
                from miniengine.runtime.calcjob.tasks import detailed_info

                state = info.job_state.value if info is not None else JobState.DONE.value
                await self.store.calcjobs.job_done.aio(
                    row.process_pk,
                    row.job_id,
                    self.owner,
                    state,
                    detailed_info(info),
                )
                self._exited.discard(row.process_pk)
                changed = True
            for row in cancel:
                await self._cancel(computer, row)
                changed = True
        if states:
            await self.store.calcjobs.job_states.aio(self.owner, states)
        if changed:
            self._wake.set()

    async def _query_failed(self, computer: Any, rows: list[Any], error: Exception) -> None:
        """Back off; after the last attempt pause the processes of the jobs (``play`` makes the
        watcher ask again), as a failing transport stage does."""
        from miniengine.runtime.calcjob.executor import backoff_settings

        _, attempts = backoff_settings()
        failures = self._failures[computer.uuid] = self._failures.get(computer.uuid, 0) + 1
        logger.warning(
            "querying %s failed (attempt %d of %d)", computer.label, failures, attempts,
            exc_info=True,
        )  # fmt: skip
        if failures < attempts:
            return
        self._failures.pop(computer.uuid, None)
        message = (
            f"Pausing after failed transport task: update failed {failures} times: "
            f"{type(error).__name__}: {error}"
        )
        await self.store.calcjobs.pause_watched.aio([row.process_pk for row in rows], message)
        self._wake.set()

    def _watch_fd(self, pk: int, fd: int, job_id: str) -> None:
        loop = asyncio.get_running_loop()

        def exited() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._pidfds.pop(pk, None)
            self._exited.add(pk)
            self._wake.set()

        self._pidfds[pk] = (fd, job_id)
        loop.add_reader(fd, exited)

    async def _cancel(self, computer: Any, row: Any) -> None:
        """The process was killed while its job was with the scheduler: cancel the job."""
        from miniengine.runtime.calcjob.tasks import kill_job

        try:
            async with self.request(computer) as transport:
                await kill_job(transport, computer.get_scheduler(), row.job_id)
        except Exception:
            logger.warning("cancelling job %s failed", row.job_id, exc_info=True)
            return
        await self.store.calcjobs.drop_job.aio(row.process_pk, self.owner)


_ACTIVE = ("created", "running", "waiting")


def _note_state(changes: list[JobStateChange], row: JobRow, state: str) -> None:
    """Add ``row``'s job to ``changes`` if the scheduler's state is not the one recorded."""
    if row.scheduler_state != state:
        from miniengine.runtime.calcjob.executor import scheduler_status
        from miniengine.storage.interfaces.calcjobs import JobStateChange

        status = scheduler_status(state)
        changes.append(JobStateChange(row.process_pk, row.job_id, state, status))
