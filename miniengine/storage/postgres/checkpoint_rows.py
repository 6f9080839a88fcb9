"""The SQL of long-running processes on PostgreSQL (the port of ``storage/checkpoint_rows.py``).

A step's commit is one transaction: state and status, checkpoint, outputs (stored if needed,
with their RETURN links) and reports, fenced by the lease epoch.  The fence is the ``WHERE owner
= ... AND lease_epoch = ...`` of the first UPDATE: under READ COMMITTED an UPDATE that waited
for a concurrent claim re-checks its condition on the row that claim committed, so a stale
owner's write matches nothing and the transaction is rolled back whole.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from miniengine.core.checkpoint import Checkpoint, with_refs
from miniengine.exceptions import LeaseLostError, NotExistent
from miniengine.storage.checkpoint_rows import CUT_OFF_MESSAGE, fingerprint
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
from miniengine.storage.postgres import broker_rows, control_rows
from miniengine.storage.postgres.clock import SERVER_NOW, lease_seconds
from miniengine.storage.postgres.rows import (
    _ROWS_PER_INSERT,
    Start,
    begin_process_of_checked_parent,
    check_lease,
    executemany,
    insert_new_data,
    insert_process,
)
from miniengine.storage.rows import NODE_COLUMNS, SQL_INTEGERS, log_rows

if TYPE_CHECKING:
    from miniengine.storage.interfaces.provenance import NewProcess
    from miniengine.storage.postgres.rows import Connection

__all__ = [
    "CUT_OFF_MESSAGE",
    "LATER",
    "begin_memoised_tx",
    "claim_process_tx",
    "claim_task_process_tx",
    "claim_work_tx",
    "create_workchain_tx",
    "end_calls_not_replayed_tx",
    "except_unless_owned_tx",
    "fingerprint",
    "is_paused",
    "kill_unstarted_tx",
    "read_checkpoint",
    "release_process_tx",
    "step_commit_tx",
    "take_pause_request_tx",
    "write_checkpoint",
]

_UPSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (node_pk, seq, data) VALUES (%s, %s, %s) "
    "ON CONFLICT (node_pk) DO UPDATE SET seq = excluded.seq, data = excluded.data"
)


def claim_process_tx(
    connection: Connection, pk: int, owner: str, expires: float, state: str
) -> int:
    """Take the lease of process ``pk`` (free, expired, or already ours): return the new epoch.

    Bumping the epoch fences off any previous owner: its next write fails whole.
    """
    now = time.time()
    row = connection.execute(
        "UPDATE nodes SET owner = %s, lease_epoch = lease_epoch + 1, "
        f"lease_expires = {SERVER_NOW} + %s, process_state = %s, mtime = %s "
        "WHERE pk = %s AND process_state IN ('created', 'running', 'waiting') "
        f"AND (owner IS NULL OR owner = %s OR lease_expires < {SERVER_NOW}) RETURNING lease_epoch",
        (owner, lease_seconds(expires, now), state, now, pk, owner),
    ).fetchone()
    if row is None:
        current = connection.execute(
            "SELECT process_state, owner, lease_expires FROM nodes WHERE pk = %s", (pk,)
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
    connection: Connection, commit: StepCommit | CalcJobCommit, link_type: str, now: float
) -> tuple[list[int], bool]:
    """What a WorkChain's step commit and a CalcJob's stage commit both write, fenced by the
    lease epoch: the state and status (a paused process keeps its status), the new outputs
    with ``link_type`` links, the logs and the checkpoint; and, as progress, the task no longer
    counts as one that killed its workers.  Returns the output pks and whether the process has
    been paused meanwhile (from the fenced UPDATE's ``RETURNING``, which holds the row until
    the commit; no later statement of a step's or a stage's commit changes ``paused``)."""
    logs = log_rows(commit.pk, commit.logs, now)
    merged = len(logs) <= _ROWS_PER_INSERT  # (else the logs go in statements of their own)
    shape = (len(logs) if merged else 0, commit.task_pk is not None)
    statement = _PROGRESS.get(shape)
    if statement is None:
        statement = _PROGRESS[shape] = _progress_statement(*shape)
    # the fenced UPDATE, the logs, the checkpoint and the task's progress in one round trip
    # (nothing but the UPDATE's attempt for a fenced-off owner, whose LeaseLostError follows)
    row = connection.execute(
        statement,
        (
            commit.process_state,
            now,
            commit.process_status,
            commit.pk,
            commit.owner,
            commit.epoch,
            *(value for log in (logs if merged else ()) for value in log),
            commit.pk,
            commit.seq,
            commit.checkpoint,
            *(() if commit.task_pk is None else (commit.task_pk,)),
        ),
    ).fetchone()
    if row is None:
        check_lease(connection, commit.pk, commit.owner, commit.epoch)
    if not merged:
        executemany(connection, _INSERT_LOGS, logs)
    output_pks = insert_new_data(connection, (data for _, data in commit.outputs), now)
    executemany(
        connection,
        "INSERT INTO links (in_pk, out_pk, link_type, label) VALUES (%s, %s, %s, %s)",
        [
            (commit.pk, out_pk, link_type, label)
            for out_pk, (label, _) in zip(output_pks, commit.outputs, strict=True)
        ],
    )
    return output_pks, bool(row and row[0])


_INSERT_LOGS = "INSERT INTO logs (node_pk, time, levelname, message) VALUES (%s, %s, %s, %s)"

#: :func:`_progress_statement` by its number of logs and whether it has a task.
_PROGRESS: dict[tuple[int, bool], str] = {}


def _progress_statement(logs: int, task: bool) -> str:
    """:func:`write_progress`'s statement: the fenced UPDATE (its ``RETURNING paused`` is the
    answer, no row when the lease was lost), then, only if it updated the row, ``logs`` log
    rows in order, the checkpoint and, with a ``task``, its count of attempts reset."""
    parts = [
        "fenced AS (UPDATE nodes SET process_state = %s, mtime = %s, process_status = CASE "
        "WHEN paused <> 0 THEN process_status ELSE %s END WHERE pk = %s AND owner = %s "
        "AND lease_epoch = %s RETURNING paused)"
    ]
    if logs:
        values = ", ".join(
            f"(%s::bigint, %s::double precision, %s::text, %s::text, {position})"
            for position in range(logs)
        )
        parts.append(
            "logged AS (INSERT INTO logs (node_pk, time, levelname, message) "
            "SELECT given.node_pk, given.time, given.levelname, given.message FROM fenced, "
            f"(VALUES {values}) AS given(node_pk, time, levelname, message, position) "
            "ORDER BY given.position)"
        )
    parts.append(
        "saved AS (INSERT INTO checkpoints (node_pk, seq, data) "
        "SELECT %s::bigint, %s::bigint, %s::bytea FROM fenced "
        "ON CONFLICT (node_pk) DO UPDATE SET seq = excluded.seq, data = excluded.data)"
    )
    if task:
        parts.append(
            "progress AS (UPDATE tasks SET attempts = 0 WHERE pk = %s AND attempts > 1 "
            "AND EXISTS (SELECT 1 FROM fenced))"
        )
    return f"WITH {', '.join(parts)} SELECT paused FROM fenced"


def evict(connection: Connection, pk: int, task_pk: int | None) -> None:
    """Free the lease of a process that waits (children, its scheduler job, a pause) and
    acknowledge the task that ran it: it holds no slot until something enqueues it again."""
    connection.execute("UPDATE nodes SET owner = NULL, lease_expires = NULL WHERE pk = %s", (pk,))
    if task_pk is not None:
        broker_rows.ack_task(connection, task_pk)


def step_commit_tx(connection: Connection, commit: StepCommit) -> StepCommitted:
    """Write a step's state, checkpoint, outputs and logs (fenced); start the children it
    submitted; evict it if it waits for children.

    Returns the output pks and whether the process has been paused meanwhile.
    """
    now = time.time()
    output_pks, paused = write_progress(connection, commit, "return", now)
    if commit.start_children:  # the outbox: one statement for a fan-out of any size
        connection.execute(
            "INSERT INTO tasks (process_pk, dedup_key, not_before, ctime) "
            "SELECT child, 'start:' || child, 0, %s FROM unnest(%s::bigint[]) "
            "WITH ORDINALITY AS started(child, position) ORDER BY position "
            "ON CONFLICT (dedup_key) DO NOTHING",
            (now, list(commit.start_children)),
        )
    if commit.wait_for is not None:
        evict(connection, commit.pk, commit.task_pk)
        broker_rows.wait_for_children(connection, commit.pk, commit.seq, commit.wait_for, now)
    return StepCommitted(output_pks, paused)


def is_paused(connection: Connection, pk: int) -> bool:
    """Whether the process has been paused.  The commits here learn it from their fenced
    ``UPDATE ... RETURNING paused`` (no extra statement); this is the plain read."""
    paused = connection.execute("SELECT paused FROM nodes WHERE pk = %s", (pk,)).fetchone()
    return bool(paused and paused[0])


def write_checkpoint(connection: Connection, pk: int, seq: int, blob: bytes) -> None:
    connection.execute(_UPSERT_CHECKPOINT, (pk, seq, blob))


def release_process_tx(connection: Connection, pk: int, owner: str, epoch: int,
                       task_pk: int | None) -> None:  # fmt: skip
    """Give a live process back to the queue (a worker shutting down): lease freed, task ready."""
    now = time.time()
    cursor = connection.execute(
        "UPDATE nodes SET owner = NULL, lease_expires = NULL, mtime = %s, control = CASE WHEN "
        "control = 'pause' THEN NULL ELSE control END "
        "WHERE pk = %s AND owner = %s AND lease_epoch = %s",
        (now, pk, owner, epoch),
    )
    if cursor.rowcount != 1:
        check_lease(connection, pk, owner, epoch)
    if task_pk is not None:
        connection.execute(
            "UPDATE tasks SET status = 'ready', worker = NULL, lease_expires = NULL, "
            "attempts = 0 WHERE pk = %s",
            (task_pk,),
        )
    else:
        broker_rows.enqueue(connection, pk, f"recover:{pk}:{epoch}", now)


def claim_task_process_tx(connection: Connection, task_pk: int, process_pk: int,
                          owner: str, expires: float) -> int | None:  # fmt: skip
    """Take the lease of the task's process; ``None`` (task acknowledged) if there is nothing
    to run: the process terminated, or another live owner holds it (a duplicate task), or it
    is paused, or a kill request was waiting for it (it is killed here, in the database).

    The process's row is locked as it is read, so what is decided from it holds until the
    commit (on sqlite the write lock does that).
    """
    now = time.time()
    row = connection.execute(  # the lease's seconds left, on the server's clock
        f"SELECT process_state, owner, lease_expires - {SERVER_NOW}, paused FROM nodes "
        "WHERE pk = %s FOR NO KEY UPDATE",
        (process_pk,),
    ).fetchone()
    if (
        row is None
        or row[0] not in broker_rows.ACTIVE_STATES
        or (row[1] is not None and row[1] != owner and row[2] is not None and row[2] >= 0)
        or control_rows.honour_pending_kill(connection, process_pk, now)  # killed here
    ):
        broker_rows.ack_task(connection, task_pk)
        return None
    if row[3]:  # paused: it holds no lease and no slot; play() enqueues it again
        evict(connection, process_pk, task_pk)
        return None
    return claim_process_tx(connection, process_pk, owner, expires, "running")


def read_checkpoint(connection: Connection, pk: int) -> StoredCheckpoint | None:
    row = connection.execute(
        "SELECT seq, data FROM checkpoints WHERE node_pk = %s", (pk,)
    ).fetchone()
    return StoredCheckpoint(int(row[0]), bytes(row[1])) if row else None


def read_process(connection: Connection, pk: int) -> tuple[NodeRow, StoredCheckpoint | None]:
    """A process's node and its last checkpoint in one statement (one round trip)."""
    found = read_processes(connection, [pk]).get(pk)
    if found is None:
        raise NotExistent(f"no node with the pk {pk}")
    return found


