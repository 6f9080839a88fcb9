"""What every checkpointed process's executor does alike, whatever its kind (WorkChain, CalcJob).

A WorkChain's executor (:mod:`miniengine.runtime.workchain.executor`) and a CalcJob's
(:mod:`miniengine.runtime.calcjob.executor`) differ in what happens between two commits (the
steps of an outline, the stages of an external program); they share everything around that:
the mode the process runs in (:mod:`miniengine.runtime.mode`), control requests (kill at once,
pause at the next boundary), the log lines kept for the next commit, handing the process back
to the queue, the wait of a paused run-mode process, the message of a kill and the terminal
transaction.  :class:`ProcessExecutor` holds that, once; the launchers share :func:`leased`,
:func:`await_lease` and :func:`mark_stored`.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from miniengine.core.exit_code import ExitCode
from miniengine.core.states import ProcessEvent, ProcessState, transition
from miniengine.exceptions import (
    DatabaseLockedError,
    LeaseLostError,
    MiniengineError,
    ProcessKilledError,
)
from miniengine.runtime.context import RunningProcess
from miniengine.runtime.driver import Await, Lifecycle, Write
from miniengine.runtime.mode import Mode
from miniengine.runtime.process_logger import ProcessLogger
from miniengine.storage.interfaces.provenance import FinishProcess, LogEntry
from miniengine.storage.interfaces.transaction import Transaction

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["ProcessExecutor", "await_lease", "kill_status", "leased", "mark_stored"]

_T = TypeVar("_T")

#: The clock that dates reports and log lines: the time of the call, not that of the commit.
clock: Callable[[], float] = time.time

#: Run mode: the longest a paused process waits for a commit before it looks at its node again.
PAUSED_LOOK_AGAIN = 1.0


def kill_status(exc: BaseException, kill_message: str | None) -> str:
    """The status of a process ended by ``exc`` (a kill, Ctrl-C or a cancelled task)."""
    return kill_message or (
        "Killed by Ctrl-C (KeyboardInterrupt)"
        if isinstance(exc, KeyboardInterrupt)
        else f"Killed: {exc}"
        if isinstance(exc, ProcessKilledError) and str(exc)
        else "Killed: the task running it was cancelled"
    )


class ProcessExecutor:
    """The part of a process's executor that does not depend on its kind.

    Subclasses set up the rest of their state and write their own checkpoints; they hand
    ``kind`` (``"workchain"``, ``"calcjob"``) and whether the process's steps can be replayed to
    this constructor, which makes the process reachable by control requests in its mode.
    """

    def __init__(
        self,
        instance: Any,
        store: Backend,
        node: Any,
        epoch: int,
        mode: Mode,
        kind: str,
        *,
        replayable: bool = False,
    ) -> None:
        self.cls = type(instance)
        self.instance = instance
        self.store = store
        self.mode: Mode = mode
        self.tree = mode.tree
        self.task_pk = mode.task_pk
        self.node = node
        self.pk: int = node.pk
        self.epoch = epoch
        self.seq = 0
        self.logs: list[LogEntry] = []
        self.logger: ProcessLogger | None = None  # made on first use of ``get_logger``
        self.kill_message: str | None = None
        self.pause_requested = False
        mode.register(self.pk, self)
        self.process = RunningProcess(
            store,
            self.pk,
            epoch,
            kind,
            self.cls.__name__,
            node=node,
            tree=self.tree,
            replayable=replayable,
        )
        instance._me = self

    # control ----------------------------------------------------------------------------------

    def apply_control(self, control: str, scope: anyio.CancelScope | None) -> bool:
        """A control request from ``miniengine.control``: kill now, or pause at the next
        boundary (a WorkChain's step, a CalcJob's stage)."""
        if control.startswith("kill:"):
            self.kill_message = control[len("kill:") :] or "Killed"
            if scope is not None:
                scope.cancel()
            return True
        if control == "pause":
            self.pause_requested = True
            return True
        return False

    def _stop_if_killed(self) -> None:
        """Let a kill requested while code ran in a thread take effect at the boundary: the
        thread cannot be interrupted, so cancelling the process's scope alone is not enough."""
        if self.kill_message is not None:
            raise ProcessKilledError(self.kill_message)

    def _pause_or_hand_back(self) -> Lifecycle[bool]:
        """At a boundary: a requested pause evicts the process (daemon) or holds it until it is
        played (run mode); a worker's shutdown hands it back.  True if it was evicted."""
        if self.pause_requested:
            self.pause_requested = False
            if self.mode.evicts:  # evicted; play() enqueues it again
                yield self._release()
                return True
            yield Await(self._wait_while_paused)
        if self.mode.hands_back():
            yield self._release()
            return True
        return False

    async def _wait_while_paused(self) -> None:
        """Run mode: hold the process at its boundary until it is played (or killed)."""
        store = self.store
        await store.checkpoints.take_pause_request.aio(self.pk)
        while True:
            marker = store.commit_marker()  # before the look: a later play() changes it
            if not store.provenance.node(self.pk).paused:
                return
            await store.await_commit(marker, PAUSED_LOOK_AGAIN)

    # what the process's code sees ---------------------------------------------------------------

    def log(self, levelname: str, message: str) -> None:
        """Keep a line for the node's log, dated now; it is written with the next commit."""
        self.logs.append((levelname, message, clock()))

    def get_logger(self) -> ProcessLogger:
        if self.logger is None:
            self.logger = ProcessLogger(self.log, self.pk, self.cls.__name__)
        return self.logger

    # writes -------------------------------------------------------------------------------------

    def _release(self) -> Write:
        """Hand the process back to the queue at its checkpoint (pause, worker shutdown)."""
        return Write(
            self.store.checkpoints.release_process,
            self.pk,
            self.store.owner,
            self.epoch,
            self.task_pk,
        )

    def _finish(
        self,
        tx: Transaction[[FinishProcess], list[int]],
        event: ProcessEvent,
        state: ProcessState,
        fields: dict[str, Any],
    ) -> Write:
        """The terminal transaction ``tx``: ``state`` after ``event``, with the kept log lines
        and ``fields`` of :class:`~miniengine.storage.interfaces.provenance.FinishProcess`."""
        finish = FinishProcess(
            pk=self.pk,
            owner=self.store.owner,
            epoch=self.epoch,
            process_state=transition(state, event).value,
            logs=list(self.logs),
            task_pk=self.task_pk,
            **fields,
        )
        return Write(tx, finish)

    def _terminate(self, event: ProcessEvent, state: ProcessState, **fields: Any) -> Write:
        """The process's terminal write (each kind writes its outputs its own way)."""
        raise NotImplementedError

    def _killed(self, exc: BaseException, state: ProcessState, **fields: Any) -> Write:
        """The terminal write of a process that ``exc`` killed, its message in the log."""
        message = kill_status(exc, self.kill_message)
        self.logs.append(("REPORT", message))
        return self._terminate(ProcessEvent.KILL, state, process_status=message, **fields)

    def _excepted(self, exc: BaseException, state: ProcessState, **fields: Any) -> Write:
        """The terminal write of a process that ``exc`` ended, its traceback in the log."""
        formatted = "".join(traceback.format_exception(exc))
        self.logs.append(("ERROR", formatted))
        return self._terminate(ProcessEvent.EXCEPT, state, exception=formatted, **fields)

    def _stop_started(self) -> Lifecycle[None]:
        """Stop what the process started that must not outlive it (a WorkChain's children, a
        CalcJob's scheduler job) before it is written killed."""
        return
        yield

    def _end_killed(
        self, exc: BaseException, state: ProcessState, **fields: Any
    ) -> Lifecycle[None]:
        """Unwind for a kill, Ctrl-C or a cancelled task (the caller raises ``exc`` again): a
        worker that is shutting down, with no kill asked, hands the process back to the queue;
        otherwise what it started is stopped and it is written KILLED."""
        if self.kill_message is None and self.mode.hands_back():
            yield self._release()
            return
        yield from self._stop_started()
        yield self._killed(exc, state, **fields)

    def _write_finish(
        self, state: ProcessState, exit_code: ExitCode, **fields: Any
    ) -> Lifecycle[list[int]]:
        """The terminal write of a process that finished with ``exit_code``: the pks of its new
        outputs.  If it fails, the mode says what that means: in run mode the transaction rolled
        back whole and nobody else would ever end the process, so it is ended here as at any
        other point; in daemon mode the error is raised and the worker hands the task back to be
        run again."""
        write = self._terminate(
            ProcessEvent.FINISH,
            state,
            exit_status=exit_code.status,
            exit_message=exit_code.message,
            **fields,
        )
        try:
            output_pks: list[int] = yield write
            return output_pks
        except (LeaseLostError, DatabaseLockedError, GeneratorExit):
            raise  # not ours to write any more, the file is unusable, or never driven again
        except BaseException as exc:
            if not self.mode.ends_after_failed_finish:
                raise
            yield self._end_after_failed_finish(exc, state)
            raise

    def _end_after_failed_finish(self, exc: BaseException, state: ProcessState) -> Write:
        """Run mode: the terminal write failed and nobody else would end the process; end it
        as it would be ended at any other point."""
        if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
            return self._killed(exc, state)
        return self._excepted(exc, state)


