"""The supervisor: the ``daemon start --foreground`` process, which keeps the workers alive.

It is a small synchronous program of our own (no circus): it starts each worker as a child
process, waits for its ``READY`` line, and then watches them.  A worker that exits is reaped, its
leases are released at once (so its processes continue elsewhere from their last checkpoint), and
it is restarted with backoff.  A worker whose heartbeat in the database is older than the lease
timeout (SIGSTOPped, wedged) is SIGKILLed.  SIGTERM stops everything gracefully; SIGUSR1 adds a
worker and SIGUSR2 removes one (``daemon incr`` / ``decr``).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from miniengine.daemon.files import DaemonFiles, db_arguments, process_alive
from miniengine.daemon.throttle import ThrottledLog
from miniengine.exceptions import MiniengineError
from miniengine.storage.host import current_host
from miniengine.storage.interfaces.broker import MAX_ATTEMPTS, SILENT_AFTER, RecoveryCounts
from miniengine.storage.open import open_backend

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["Supervisor"]

logger = logging.getLogger("miniengine.daemon")

#: Restart delays after consecutive crashes of one worker slot (seconds).
BACKOFF = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

#: A worker that ran this long without crashing gets its backoff reset.
HEALTHY_AFTER = 60.0

#: The longest restart delay of a worker that had reported ready and was then killed by a
#: signal (an operator's or the OOM killer's SIGKILL, the heartbeat watchdog): the worker could
#: start, so this is no crash loop of its own, and a task that kills every worker holding it is
#: given up by its own attempt cap.  Without this, a few such kills within a minute left the
#: slot empty for 30 s after each further kill.
KILLED_WHEN_READY_DELAY = 0.5

#: How long one write of the supervisor waits for another program's write lock.  It has
#: workers to watch, so it tries again later rather than wait the default half a minute.
WRITE_PATIENCE = 1.0

#: Seconds between two tries to release the leases of dead workers while the database refuses.
RELEASE_RETRY = 1.0

#: How often the supervisor looks for workers of its host that died without one (seconds).
FORGET_EVERY = 10.0

#: The same problem (a locked or full database, an unwritable pid file) is logged at most once
#: per this many seconds, however often it recurs.
LOG_EVERY = 30.0


@dataclass
class _WorkerSlot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    worker_id: str = ""
    generation: int = 0
    crashes: int = 0
    started: float = 0.0
    ready: bool = False
    restart_at: float = 0.0
    retiring: bool = False
    buffer: bytes = field(default=b"")


class Supervisor:
    """Starts, watches and stops the worker processes of one database."""

    def __init__(
        self,
        db: Path | str,
        *,
        workers: int = 1,
        slots: int = 200,
        lease_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        if workers < 1:
            raise ValueError(f"the daemon needs at least one worker, not {workers}")
        self.db = db
        #: the host it runs on: in its workers' ids, and its files' folder on PostgreSQL
        self.host = current_host()
        self.files = DaemonFiles(db)
        self.slots = slots
        self.lease_timeout = lease_timeout
        self.stop_timeout = stop_timeout
        self.max_attempts = max_attempts
        self.workers: list[_WorkerSlot] = [_WorkerSlot(i) for i in range(workers)]
        self._next_index = workers
        self._stop = False
        self._grow = 0
        self._phase = "starting"
        self.store: Backend | None = None
        #: dead workers whose tasks and leases are not released yet (the database refused)
        self._unreleased: list[str] = []
        self._next_release = 0.0
        self._next_forget = 0.0
        self._log = ThrottledLog(logger, LOG_EVERY)

    # signals ---------------------------------------------------------------------------------

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self._stop = True

    def _on_incr(self, signum: int, frame: FrameType | None) -> None:
        self._grow += 1

    def _on_decr(self, signum: int, frame: FrameType | None) -> None:
        self._grow -= 1

    # the main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_incr)
        signal.signal(signal.SIGUSR2, self._on_decr)
        # the store first: a database that cannot be opened must leave no pid file behind
        self.store = open_backend(self.db, owner=f"supervisor:{self.host}:{os.getpid()}")
        # its reads come round again a moment later: while a database server is away, a read
        # waiting its 30 s for it would keep the supervisor from stopping or restarting workers
        self.store.read_patience = min(self.store.read_patience, WRITE_PATIENCE)
        self.files.write(pid=os.getpid(), state="starting", db=self.store.location)
        try:
            for slot in self.workers:
                self._spawn(slot)
            deadline = time.monotonic() + 60
            while not all(slot.ready for slot in self.workers):
                if self._stop or time.monotonic() > deadline:
                    logger.error("workers did not become ready; stopping")
                    return 1
                self._watch(0.05)
            self._phase = "ready"
            self._write_state()
            logger.info(
                "daemon ready: %d workers with %d slots each", len(self.workers), self.slots
            )
            while not self._stop:
                try:
                    self._watch(0.1)
                    self._resize()
                    self._check_heartbeats()
                    self._forget_dead_of_this_host()
                    self._release_dead()
                except Exception:  # it must outlive whatever fails: the workers depend on it
                    self._log.problem(
                        "loop", "the supervisor's watch failed; going on", exc_info=True
                    )
                    time.sleep(0.1)
            return 0
        finally:
            self._shutdown()
            self.store.close()
            self.files.remove()
            logger.info("daemon stopped")

    def _write_state(self) -> None:
        """Rewrite the pid file with the current worker pids (``stop`` may have to kill them)."""
        try:
            self.files.write(
                pid=os.getpid(),
                state=self._phase,
                db=self.store.location if self.store is not None else "",
                workers=[s.process.pid for s in self.workers if s.process is not None],
                slots=self.slots,
            )
        except OSError as exc:  # e.g. a full disk: the daemon runs on, the file is rewritten later
            self._log.problem("pid file", f"cannot write the pid file: {exc}")
        else:
            self._log.solved("pid file", "the pid file is written again")

    def _spawn(self, slot: _WorkerSlot) -> None:
        slot.generation += 1
        slot.worker_id = f"worker:{self.host}:{os.getpid()}:{slot.index}.{slot.generation}"
        db_argv, environment = db_arguments(self.db)
        try:
            log = self.files.open_log()
        except OSError as exc:
            log = None
            self._log.problem("log file", f"cannot open the log file: {exc}; workers log nowhere")
        try:
            slot.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "miniengine.daemon.worker_process",
                    *db_argv,
                    "--slots",
                    str(self.slots),
                    "--lease-timeout",
                    str(self.lease_timeout),
                    "--stop-timeout",
                    str(self.stop_timeout),
                    "--max-attempts",
                    str(self.max_attempts),
                    "--worker-id",
                    slot.worker_id,
                    "--supervisor-pid",
                    str(os.getpid()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log if log is not None else subprocess.DEVNULL,
                env=environment,
            )
        except OSError as exc:  # no memory or no process left: try again with backoff
            self._log.problem("spawn", f"cannot start worker {slot.worker_id}: {exc}")
            slot.process = None
            slot.restart_at = time.monotonic() + BACKOFF[min(slot.crashes, len(BACKOFF) - 1)]
            slot.crashes += 1
            return
        finally:
            if log is not None:
                log.close()
        slot.started = time.monotonic()
        slot.ready = False
        slot.buffer = b""
        self._write_state()
        logger.info("started worker %s (pid %d)", slot.worker_id, slot.process.pid)

    def _watch(self, timeout: float) -> None:
        """Read READY lines, reap exited workers, restart the ones due."""
        pipes = {
            slot.process.stdout.fileno(): slot
            for slot in self.workers
            if slot.process is not None and slot.process.stdout is not None and not slot.ready
        }
        if pipes:
            try:
                readable, _, _ = select.select(list(pipes), [], [], timeout)
            except InterruptedError:
                readable = []
            for fd in readable:
                slot = pipes[fd]
                chunk = os.read(fd, 4096)
                slot.buffer += chunk
                if b"READY" in slot.buffer:
                    slot.ready = True
                    logger.info("worker %s is ready", slot.worker_id)
        else:
            time.sleep(timeout)
        now = time.monotonic()
        for slot in list(self.workers):
            process = slot.process
            if process is not None and process.poll() is not None:
                self._reaped(slot, process.returncode)
            if (
                slot.process is None
                and not slot.retiring
                and not self._stop
                and now >= slot.restart_at
            ):
                self._spawn(slot)
        self.workers = [s for s in self.workers if not (s.retiring and s.process is None)]

    def _reaped(self, slot: _WorkerSlot, code: int) -> None:
        self._unreleased.append(slot.worker_id)
        released = self._release_dead()
        if slot.process is not None and slot.process.stdout is not None:
            slot.process.stdout.close()
        slot.process = None
        was_ready, slot.ready = slot.ready, False
        self._write_state()
        if slot.retiring or self._stop:
            logger.info("worker %s stopped (exit %s)", slot.worker_id, code)
            return
        if time.monotonic() - slot.started > HEALTHY_AFTER:
            slot.crashes = 0
        delay = BACKOFF[min(slot.crashes, len(BACKOFF) - 1)]
        if was_ready and code < 0:
            delay = min(delay, KILLED_WHEN_READY_DELAY)
        slot.crashes += 1
        slot.restart_at = time.monotonic() + delay
        if released is None:
            logger.warning(
                "worker %s exited with %s; its tasks and processes are released once the "
                "database can be written; restarting in %.1f s",
                slot.worker_id,
                code,
                delay,
            )
            return
        tasks, processes, recovered = released
        logger.warning(
            "worker %s exited with %s; released %s tasks and %s processes, recovery %s; "
            "restarting in %.1f s",
            slot.worker_id,
            code,
            tasks,
            processes,
            recovered._asdict(),
            delay,
        )

    def _forget_dead_of_this_host(self) -> None:
        """Remove the rows of this host's workers that died with no supervisor left to do so
        (the whole daemon was SIGKILLed, the machine rebooted): otherwise ``daemon status``
        lists them as silent forever.  What they held is recovered once their leases run out,
        as for any dead owner.

        Only a row that names this host, whose process is gone here and that has been silent
        for :data:`SILENT_AFTER` is removed, and only if it is still that silent when removed.
        A live worker on another machine that happens to share the host name keeps its leases
        whatever happens to its row: removing it is never more than cosmetic.
        """
        assert self.store is not None
        if time.monotonic() < self._next_forget:
            return
        self._next_forget = time.monotonic() + FORGET_EVERY
        ours = {slot.worker_id for slot in self.workers}
        silent_since = time.time() - SILENT_AFTER
        try:
            for row in self.store.broker.workers():
                if (
                    row.host == self.host
                    and row.id not in ours
                    and row.heartbeat < silent_since
                    and not process_alive(row.pid)
                    and self.store.broker.forget_worker.within(WRITE_PATIENCE, row.id, silent_since)
                ):
                    logger.info(
                        "forgot worker %s (pid %s) of this host: it is gone", row.id, row.pid
                    )
        except MiniengineError:
            return  # the database is away or locked: the next round looks again

    def _release_dead(self) -> tuple[int, int, RecoveryCounts] | None:
        """Release what the dead workers held, so that their processes continue elsewhere at
        once; the counts (tasks, processes, recovery) when all of it is done, else None.

        A write that fails (another program holds the write lock, the disk is full) is tried
        again every :data:`RELEASE_RETRY` seconds from the main loop, and reported once per
        :data:`LOG_EVERY`; meanwhile the leases would expire anyway, and live workers recover
        them.
        """
        assert self.store is not None
        if not self._unreleased or time.monotonic() < self._next_release:
            return None
        tasks = processes = 0
        try:
            while self._unreleased:
                owner = self._unreleased[0]
                released = self.store.broker.release_owner.within(WRITE_PATIENCE, owner)
                tasks, processes = tasks + released.tasks, processes + released.processes
                self._unreleased.pop(0)
                if "release" in self._log:
                    logger.info(
                        "released the %s tasks and %s processes of dead worker %s",
                        *released,
                        owner,
                    )
            recovered = self.store.broker.recover_expired.within(WRITE_PATIENCE, time.time())
        except MiniengineError as exc:
            self._next_release = time.monotonic() + RELEASE_RETRY
            self._log.problem(
                "release",
                f"cannot release the tasks and leases of dead worker(s) "
                f"{', '.join(self._unreleased) or '(recovery only)'}: {exc}; retrying every "
                f"{RELEASE_RETRY:g} s",
            )
            return None
        self._log.solved("release", "the database can be written again")
        return tasks, processes, recovered

    def _resize(self) -> None:
        while self._grow > 0:
            self._grow -= 1
            slot = _WorkerSlot(self._next_index)
            self._next_index += 1
            self.workers.append(slot)
            self._spawn(slot)
        while self._grow < 0:
            self._grow += 1
            live = [s for s in self.workers if not s.retiring]
            if len(live) <= 1:
                logger.warning("decr: the daemon keeps at least one worker")
                continue
            slot = live[-1]
            slot.retiring = True
            if slot.process is not None:
                slot.process.send_signal(signal.SIGTERM)

    def _check_heartbeats(self) -> None:
        """SIGKILL a worker whose heartbeat is older than the lease timeout (e.g. SIGSTOPped)."""
        assert self.store is not None
        now = time.time()
        try:
            beats = self.store.broker.worker_heartbeats()
        except MiniengineError as exc:
            self._log.problem("heartbeats", f"cannot read the workers' heartbeats: {exc}")
            return
        grace = max(self.lease_timeout, 1.0)
        for slot in self.workers:
            if slot.process is None or not slot.ready:
                continue
            beat = beats.get(slot.worker_id)
            if beat is not None and now - beat > grace:
                logger.warning(
                    "worker %s missed its heartbeat for %.1f s: killing it",
                    slot.worker_id,
                    now - beat,
                )
                slot.process.kill()

    def _shutdown(self) -> None:
        self._phase = "stopping"
        live = [s for s in self.workers if s.process is not None]
        for slot in live:
            assert slot.process is not None
            slot.process.send_signal(signal.SIGTERM)
        self._write_state()
        deadline = time.monotonic() + self.stop_timeout + 2
        for slot in live:
            assert slot.process is not None
            try:
                slot.process.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                logger.warning("worker %s did not stop in time: killing it", slot.worker_id)
                slot.process.kill()
                slot.process.wait()
            self._reaped(slot, slot.process.returncode)
        if self._unreleased:
            self._next_release = 0.0
            if self._release_dead() is None:
                logger.warning(
                    "could not release what workers %s held: their leases run out instead",
                    ", ".join(self._unreleased),
                )
