"""The calcjobs concern of a backend (see :mod:`miniengine.storage.interfaces`).

A CalcJob's stage commit is one transaction like a WorkChain step's: its state, status, node
attributes (stage, job id, remote folder...), checkpoint, outputs and logs, fenced by the lease
epoch.  The commit that records a job id also records the job as watched, so a job that the
database knows of is always watched; in the daemon it also evicts the process (lease freed,
task acknowledged).  A worker's job watcher leases the jobs of evicted CalcJobs, and when one
ends it marks the job done and enqueues the process's continuation in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from miniengine.storage.interfaces.read import Read
from miniengine.storage.interfaces.transaction import Transaction

if TYPE_CHECKING:
    from miniengine.core.data import Data
    from miniengine.storage.interfaces.checkpoints import MemoKey
    from miniengine.storage.interfaces.provenance import FinishProcess, LogEntry, NewProcess

__all__ = [
    "CALCJOB_TYPE",
    "CalcJobCommit",
    "CalcJobInfo",
    "CalcJobs",
    "CleanableCalcJob",
    "JobRow",
    "JobStateChange",
]

#: The node type of CalcJobs.
CALCJOB_TYPE = "process.calcjob"


@dataclass
class CalcJobCommit:
    """What one CalcJob stage writes when it ends."""

    pk: int
    owner: str
    epoch: int
    process_state: str
    process_status: str | None
    seq: int
    checkpoint: bytes
    attributes: dict[str, Any] = field(default_factory=dict)
    outputs: Sequence[tuple[str, Data]] = ()
    logs: Sequence[LogEntry] = ()
    #: ``(computer uuid, job id)``: the job now with the scheduler, to be watched
    job: tuple[str, str] | None = None
    #: the job has been dealt with (retrieved): it is no longer watched
    drop_job: bool = False
    #: daemon mode: hand the process back (no lease, no slot) until its job is done
    evict: bool = False
    task_pk: int | None = None


class JobRow(NamedTuple):
    """A scheduler job watched for a waiting CalcJob."""

    process_pk: int
    computer_uuid: str
    job_id: str
    done: bool
    scheduler_state: str | None
    detailed_info: Any
    #: the process's state: a terminated one (killed while evicted) has a job to cancel
    process_state: str | None


class JobStateChange(NamedTuple):
    """What the scheduler now says of a job that is still running (queued -> running ...)."""

    process_pk: int
    job_id: str
    #: the scheduler's state (a ``JobState`` value)
    state: str
    #: the process status that ``process list`` shows for it
    status: str


@dataclass(frozen=True)
class CalcJobInfo:
    """A CalcJobNode as the ``calcjob`` and ``process`` commands read it, with its computer."""

    pk: int
    process_state: str | None
    mtime: float
    attributes: dict[str, Any]
    computer_pk: int | None
    computer_label: str | None
    computer_uuid: str | None

    def option(self, name: str) -> Any:
        options = self.attributes.get("options")
        return options.get(name) if isinstance(options, dict) else None

    @property
    def stage(self) -> str | None:
        return _text(self.attributes.get("state"))

    @property
    def job_id(self) -> str | None:
        return _text(self.attributes.get("job_id"))

    @property
    def scheduler_state(self) -> str | None:
        return _text(self.attributes.get("scheduler_state"))

    @property
    def remote_workdir(self) -> str | None:
        return _text(self.attributes.get("remote_workdir"))

    @property
    def input_tree(self) -> dict[str, Any]:
        tree = self.attributes.get("_repository")
        return tree if isinstance(tree, dict) else {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class CleanableCalcJob(NamedTuple):
    """A CalcJob with a remote working folder (``calcjob cleanworkdir``)."""

    pk: int
    process_state: str | None
    remote_folder_pk: int


class CalcJobs(Protocol):
    """What the code above storage may ask about CalcJobs and the scheduler jobs they wait for."""

    # the CalcJob's own transitions ------------------------------------------------------------

    @property
    def create_calcjob(
        self,
    ) -> Transaction[
        [NewProcess, str, Callable[[list[int]], bytes], bool, MemoKey | None],
        tuple[int, list[int]],
    ]:
        """``(new, computer uuid, checkpoint, enqueue, memo)``: the node, its inputs, computer
        and first checkpoint (and, with ``enqueue``, its start task) in one transaction.

        ``checkpoint(input pks)`` builds the first checkpoint once the inputs have pks; a
        memoised child of a replayed step (``memo``) is reused instead.  Returns the pk and the
        input pks."""
        ...

    @property
    def calcjob_commit(self) -> Transaction[[CalcJobCommit], tuple[list[int], bool]]:
        """End a stage; returns the output pks and whether the process was paused meanwhile."""
        ...

    @property
    def stage_status(self) -> Transaction[[int, str, int, str, Sequence[LogEntry]], None]:
        """``(pk, owner, epoch, status, logs)``: what a stage does now (a transport retry and
        its backoff), fenced."""
        ...

    @property
    def pause_stage(self) -> Transaction[[int, str, int, str, bool, int | None], None]:
        """``(pk, owner, epoch, message, release, task pk)``: pause a CalcJob whose transport
        stage kept failing.  With ``release`` (the daemon) its lease is freed and its task
        acknowledged, so it holds no slot until ``play``.  Fenced."""
        ...

    @property
    def finish_calcjob(self) -> Transaction[[FinishProcess], list[int]]:
        """Terminate a CalcJob and forget its job in the same commit; returns the output pks."""
        ...

    def read_job(self, pk: int) -> JobRow | None:
        """The watched job of CalcJob ``pk``, if it has one."""
        ...

    # the job watcher ----------------------------------------------------------------------------

    @property
    def has_unwatched_jobs(self) -> Read[[float], bool]:
        """``(now)``: whether a job waits for a watcher (cheap: the watcher claims only when one
        does)."""
        ...

    @property
    def claim_jobs(self) -> Transaction[[str, float, float], int]:
        """``(owner, lease expiry, now)``: watch every job nobody watches (new, or its watcher's
        lease expired); returns how many were taken."""
        ...

    @property
    def read_watched_jobs(self) -> Read[[str], list[JobRow]]:
        """``(owner)``: the jobs ``owner`` watches that are not known to be done, of unpaused
        processes, grouped by computer."""
        ...

    @property
    def job_states(self) -> Transaction[[str, Sequence[JobStateChange]], None]:
        """``(owner, changes)``: record the scheduler's state of running jobs on the job and its
        node, and their status text, unless paused or taken over meanwhile.  One transaction
        per poll."""
        ...

    @property
    def job_done(self) -> Transaction[[int, str, str, str | None, Any], bool]:
        """``(pk, job id, owner, scheduler state, detailed info)``: the job ended; record it and
        enqueue the process's continuation.  False if another watcher took the job over."""
        ...

    @property
    def pause_watched(self) -> Transaction[[Sequence[int], str], None]:
        """``(pks, message)``: pause evicted CalcJobs whose scheduler could not be asked."""
        ...

    @property
    def drop_job(self) -> Transaction[[int, str], None]:
        """``(pk, owner)``: forget a job its watcher cancelled (its process was killed)."""
        ...

    @property
    def release_jobs(self) -> Transaction[[str], None]:
        """``(owner)``: a watcher stops; whoever claims its jobs next watches them."""
        ...

    def renewing_jobs(self, owner: str) -> AbstractContextManager[None]:
        """While inside, the backend's lease heartbeat also extends the leases of the jobs
        ``owner`` watches (in the heartbeat's transaction: no extra commit)."""
        ...

    # what the command line shows ----------------------------------------------------------------

    def calcjob_info(self, pk: int) -> CalcJobInfo | None:
        """CalcJob ``pk`` with its computer, or None if ``pk`` is not a CalcJob."""
        ...

    def output_tree(self, pk: int, label: str) -> dict[str, Any] | None:
        """The file tree of the output ``label`` (``retrieved``) of ``pk``, None without one."""
        ...

    def active_stages(self, pks: Sequence[int]) -> dict[int, str]:
        """The stage (``uploading``, ``withscheduler``, ...) of each CalcJob among ``pks``."""
        ...

    def cleanable_calcjobs(
        self,
        pks: Sequence[int] | None,
        newer_than: float | None,
        older_than: float | None,
        computers: Sequence[str] | None,
    ) -> list[CleanableCalcJob]:
        """The CalcJobs with a remote folder: those in ``pks`` (all if None), modified after
        ``newer_than`` and before ``older_than`` (epoch seconds), on a computer whose label is
        in ``computers``; oldest first."""
        ...