def read_processes(
    connection: Connection, pks: Sequence[int]
) -> dict[int, tuple[NodeRow, StoredCheckpoint | None]]:
    """:func:`read_process` for each of ``pks`` that exists, in one statement: what a worker
    needs to continue the processes of a claim (one round trip for all of them)."""
    found: dict[int, tuple[NodeRow, StoredCheckpoint | None]] = {}
    wanted = [pk for pk in dict.fromkeys(pks) if pk in SQL_INTEGERS]
    if not wanted:
        return found
    for *node, seq, data in connection.execute(
        f"SELECT {NODE_COLUMNS}, c.seq, c.data FROM nodes "
        "LEFT JOIN checkpoints c ON c.node_pk = nodes.pk WHERE nodes.pk = ANY(%s)",
        (wanted,),
    ):
        checkpoint = StoredCheckpoint(int(seq), bytes(data)) if data is not None else None
        found[node[0]] = (NodeRow._make(node), checkpoint)
    return found


def begin_memoised_tx(connection: Connection, new: NewProcess, memo: MemoKey) -> BeginOutcome:
    """Create a child process, unless a replayed step already created it (see the sqlite
    version for the outcomes ``"new"``, ``"finished"`` and ``"created"``)."""
    parent_pk, seq, index, fingerprint = memo
    row: tuple[Any, ...] | None
    if new.parent is not None and new.parent[0] == parent_pk:
        # the parent's lease (its row locked as check_lease does) and the memo in one statement
        found = connection.execute(_LEASE_AND_MEMO, (seq, index, parent_pk)).fetchone()
        if found is None or (found[0], found[1]) != new.parent[1:]:
            check_lease(connection, *new.parent)  # raises, saying why
        assert found is not None
        row = found[2:6] if found[6] is not None else None
    else:
        if new.parent is not None:
            check_lease(connection, *new.parent)
        row = connection.execute(
            "SELECT m.child_pk, m.process_type, m.fingerprint, n.process_state FROM call_memo m "
            "JOIN nodes n ON n.pk = m.child_pk WHERE m.parent_pk = %s AND m.seq = %s "
            "AND m.call_index = %s",
            (parent_pk, seq, index),
        ).fetchone()
    now = time.time()
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
        "INSERT INTO call_memo (parent_pk, seq, call_index, process_type, fingerprint, "
        "child_pk) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (parent_pk, seq, call_index) "
        "DO UPDATE SET process_type = excluded.process_type, "
        "fingerprint = excluded.fingerprint, child_pk = excluded.child_pk",
        (parent_pk, seq, index, new.process_type, fingerprint, pk),
    )
    return BeginOutcome(pk, input_pks, "new")


