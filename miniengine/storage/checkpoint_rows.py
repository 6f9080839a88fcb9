"""The SQL of long-running processes: claiming a lease, committing a step, reading a checkpoint.

A step's commit is one transaction: the process's state and status, the checkpoint, the outputs
the step attached (stored if needed, with their RETURN links) and the reports it made, all fenced
by the lease epoch.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from miniengine.core.checkpoint import Checkpoint, with_refs
from miniengine.core.data import Data
from miniengine.exceptions import LeaseLostError
from miniengine.storage import broker_rows, control_rows
from miniengine.storage.interfaces.calcjobs import CalcJobCommit
from miniengine.storage.interfaces.checkpoints import (
    LATER,
    BeginOutcome,
    Claim,
    Created,
    MemoKey,
    StepCommit,
    StepCommitted,
    StoredCheckpoint,
)
from miniengine.storage.interfaces.provenance import NodeRow
from miniengine.storage.rows import (
    NODE_COLUMNS,
    SQL_INTEGERS,
    NewProcess,
    begin_process_of_checked_parent,
    begin_process_tx,
    check_lease,
    insert_new_data,
    log_rows,
    pack_attributes,
    read_node_row,
)

__all__ = [
    "LATER",
    "Claim",
    "StepCommit",
    "claim_process_tx",
    "create_workchain_tx",
    "read_checkpoint",
    "step_commit_tx",
]


def claim_process_tx(
    connection: sqlite3.Connection, pk: int, owner: str, expires: float, state: str
) -> int:
    """Take the lease of process ``pk`` (free, expired, or already ours): return the new epoch.

    Bumping the epoch fences off any previous owner: its next write fails whole.
    """
    now = time.time()
    row = connection.execute(
        "UPDATE nodes SET owner = ?, lease_epoch = lease_epoch + 1, lease_expires = ?, "
        "process_state = ?, mtime = ? "
        "WHERE pk = ? AND process_state IN ('created', 'running', 'waiting') "
        "AND (owner IS NULL OR owner = ? OR lease_expires < ?) RETURNING lease_epoch",
        (owner, expires, state, now, pk, owner, now),
    ).fetchone()
    if row is None:
        current = connection.execute(
            "SELECT process_state, owner, lease_expires FROM nodes WHERE pk = ?", (pk,)
        ).fetchone()
        if current is None:
            raise LeaseLostError(f"there is no process with pk {pk}")
        state_now, holder, until = current
        if state_now not in ("created", "running", "waiting"):
            raise LeaseLostError(f"process {pk} has already terminated ({state_now})")
        raise LeaseLostError(
            f"process {pk} is owned by {holder} until {time.ctime(until) if until else '?'}"
        )
    return int(row[0])


def write_progress(
    connection: sqlite3.Connection,
    commit: StepCommit | CalcJobCommit,
    link_type: str,
    now: float,
) -> list[int]:
    """What a WorkChain's step commit and a CalcJob's stage commit both write, fenced by the
    lease epoch: the state and status (a paused process keeps its status), the new outputs
    with ``link_type`` links, the logs and the checkpoint; and, as progress, the task no longer
    counts as one that killed its workers (no page is written unless it did).  Returns the
    output pks."""
    cursor = connection.execute(
        "UPDATE nodes SET process_state = ?, mtime = ?, process_status = CASE WHEN paused "
        "THEN process_status ELSE ? END WHERE pk = ? AND owner = ? AND lease_epoch = ?",
        (commit.process_state, now, commit.process_status, commit.pk, commit.owner, commit.epoch),
    )
    if cursor.rowcount != 1:
        check_lease(connection, commit.pk, commit.owner, commit.epoch)
    # Most steps return no output and log nothing: an ``executemany`` of no rows still looks
    # its statement up and resets it (~5 k instructions each, two per step otherwise).
    output_pks: list[int] = []
    if commit.outputs:
        output_pks = insert_new_data(connection, (data for _, data in commit.outputs), now)
        connection.executemany(
            "INSERT INTO links (in_pk, out_pk, link_type, label) VALUES (?, ?, ?, ?)",
            [
                (commit.pk, out_pk, link_type, label)
                for out_pk, (label, _) in zip(output_pks, commit.outputs, strict=True)
            ],
        )
    if commit.logs:
        connection.executemany(
            "INSERT INTO logs (node_pk, time, levelname, message) VALUES (?, ?, ?, ?)",
            log_rows(commit.pk, commit.logs, now),
        )
    write_checkpoint(connection, commit.pk, commit.seq, commit.checkpoint)
    if commit.task_pk is not None:
        connection.execute(
            "UPDATE tasks SET attempts = 0 WHERE pk = ? AND attempts > 1", (commit.task_pk,)
        )
    return output_pks


def evict(connection: sqlite3.Connection, pk: int, task_pk: int | None) -> None:
    """Free the lease of a process that waits (children, its scheduler job, a pause) and
    acknowledge the task that ran it: it holds no slot until something enqueues it again."""
    connection.execute("UPDATE nodes SET owner = NULL, lease_expires = NULL WHERE pk = ?", (pk,))
    if task_pk is not None:
        broker_rows.ack_task(connection, task_pk)


def is_paused(connection: sqlite3.Connection, pk: int) -> bool:
    """Whether the process has been paused (read at the end of a commit: the boundary where a
    pause takes effect, so the answer comes with the commit)."""
    paused = connection.execute("SELECT paused FROM nodes WHERE pk = ?", (pk,)).fetchone()
    return bool(paused and paused[0])


def step_commit_tx(connection: sqlite3.Connection, commit: StepCommit) -> StepCommitted:
    """Write a step's state, checkpoint, outputs and logs (fenced); start the children it
    submitted; evict it if it waits for children.

    Returns the output pks and whether the process has been paused meanwhile.
    """
    now = time.time()
    output_pks = write_progress(connection, commit, "return", now)
    for child in commit.start_children:
        broker_rows.enqueue(connection, child, f"start:{child}", now)
    if commit.wait_for is not None:
        evict(connection, commit.pk, commit.task_pk)
        broker_rows.wait_for_children(connection, commit.pk, commit.seq, commit.wait_for, now)
    return StepCommitted(output_pks, is_paused(connection, commit.pk))


def write_checkpoint(connection: sqlite3.Connection, pk: int, seq: int, blob: bytes) -> None:
    connection.execute(
        "INSERT INTO checkpoints (node_pk, seq, data) VALUES (?, ?, ?) "
        "ON CONFLICT (node_pk) DO UPDATE SET seq = excluded.seq, data = excluded.data",
        (pk, seq, blob),
    )


def release_process_tx(connection: sqlite3.Connection, pk: int, owner: str, epoch: int,
                       task_pk: int | None) -> None:  # fmt: skip
    """Give a live process back to the queue (a worker shutting down): lease freed, task ready."""
    now = time.time()
    cursor = connection.execute(
        "UPDATE nodes SET owner = NULL, lease_expires = NULL, mtime = ?, control = CASE WHEN "
        "control = 'pause' THEN NULL ELSE control END "
        "WHERE pk = ? AND owner = ? AND lease_epoch = ?",
        (now, pk, owner, epoch),
    )
    if cursor.rowcount != 1:
        check_lease(connection, pk, owner, epoch)
    if task_pk is not None:
        connection.execute(
            "UPDATE tasks SET status = 'ready', worker = NULL, lease_expires = NULL, "
            "attempts = 0 WHERE pk = ?",
            (task_pk,),
        )
    else:
        broker_rows.enqueue(connection, pk, f"recover:{pk}:{epoch}", now)


#: What a claim reads of a process, in one statement: the columns :func:`claim_task_process_tx`
#: decides on.
_CLAIM_ROW = "SELECT process_state, owner, lease_expires, paused, control FROM nodes WHERE pk = ?"


def claim_task_process_tx(connection: sqlite3.Connection, task_pk: int, process_pk: int,
                          owner: str, expires: float) -> int | None:  # fmt: skip
    """Take the lease of the task's process; ``None`` (task acknowledged) if there is nothing
    to run: the process terminated, or another live owner holds it (a duplicate task), or it
    is paused, or a kill request was waiting for it (it is killed here, in the database)."""
    row = connection.execute(_CLAIM_ROW, (process_pk,)).fetchone()
    return _claim_task_process(connection, task_pk, process_pk, owner, expires, row)


def _claim_task_process(connection: sqlite3.Connection, task_pk: int, process_pk: int,
                        owner: str, expires: float,
                        row: tuple[Any, ...] | None) -> int | None:  # fmt: skip
    """:func:`claim_task_process_tx` with the process's :data:`_CLAIM_ROW`, read in this
    transaction (``None``: there is no such process)."""
    now = time.time()
    if (
        row is None
        or row[0] not in broker_rows.ACTIVE_STATES
        or (row[1] is not None and row[1] != owner and (row[2] or 0) >= now)
        or control_rows.honour_kill_request(connection, process_pk, row[4], now)  # killed here
    ):
        broker_rows.ack_task(connection, task_pk)
        return None
    if row[3]:  # paused: it holds no lease and no slot; play() enqueues it again
        evict(connection, process_pk, task_pk)
        return None
    return claim_process_tx(connection, process_pk, owner, expires, "running")


def read_checkpoint(connection: sqlite3.Connection, pk: int) -> StoredCheckpoint | None:
    row = connection.execute(
        "SELECT seq, data FROM checkpoints WHERE node_pk = ?", (pk,)
    ).fetchone()
    return StoredCheckpoint(int(row[0]), bytes(row[1])) if row else None


def read_process(
    connection: sqlite3.Connection, pk: int
) -> tuple[NodeRow, StoredCheckpoint | None]:
    """A process's node and its last checkpoint (two lookups of the local file)."""
    return read_node_row(connection, pk), read_checkpoint(connection, pk)


