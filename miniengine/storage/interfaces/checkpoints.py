"""The checkpoints concern of a backend (see :mod:`miniengine.storage.interfaces`).

A long-running process (a WorkChain, a CalcJob) lives in the database between its steps: a
lease fenced by an epoch says who runs it, and a checkpoint says where it stands.  This concern
takes and gives back leases, commits a step (state, checkpoint, outputs, reports, children to
start or to wait for) as one transaction, and creates a WorkChain together with its first
checkpoint, so that no process ever exists without what is needed to run it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from miniengine.core.data import Data
    from miniengine.storage.interfaces.provenance import LogEntry, NewProcess, NodeRow
    from miniengine.storage.interfaces.transaction import Transaction

__all__ = [
    "LATER",
    "BeginOutcome",
    "Checkpoints",
    "Claim",
    "Created",
    "MemoKey",
    "StepCommit",
    "StepCommitted",
    "StoredCheckpoint",
]

#: Where a call sits in its caller: (parent pk, step sequence number, call index in the step,
#: fingerprint of the process type and inputs); a replayed step finds its earlier calls by it.
MemoKey = tuple[int, int, int, str]

#: :attr:`Checkpoints.claim_work` could not take the process's lease yet: this worker runs it
#: right now.
LATER = -1


class StoredCheckpoint(NamedTuple):
    """A process's checkpoint as stored: the step sequence number it was written at, and the
    encoded state."""

    seq: int
    data: bytes


@dataclass
class StepCommit:
    """What one WorkChain step writes when it ends."""

    pk: int
    owner: str
    epoch: int
    process_state: str
    process_status: str | None
    seq: int
    checkpoint: bytes
    outputs: Sequence[tuple[str, Data]] = ()
    logs: Sequence[LogEntry] = field(default_factory=list)
    #: daemon mode: children created during the step, enqueued by this commit (the outbox)
    start_children: Sequence[int] = ()
    #: daemon mode: the children to wait for; the process is evicted (its lease released)
    wait_for: Sequence[int] | None = None
    #: daemon mode: the task that ran this step, acknowledged when the process is evicted
    #: (its count of attempts is reset: the step made progress)
    task_pk: int | None = None


class StepCommitted(NamedTuple):
    """What a step commit answers: the pks of the outputs it stored, and whether the process
    was paused meanwhile (the step boundary is where a pause takes effect)."""

    output_pks: list[int]
    paused: bool


class Claim(NamedTuple):
    """One task leased by :attr:`Checkpoints.claim_work`."""

    task_pk: int
    process_pk: int
    #: the new lease epoch; ``None``: the task was dropped; :data:`LATER`: claim it later
    epoch: int | None
    #: the task's earlier workers died holding it: run it alone, claim nothing else meanwhile
    alone: bool = False


class Created(NamedTuple):
    """A process node just created: its pk and the pks of its inputs, in the order given."""

    pk: int
    input_pks: list[int]


class BeginOutcome(NamedTuple):
    """A call begun under a memo key (``store.provenance.begin_memoised``).

    ``outcome`` is ``"new"``; ``"finished"`` when the same call of the same step already
    finished (reuse its outputs, run nothing); ``"created"`` when it was created but never
    started.  ``input_pks`` is empty unless new."""

    pk: int
    input_pks: list[int]
    outcome: str


class Checkpoints(Protocol):
    """Leases, step commits and checkpoints of the processes that outlive a step."""

    def read_checkpoint(self, pk: int) -> StoredCheckpoint | None:
        """The last checkpoint of process ``pk``, if it has one."""
        ...

    def read_process(self, pk: int) -> tuple[NodeRow, StoredCheckpoint | None]:
        """The node of process ``pk`` and its last checkpoint, read together: what a worker
        needs to continue a process it claimed (one round trip on a database server).
        ``NotExistent`` if there is no such node."""
        ...

    def read_processes(
        self, pks: Sequence[int]
    ) -> dict[int, tuple[NodeRow, StoredCheckpoint | None]]:
        """:meth:`read_process` for each of ``pks`` that exists (the others are left out), in
        one query: a worker reads the processes of a claim together."""
        ...

    @property
    def step_commit(self) -> Transaction[[StepCommit], StepCommitted]:
        """Write a step's state, checkpoint, outputs, logs and outbox, fenced by the epoch."""
        ...

    @property
    def write_checkpoint(self) -> Transaction[[int, int, bytes], None]:
        """Replace the checkpoint of ``(pk, seq, data)`` (no fencing: for a process just made)."""
        ...

    @property
    def claim_process(self) -> Transaction[[int, str, float, str], int]:
        """Take the lease of ``(pk, owner, expires, state)`` if free, expired or already the
        owner's, setting its state; return the new epoch (fencing off any previous owner).
        ``LeaseLostError`` says why not."""
        ...

    @property
    def claim_task_process(self) -> Transaction[[int, int, str, float], int | None]:
        """Take the lease of ``(task_pk, process_pk, owner, expires)``'s process; ``None`` (the
        task acknowledged) when there is nothing to run: terminated, held by another live
        owner, paused, or killed here by a kill request that waited for it."""
        ...

    @property
    def claim_work(self) -> Transaction[[str, int, float, float, bool, int], list[Claim]]:
        """Lease up to ``limit`` ready tasks and their processes, for ``(owner, limit, expires,
        now, idle, max_attempts)``; ``idle``: the worker runs nothing, so it may take a suspect
        task alone."""
        ...

    @property
    def release_process(self) -> Transaction[[int, str, int, int | None], None]:
        """Give a live process ``(pk, owner, epoch, task_pk)`` back to the queue at its
        checkpoint (pause in daemon mode, worker shutdown): lease freed, task ready again."""
        ...

    @property
    def take_pause_request(self) -> Transaction[[int], None]:
        """Consume a pending pause request of a process that is pausing now (run mode)."""
        ...

    @property
    def kill_unstarted(self) -> Transaction[[int, str], None]:
        """Record ``(pk, message)``: a CREATED process killed before anything ran it."""
        ...

    @property
    def except_unless_owned(self) -> Transaction[[int, str, str], None]:
        """Mark ``(pk, owner, message)`` EXCEPTED, taking its lease first, so that a process
        that a live owner holds is refused (``LeaseLostError``) and left alone."""
        ...

    @property
    def end_calls_not_replayed(self) -> Transaction[[int, int], int]:
        """After ``(parent_pk, seq)`` was resumed from its checkpoint of step ``seq`` and its run
        ended: end the calls its cut-off attempt made after that checkpoint that the replay
        did not make again.  Returns how many."""
        ...

    @property
    def create_workchain(
        self,
    ) -> Transaction[[NewProcess, str, dict[str, Any], bool, MemoKey | None], Created]:
        """Create a WorkChain ``(new, class_path, inputs, enqueue, memo)`` as CREATED with its
        inputs and first checkpoint and, with ``enqueue``, its start task for the daemon: one
        transaction.  With ``memo``, a child that a replayed step already created (and nothing
        started) is reused instead of duplicated."""
        ...

    def fingerprint(self, process_type: str, inputs: Sequence[tuple[str, Data]]) -> str:
        """A digest of a call (the process and its inputs), the last part of its memo key."""
        ...