#: The owner and epoch of a parent, its row locked ``FOR SHARE`` (as :func:`check_lease`
#: does), with the memo of its step's call if there is one (the child's pk is not NULL then).
_LEASE_AND_MEMO = (
    "SELECT p.owner, p.lease_epoch, m.child_pk, m.process_type, m.fingerprint, "
    "n.process_state, n.pk FROM nodes p "
    "LEFT JOIN call_memo m ON m.parent_pk = p.pk AND m.seq = %s AND m.call_index = %s "
    "LEFT JOIN nodes n ON n.pk = m.child_pk WHERE p.pk = %s FOR SHARE OF p"
)


def _except_cut_off(
    connection: Connection, child_pk: int, now: float, message: str = CUT_OFF_MESSAGE
) -> None:
    """Mark a child of a cut-off step EXCEPTED ("owner lost"), and the unfinished processes it
    called inline (not submitted to the daemon), which died with it and can never resume."""
    descendants = connection.execute(
        "WITH RECURSIVE tree(pk) AS (SELECT %s::bigint UNION SELECT l.out_pk FROM links l "
        "JOIN tree t ON l.in_pk = t.pk WHERE l.link_type IN ('call_calc', 'call_work')) "
        "SELECT n.pk FROM nodes n JOIN tree t ON n.pk = t.pk WHERE n.pk <> %s "
        "AND n.submitted = 0 AND n.process_state IN ('created', 'running', 'waiting')",
        (child_pk, child_pk),
    ).fetchall()
    broker_rows.terminate_unowned(connection, child_pk, "excepted", message, now)
    inner = f"owner lost: it was called by process {child_pk}, which a cut-off step had called"
    for (pk,) in descendants:
        broker_rows.terminate_unowned(connection, pk, "excepted", inner, now)