def read_processes(
    connection: sqlite3.Connection, pks: Sequence[int]
) -> dict[int, tuple[NodeRow, StoredCheckpoint | None]]:
    """:func:`read_process` for each of ``pks`` that exists, in one query: what a worker needs
    to continue the processes of a claim."""
    wanted = [pk for pk in dict.fromkeys(pks) if pk in SQL_INTEGERS]
    found: dict[int, tuple[NodeRow, StoredCheckpoint | None]] = {}
    for start in range(0, len(wanted), _PKS_PER_QUERY):
        chunk = wanted[start : start + _PKS_PER_QUERY]
        for *node, seq, data in connection.execute(
            f"SELECT {NODE_COLUMNS}, c.seq, c.data FROM nodes "
            "LEFT JOIN checkpoints c ON c.node_pk = nodes.pk "
            f"WHERE nodes.pk IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            checkpoint = StoredCheckpoint(int(seq), bytes(data)) if data is not None else None
            found[node[0]] = (NodeRow._make(node), checkpoint)
    return found


#: Parameters per query of :func:`read_processes` (sqlite allows 32,766 in a statement).
_PKS_PER_QUERY = 1000


def begin_memoised_tx(
    connection: sqlite3.Connection,
    new: NewProcess,
    memo: MemoKey,
) -> BeginOutcome:
    """Create a child process, unless a replayed step already created it.

    ``memo`` is (parent pk, step sequence number, call index in the step, input fingerprint).
    Returns ``(pk, input pks, outcome)`` with outcome ``"new"``; ``"finished"`` when the same
    call of the same step already finished (reuse its outputs, run nothing); ``"created"`` when
    it was created but never started (a ``self.submit`` child of a step cut off before its
    commit).  An unfinished child left by the cut-off step is marked EXCEPTED ("owner lost"),
    with whatever it called inline, and the call runs fresh: zero orphans, zero duplicate
    finished children.  That holds when the replay calls with other inputs too: the old child
    is not reused then, but nobody else would ever end it.
    """
    parent_pk, seq, index, fingerprint = memo
    if new.parent is not None:
        check_lease(connection, *new.parent)
    now = time.time()
    row = connection.execute(
        "SELECT m.child_pk, m.process_type, m.fingerprint, n.process_state FROM call_memo m "
        "JOIN nodes n ON n.pk = m.child_pk WHERE m.parent_pk = ? AND m.seq = ? "
        "AND m.call_index = ?",
        (parent_pk, seq, index),
    ).fetchone()
    if row is not None:
        child_pk, process_type, old_fingerprint, state = row
        if process_type == new.process_type and old_fingerprint == fingerprint:
            if state == "finished":
                return BeginOutcome(child_pk, [], "finished")
            if state == "created" and new.process_state == "created":
                return BeginOutcome(child_pk, [], "created")
        if state in broker_rows.ACTIVE_STATES:
            _except_cut_off(connection, child_pk, now)
    pk, input_pks = begin_process_of_checked_parent(connection, new)
    connection.execute(
        "INSERT OR REPLACE INTO call_memo (parent_pk, seq, call_index, process_type, "
        "fingerprint, child_pk) VALUES (?, ?, ?, ?, ?, ?)",
        (parent_pk, seq, index, new.process_type, fingerprint, pk),
    )
    return BeginOutcome(pk, input_pks, "new")


#: How a call that a cut-off step had made ends when that step is replayed.
CUT_OFF_MESSAGE = (
    "owner lost: the step that called this process was cut off (its worker or script died) "
    "and is being replayed"
)


def _except_cut_off(
    connection: sqlite3.Connection, child_pk: int, now: float, message: str = CUT_OFF_MESSAGE
) -> None:
    """Mark a child of a cut-off step EXCEPTED ("owner lost"), and the unfinished processes it
    called inline (not submitted to the daemon), which died with it and can never resume."""
    descendants = connection.execute(
        "WITH RECURSIVE tree(pk) AS (SELECT ? UNION SELECT l.out_pk FROM links l "
        "JOIN tree t ON l.in_pk = t.pk WHERE l.link_type IN ('call_calc', 'call_work')) "
        "SELECT n.pk FROM nodes n JOIN tree t ON n.pk = t.pk WHERE n.pk != ? "
        "AND n.submitted = 0 AND n.process_state IN ('created', 'running', 'waiting')",
        (child_pk, child_pk),
    ).fetchall()
    broker_rows.terminate_unowned(connection, child_pk, "excepted", message, now)
    inner = f"owner lost: it was called by process {child_pk}, which a cut-off step had called"
    for (pk,) in descendants:
        broker_rows.terminate_unowned(connection, pk, "excepted", inner, now)


def end_calls_not_replayed_tx(connection: sqlite3.Connection, parent_pk: int, seq: int) -> int:
    """After ``parent_pk`` was resumed from its checkpoint of step ``seq`` and its run ended: end
    the calls that its cut-off attempt had made after that checkpoint and that the replay did
    not make again (a step that calls less on replay).  Every call the replay made is over by
    then, and the daemon's recovery would end such a call, but after a run-mode resume nobody
    else would.  Returns how many were ended."""
    now = time.time()
    left = connection.execute(
        "SELECT m.child_pk FROM call_memo m JOIN nodes n ON n.pk = m.child_pk "
        "WHERE m.parent_pk = ? AND m.seq > ? AND n.process_state IN ('created', 'running', "
        "'waiting')",
        (parent_pk, seq),
    ).fetchall()
    message = (
        "owner lost: the step that called this process was cut off (its worker or script died) "
        "and its replay did not make this call again"
    )
    for (child_pk,) in left:
        _except_cut_off(connection, child_pk, now, message)
    return len(left)


def fingerprint(process_type: str, inputs: Sequence[tuple[str, Data]]) -> str:
    """A digest of a call: the process and its inputs (stored by pk, unstored by content)."""
    digest = hashlib.blake2b(process_type.encode(), digest_size=16)
    for label, data in inputs:
        digest.update(label.encode())
        if data.pk is not None:
            digest.update(b"#%d" % data.pk)
        else:
            digest.update(data.type_name.encode())
            digest.update(pack_attributes(data._to_attributes()))
    return digest.hexdigest()


def claim_work_tx(
    connection: sqlite3.Connection,
    owner: str,
    limit: int,
    expires: float,
    now: float,
    idle: bool = True,
    max_attempts: int = broker_rows.MAX_ATTEMPTS,
) -> list[Claim]:
    """Lease up to ``limit`` ready tasks and, in the same transaction, their processes.

    Each :class:`Claim` has the new lease epoch, ``None`` when the task was acknowledged and
    dropped (terminated, paused, held by another live owner, or given up after
    ``max_attempts`` claims that each killed a worker), or
    :data:`LATER` when this owner holds the process right now (a duplicate, or a wake-up that
    overtook its own eviction): the worker claims it once that run has ended.  ``idle`` says
    that the worker runs nothing, so it may take a suspect task alone.
    """
    claimed = broker_rows.claim_tasks_tx(connection, owner, limit, expires, now, idle)
    result: list[Claim] = []
    for task_pk, process_pk, attempts in claimed:
        alone = attempts > broker_rows.SUSPECT_AFTER
        if attempts > max_attempts:
            broker_rows.give_up_tx(connection, task_pk, process_pk, owner, attempts, now)
            result.append(Claim(task_pk, process_pk, None))
            continue
        row = connection.execute(_CLAIM_ROW, (process_pk,)).fetchone()
        if row is not None and row[1] == owner and (row[2] or 0) >= now:
            result.append(Claim(task_pk, process_pk, LATER, alone))
            continue
        epoch = _claim_task_process(connection, task_pk, process_pk, owner, expires, row)
        result.append(Claim(task_pk, process_pk, epoch, alone))
    return result


def create_workchain_tx(
    connection: sqlite3.Connection,
    new: NewProcess,
    class_path: str,
    inputs: dict[str, Any],
    enqueue: bool,
    memo: MemoKey | None = None,
) -> Created:
    """Create a WorkChain node (CREATED) with its inputs and its first checkpoint, and, for the
    daemon, its start task: all in one transaction.  With ``memo``, a child that a replayed step
    already created (and nothing started) is reused instead of duplicated."""
    if memo is None:
        pk, input_pks = begin_process_tx(connection, new)
    else:
        pk, input_pks, outcome = begin_memoised_tx(connection, new, memo)
        if outcome != "new":
            return Created(pk, [data.pk for _, data in new.inputs])  # type: ignore[misc]
    fresh = {
        id(data): input_pk
        for (_, data), input_pk in zip(new.inputs, input_pks, strict=True)
        if data.pk is None
    }
    blob = Checkpoint(class_path, with_refs(inputs, fresh)).encode()
    write_checkpoint(connection, pk, 0, blob)
    if enqueue:
        broker_rows.enqueue(connection, pk, f"start:{pk}", time.time())
    return Created(pk, input_pks)


def take_pause_request_tx(connection: sqlite3.Connection, pk: int) -> None:
    """Consume the pending pause request of a process that pauses now (run mode)."""
    connection.execute("UPDATE nodes SET control = NULL WHERE pk = ? AND control = 'pause'", (pk,))


def kill_unstarted_tx(connection: sqlite3.Connection, pk: int, message: str) -> None:
    """Record that a CREATED process was killed before anything ran it."""
    broker_rows.terminate_unowned(connection, pk, "killed", message, time.time())


def except_unless_owned_tx(
    connection: sqlite3.Connection, pk: int, owner: str, message: str
) -> None:
    """Mark a process EXCEPTED with ``message``; taking the lease first refuses
    (``LeaseLostError``) a process that a live owner holds."""
    claim_process_tx(connection, pk, owner, time.time(), "running")
    broker_rows.terminate_unowned(connection, pk, "excepted", message, time.time())
