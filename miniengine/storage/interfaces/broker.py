"""The broker concern of a backend (see :mod:`miniengine.storage.interfaces`).

Tasks go ``ready`` -> ``leased`` -> ``done``.  Each carries a dedup key (``start:<pk>``,
``wake:<pk>:<seq>``, ``recover:<pk>:<epoch>``), so enqueueing the same work twice is a no-op,
and a task for a process that has already terminated is acknowledged without running anything.
Workers register themselves with a heartbeat, so that a supervisor can see a wedged one, and
whoever finds a dead owner's leases expired re-queues its work (``recover_expired``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from miniengine.storage.interfaces.read import Read
from miniengine.storage.interfaces.transaction import Transaction

__all__ = [
    "ACTIVE_STATES",
    "MAX_ATTEMPTS",
    "SUSPECT_AFTER",
    "Broker",
    "QueueDepth",
    "RecoveryCounts",
    "Released",
    "TaskClaim",
    "WorkerRow",
]

#: The process states of a live process (one that a task may still run).
ACTIVE_STATES = ("created", "running", "waiting")

#: Claims of a task in a row that ended with the death of its worker, after which it is run
#: alone (by a worker that holds nothing else).
SUSPECT_AFTER = 2

#: Claims of a task in a row that ended with the death of its worker, after which its process
#: is EXCEPTED instead of claimed again (a worker's ``max_attempts``).  High, as DBOS's and
#: Temporal's defaults are: a worker killed from outside (an OOM killer, an operator, a crashed
#: node) while it runs a long step is not the step's fault, and only a run of deaths this long
#: with the task held alone is taken as proof that the task itself ends the interpreter.
MAX_ATTEMPTS = 20


class TaskClaim(NamedTuple):
    """A task leased by :attr:`Broker.claim_tasks` (the lease of its process is not taken)."""

    task_pk: int
    process_pk: int
    #: claims since the process last made progress (each ended with its worker's death)
    attempts: int


class Released(NamedTuple):
    """What :attr:`Broker.release_owner` freed of a dead owner."""

    tasks: int
    processes: int


class RecoveryCounts(NamedTuple):
    """What one :attr:`Broker.recover_expired` repaired."""

    #: leased tasks whose lease expired, ready again
    requeued: int
    #: submitted processes of a dead owner given a task to continue elsewhere
    recovered: int
    #: run-mode processes of a dead script, EXCEPTED
    excepted: int


class QueueDepth(NamedTuple):
    """Tasks waiting for a worker (``ready`` now) and tasks being run (``leased``)."""

    ready: int
    leased: int


#: A worker whose last heartbeat is older than this (seconds) is silent: its host may be down.
SILENT_AFTER = 60.0


class WorkerRow(NamedTuple):
    """A registered daemon worker, as ``daemon status`` shows it."""

    id: str
    pid: int
    slots: int
    #: tasks it holds now
    busy: int
    #: when it last renewed its leases (``time.time()``)
    heartbeat: float
    #: the host it runs on (``$MINIENGINE_HOST`` or the hostname; empty if registered before
    #: hosts were recorded)
    host: str = ""


class Broker(Protocol):
    """The task queue, the leases of workers and their tasks, and waking waiting parents.

    Times (``now``, ``expires``, ``not_before``) are ``time.time()`` values passed in by the
    caller, so that one transition uses one clock reading throughout.
    """

    # tasks ------------------------------------------------------------------------------------

    @property
    def enqueue(self) -> Transaction[[int, str, float], bool]:
        """``(process pk, dedup key, now[, not before])``: add a ready task unless one with the
        same key exists; True when it was added."""
        ...

    @property
    def ack(self) -> Transaction[[int], None]:
        """``(task pk)``: the task is done."""
        ...

    @property
    def claim_tasks(self) -> Transaction[[str, int, float, float, bool], list[TaskClaim]]:
        """``(worker, limit, expires, now, idle)``: lease up to ``limit`` ready tasks, oldest
        first.  A task whose earlier workers all died holding it is leased alone, and only by
        an ``idle`` worker, so that nothing else dies with it again.  (A worker claims through
        ``Checkpoints.claim_work``, which also takes the leases of the processes.)"""
        ...

    @property
    def give_up(self) -> Transaction[[int, int, str, int, float], bool]:
        """``(task pk, process pk, worker, attempts, now)``: end the process of a task whose
        workers all died holding it as EXCEPTED, unless another live owner holds it; True when
        it was excepted."""
        ...

    @property
    def give_back(self) -> Transaction[[int, int, str, float], None]:
        """``(task pk, process pk, worker, not before)``: a worker could not finish a task; it
        is ready again from ``not before``, with the process's lease if the worker holds it."""
        ...

    # waiting parents --------------------------------------------------------------------------

    @property
    def wait_for_children(self) -> Transaction[[int, int, Sequence[int], float], int]:
        """``(parent pk, seq, children, now)``: record that the parent waits for the children;
        how many still run (at none its continuation is enqueued at once)."""
        ...

    @property
    def notify_parents(self) -> Transaction[[int, float], None]:
        """``(child pk, now)``: a process terminated: wake the parents it was the last of."""
        ...

    @property
    def terminate_unowned(self) -> Transaction[[int, str, str, float], None]:
        """``(pk, "excepted" | "killed", message, now)``: end a process nobody holds, with its
        tasks, checkpoint and waits, notifying the parents waiting for it."""
        ...

    # dead owners ------------------------------------------------------------------------------

    @property
    def release_owner(self) -> Transaction[[str], Released]:
        """``(owner)``: free everything a dead owner held at once (its tasks become ready, its
        processes' leases expire now) and forget it as a worker."""
        ...

    @property
    def forget_worker(self) -> Transaction[[str, float], bool]:
        """``(worker, silent_since)``: remove the row of a worker whose last heartbeat is older
        than ``silent_since`` (dead), leaving what it held to recovery once its leases run out;
        False if it beat since (it lives)."""
        ...

    @property
    def recover_expired(self) -> Transaction[[float], RecoveryCounts]:
        """``(now)``: repair what owners whose leases expired left behind: their tasks become
        ready again, their submitted processes continue elsewhere, their run-mode processes
        are EXCEPTED (the script that ran them died)."""
        ...

    @property
    def repair(self) -> Transaction[[bool], list[str]]:
        """``(dry run)``: find inconsistencies between the queue and the processes (from files
        copied or edited by hand) and fix them unless ``dry run``; one sentence per finding."""
        ...

    # workers ----------------------------------------------------------------------------------

    @property
    def register_worker(self) -> Transaction[[str, int, int, float, str], None]:
        """``(worker id, pid, slots, now, host)``: a worker started on ``host`` (it heartbeats
        from now on)."""
        ...

    def renew_on_heartbeat(self, worker: str, busy: Callable[[], int]) -> None:
        """From now on this backend's heartbeat also renews the leases of the tasks ``worker``
        holds and records the worker's heartbeat with ``busy()`` processes, in the same
        transaction as the leases of its processes."""
        ...

    def worker_heartbeats(self) -> dict[str, float]:
        """Each registered worker's last heartbeat (``time.time()``)."""
        ...

    def workers(self) -> list[WorkerRow]:
        """The registered workers, oldest first."""
        ...

    @property
    def runs_alone(self) -> Read[[int, str], bool]:
        """``(task_pk, worker)``: whether ``worker`` still holds ``task_pk`` without progress (it
        runs it alone)."""
        ...

    # the queue --------------------------------------------------------------------------------

    @property
    def has_ready_task(self) -> Read[[float], bool]:
        """``(now)``: whether any task is ready to be claimed (cheap: a worker asks before
        claiming)."""
        ...

    def queue_depth(self) -> QueueDepth:
        """How many tasks are ready now and how many are leased."""
        ...