def end_calls_not_replayed_tx(connection: Connection, parent_pk: int, seq: int) -> int:
    """End the calls that ``parent_pk``'s cut-off attempt made after its checkpoint of step
    ``seq`` and that the replay did not make again.  Returns how many were ended."""
    now = time.time()
    left = connection.execute(
        "SELECT m.child_pk FROM call_memo m JOIN nodes n ON n.pk = m.child_pk "
        "WHERE m.parent_pk = %s AND m.seq > %s AND n.process_state IN ('created', 'running', "
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


def claim_work_tx(
    connection: Connection,
    owner: str,
    limit: int,
    expires: float,
    now: float,
    idle: bool = True,
    max_attempts: int = broker_rows.MAX_ATTEMPTS,
) -> list[Claim]:
    """Lease up to ``limit`` ready tasks and, in the same transaction, their processes (see
    the sqlite version for the meaning of a :class:`Claim`'s epoch).

    Every statement is a round trip to the server, so the usual case is done for all the tasks
    at once: their processes' rows are read and locked in one statement, and those that are
    plainly free (active, unowned or with an expired lease, not paused, no kill waiting) are
    leased in one ``UPDATE``.  The others (a process claimed twice in one batch, ours already,
    held elsewhere, terminated, paused, to be killed, or given up) take the path of one task at
    a time, after the batch: as if the batch's tasks had come first in the claim.
    """
    claimed = broker_rows.claim_tasks_tx(connection, owner, limit, expires, now, idle)
    if not claimed:
        return []
    times_claimed = Counter(process_pk for _, process_pk, _ in claimed)
    candidates = [
        process_pk
        for _, process_pk, attempts in claimed
        if attempts <= max_attempts and times_claimed[process_pk] == 1
    ]
    free: set[int] = set()
    if candidates:
        for pk, state, holder, left, paused, control in connection.execute(
            f"SELECT pk, process_state, owner, lease_expires - {SERVER_NOW}, paused, control "
            "FROM nodes WHERE pk = ANY(%s) ORDER BY pk FOR NO KEY UPDATE",
            (candidates,),
        ):
            if (
                state in broker_rows.ACTIVE_STATES
                and (holder is None or (holder != owner and (left is None or left < 0)))
                and not paused
                and not (control is not None and str(control).startswith("kill:"))
            ):
                free.add(int(pk))
    epochs: dict[int, int] = {}
    if free:
        moment = time.time()
        epochs = {
            int(pk): int(epoch)
            for pk, epoch in connection.execute(
                "UPDATE nodes SET owner = %s, lease_epoch = lease_epoch + 1, "
                f"lease_expires = {SERVER_NOW} + %s, process_state = 'running', mtime = %s "
                "WHERE pk = ANY(%s) AND process_state IN ('created', 'running', 'waiting') "
                f"AND (owner IS NULL OR owner = %s OR lease_expires < {SERVER_NOW}) "
                "RETURNING pk, lease_epoch",
                (owner, lease_seconds(expires, now), moment, sorted(free), owner),
            )
        }
    result: list[Claim] = []
    for task_pk, process_pk, attempts in claimed:
        alone = attempts > broker_rows.SUSPECT_AFTER
        if process_pk in free:
            epoch = epochs.get(process_pk)
            if epoch is None:  # its row is locked since it was read: then the precise error
                epoch = claim_process_tx(connection, process_pk, owner, expires, "running")
            result.append(Claim(task_pk, process_pk, epoch, alone))
            continue
        if attempts > max_attempts:
            broker_rows.give_up_tx(connection, task_pk, process_pk, owner, attempts, now)
            result.append(Claim(task_pk, process_pk, None))
            continue
        row = connection.execute(
            f"SELECT owner, lease_expires - {SERVER_NOW} FROM nodes WHERE pk = %s", (process_pk,)
        ).fetchone()
        if row is not None and row[0] == owner and row[1] is not None and row[1] >= 0:
            result.append(Claim(task_pk, process_pk, LATER, alone))
            continue
        epoch = claim_task_process_tx(connection, task_pk, process_pk, owner, expires)
        result.append(Claim(task_pk, process_pk, epoch, alone))
    return result


def create_workchain_tx(
    connection: Connection,
    new: NewProcess,
    class_path: str,
    inputs: dict[str, Any],
    enqueue: bool,
    memo: MemoKey | None = None,
) -> Created:
    """Create a WorkChain node (CREATED) with its inputs and its first checkpoint, and, for the
    daemon, its start task: all in one transaction (a replayed step's child is reused).  The
    usual one (not a replayed step's) is two statements, its new inputs and then the rest: the
    checkpoint names the inputs by pk, and nothing in it depends on the process's own pk."""
    if memo is None:
        if new.parent is not None:
            check_lease(connection, *new.parent)
        now = time.time()
        input_pks = insert_new_data(connection, (data for _, data in new.inputs), now)
        blob = _first_checkpoint(new, input_pks, class_path, inputs)
        pk = insert_process(connection, new, input_pks, now, Start(blob, enqueue))
        return Created(pk, input_pks)
    pk, input_pks, outcome = begin_memoised_tx(connection, new, memo)
    if outcome != "new":
        return Created(pk, [data.pk for _, data in new.inputs])  # type: ignore[misc]
    write_checkpoint(connection, pk, 0, _first_checkpoint(new, input_pks, class_path, inputs))
    if enqueue:
        broker_rows.enqueue(connection, pk, f"start:{pk}", time.time())
    return Created(pk, input_pks)


def _first_checkpoint(new: NewProcess, input_pks: Sequence[int], class_path: str,
                      inputs: dict[str, Any]) -> bytes:  # fmt: skip
    """A new WorkChain's checkpoint: its class and its inputs, the just stored ones by pk."""
    fresh = {
        id(data): input_pk
        for (_, data), input_pk in zip(new.inputs, input_pks, strict=True)
        if data.pk is None
    }
    return Checkpoint(class_path, with_refs(inputs, fresh)).encode()


def take_pause_request_tx(connection: Connection, pk: int) -> None:
    """Consume the pending pause request of a process that pauses now (run mode)."""
    connection.execute("UPDATE nodes SET control = NULL WHERE pk = %s AND control = 'pause'", (pk,))


def kill_unstarted_tx(connection: Connection, pk: int, message: str) -> None:
    """Record that a CREATED process was killed before anything ran it."""
    broker_rows.terminate_unowned(connection, pk, "killed", message, time.time())


def except_unless_owned_tx(connection: Connection, pk: int, owner: str, message: str) -> None:
    """Mark a process EXCEPTED with ``message``; taking the lease first refuses
    (``LeaseLostError``) a process that a live owner holds."""
    claim_process_tx(connection, pk, owner, time.time(), "running")
    broker_rows.terminate_unowned(connection, pk, "excepted", message, time.time())