# the launchers' side ----------------------------------------------------------------------------


def leased(store: Backend, lifecycle: Lifecycle[_T]) -> Lifecycle[_T]:
    """Drive ``lifecycle`` while the store counts a lease held (its heartbeat renews it)."""
    store.leases_taken()
    try:
        return (yield from lifecycle)
    finally:
        store.leases_released()


async def await_lease(store: Backend, pk: int, node: Any, timeout: float | None) -> None:
    """Run mode resume: wait until the previous owner's lease on ``node`` expired (at most
    ``timeout`` seconds), so that taking the process over cannot run it twice."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        owner, _, expires = node.lease
        now = time.time()
        if owner is None or owner == store.owner or expires is None or expires < now:
            return
        wait = expires - now + 0.01
        if deadline is not None and time.monotonic() + wait > deadline:
            raise MiniengineError(
                f"process {pk} is still owned by {owner} (lease expires in {expires - now:.1f} s)"
            )
        await anyio.sleep(wait)


def mark_stored(items: Iterable[tuple[str, Any]], pks: list[int], store: Backend) -> None:
    """Give the new Data of ``items`` (label, data) the pks a commit stored them under."""
    for (_, data), pk in zip(items, pks, strict=True):
        if data.pk is None:
            data._set_stored(pk, data.uuid, store)
