"""The SQL of the broker on PostgreSQL (the port of ``storage/broker_rows.py``).

Tasks go ``ready`` -> ``leased`` -> ``done`` under a unique ``dedup_key``.  Where sqlite
serialises every writer, here several workers claim at once: ready tasks and expired leases are
claimed with ``FOR UPDATE SKIP LOCKED``, so two claimers never take the same row and neither
waits for the other.  ``INSERT OR IGNORE`` is ``ON CONFLICT DO NOTHING`` (a concurrent insert of
the same key waits for the first and then does nothing); ``INSERT OR REPLACE`` is ``ON CONFLICT
DO UPDATE`` of every column.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from miniengine.storage.broker_rows import (  # the same text on every backend
    READ_WORKERS,
    abandoned_call,
)
from miniengine.storage.interfaces.broker import (
    ACTIVE_STATES,
    MAX_ATTEMPTS,
    SUSPECT_AFTER,
    RecoveryCounts,
    Released,
    TaskClaim,
    WorkerRow,
)
from miniengine.storage.postgres.clock import SERVER_NOW, lease_seconds
from miniengine.storage.postgres.read import OneQuery

if TYPE_CHECKING:
    from miniengine.storage.postgres.rows import Connection

__all__ = [
    "ACTIVE_STATES",
    "MAX_ATTEMPTS",
    "SUSPECT_AFTER",
    "ack_task",
    "claim_tasks_tx",
    "enqueue",
    "give_back_tx",
    "give_up_tx",
    "has_ready_task",
    "notify_parents",
    "queue_depth",
    "read_workers",
    "recover_expired_tx",
    "register_worker_tx",
    "release_owner_tx",
    "renew_worker",
    "runs_alone",
    "terminate_unowned",
    "wait_for_children",
    "worker_heartbeats",
]


def enqueue(connection: Connection, process_pk: int, dedup_key: str, now: float,
            not_before: float = 0.0) -> bool:  # fmt: skip
    """Add a ready task unless one with the same key exists; True when it was added."""
    cursor = connection.execute(
        "INSERT INTO tasks (process_pk, dedup_key, not_before, ctime) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (dedup_key) DO NOTHING",
        (process_pk, dedup_key, not_before, now),
    )
    return cursor.rowcount == 1


#: A task done (its pk the one parameter).
ACK_TASK = "UPDATE tasks SET status = 'done', worker = NULL, lease_expires = NULL WHERE pk = %s"


def ack_task(connection: Connection, task_pk: int) -> None:
    connection.execute(ACK_TASK, (task_pk,))


def claim_tasks_tx(connection: Connection, worker: str, limit: int, expires: float,
                   now: float, idle: bool = True) -> list[TaskClaim]:  # fmt: skip
    """Lease up to ``limit`` ready tasks, oldest first (see the sqlite version for ``attempts``
    and the suspects that are leased alone, by an ``idle`` worker only).

    The ready rows are locked as they are read, skipping those another claimer has locked:
    concurrent claims get disjoint tasks without waiting.  The rows read but not chosen (the
    ones behind a suspect) stay locked until the commit, as a claim is short.
    """
    # The usual claim in one statement: the ready rows read and locked, those before the first
    # suspect leased; the suspects read come back too (process_pk NULL) for the rare claim of
    # one suspect alone.
    claimed: list[TaskClaim] = []
    suspects: list[tuple[int, int]] = []
    for task, process, attempts in connection.execute(
        _CLAIM_READY,
        (
            now,
            int(limit) if limit >= 0 else None,  # LIMIT NULL: all, as sqlite's LIMIT -1
            SUSPECT_AFTER,
            worker,
            lease_seconds(expires, now),
            SUSPECT_AFTER,
        ),
    ):
        if process is None:
            suspects.append((int(task), int(attempts)))
        else:
            claimed.append(TaskClaim(int(task), int(process), int(attempts)))
    if not claimed and suspects and idle:
        # the head of the queue is a suspect: the least tried one, alone
        chosen = min(suspects, key=lambda row: (row[1], row[0]))[0]
        claimed = [
            TaskClaim(int(task), int(process), int(attempts))
            for task, process, attempts in connection.execute(
                f"UPDATE tasks SET status = 'leased', worker = %s, "
                f"lease_expires = {SERVER_NOW} + %s, attempts = attempts + 1 WHERE pk = %s "
                "RETURNING pk, process_pk, attempts",
                (worker, lease_seconds(expires, now), chosen),
            )
        ]
    claimed.sort()  # RETURNING has no order: oldest first, as on sqlite
    return claimed


#: :func:`claim_tasks_tx`'s statement.  The rows read but not leased (the ones from the first
#: suspect on) stay locked until the commit, as a claim is short.
_CLAIM_READY = (
    "WITH ready AS (SELECT pk, attempts FROM tasks WHERE status = 'ready' AND not_before <= %s "
    "ORDER BY pk LIMIT %s FOR UPDATE SKIP LOCKED), "
    "head AS (SELECT pk FROM ready WHERE pk < coalesce((SELECT min(pk) FROM ready "
    "WHERE attempts >= %s), 9223372036854775807)), "
    "leased AS (UPDATE tasks SET status = 'leased', worker = %s, "
    f"lease_expires = {SERVER_NOW} + %s, attempts = attempts + 1 "
    "WHERE pk IN (SELECT pk FROM head) RETURNING pk, process_pk, attempts) "
    "SELECT pk, process_pk, attempts FROM leased "
    "UNION ALL SELECT pk, NULL, attempts FROM ready WHERE attempts >= %s"
)


def give_up_tx(connection: Connection, task_pk: int, process_pk: int, owner: str,
               attempts: int, now: float) -> bool:  # fmt: skip
    """End the process of a task claimed more than ``max_attempts`` times without progress
    as EXCEPTED, unless another live owner holds it (then only the task is dropped).

    Returns True when the process was excepted.
    """
    row = connection.execute(  # the lease's seconds left, on the server's clock
        f"SELECT process_state, owner, lease_expires - {SERVER_NOW} FROM nodes WHERE pk = %s "
        "FOR NO KEY UPDATE",
        (process_pk,),
    ).fetchone()
    held_elsewhere = (
        row is not None and row[1] not in (None, owner) and row[2] is not None and row[2] >= 0
    )
    if row is None or row[0] not in ACTIVE_STATES or held_elsewhere:
        ack_task(connection, task_pk)
        return False
    message = (
        f"gave up after {attempts - 1} attempts: the worker running it died each time (the "
        "process, or a module it imports, ends the interpreter, e.g. os._exit() or a crash)"
    )
    terminate_unowned(connection, process_pk, "excepted", message, now)
    ack_task(connection, task_pk)
    return True


def wait_for_children(connection: Connection, parent_pk: int, seq: int,
                      children: Sequence[int], now: float) -> int:  # fmt: skip
    """Record that ``parent_pk`` waits for ``children``; return how many are still running.

    When none is, the parent's continuation is enqueued at once.  A child that terminates
    concurrently either commits first (it is not counted here) or waits for this commit: the
    running children's rows are updated (their ``awaited`` flag set), which a child's terminal
    UPDATE waits for and then returns the flag of, so its end looks for the ``awaited`` rows
    written here (its ``notify_parents`` deletes them) and no wake-up is lost.  The rows are
    locked in pk order first: two parents waiting for the same children must not each hold
    one that the other needs.
    """
    active = [
        int(pk)
        for (pk,) in connection.execute(
            "WITH running AS (SELECT pk FROM nodes WHERE pk = ANY(%s) "
            "AND process_state IN ('created', 'running', 'waiting') "
            "ORDER BY pk FOR NO KEY UPDATE) "
            "UPDATE nodes SET awaited = 1 FROM running WHERE nodes.pk = running.pk "
            "RETURNING nodes.pk",
            (list(children),),
        )
    ] if children else []  # fmt: skip
    if not active:
        enqueue(connection, parent_pk, f"wake:{parent_pk}:{seq}", now)
        return 0
    connection.execute(  # one statement for a fan-out of any size
        "INSERT INTO awaited (child_pk, parent_pk) SELECT unnest(%s::bigint[]), %s "
        "ON CONFLICT DO NOTHING",
        (active, parent_pk),
    )
    connection.execute(
        "INSERT INTO waits (parent_pk, seq, outstanding) VALUES (%s, %s, %s) "
        "ON CONFLICT (parent_pk) DO UPDATE SET seq = excluded.seq, "
        "outstanding = excluded.outstanding",
        (parent_pk, seq, len(active)),
    )
    return len(active)


def notify_parents(connection: Connection, child_pk: int, now: float) -> None:
    """A process terminated: decrement its waiting parents' counts and wake those at zero.

    One statement for the counts of all its parents, and a statement of its own, after the one
    that ended the child: a parent whose commit starts waiting for the child updates the
    child's row, so the child's end waits for that commit, and only a statement that starts
    after it sees the ``awaited`` rows it wrote (a statement sees the commits made before it
    began).  An end whose row's ``awaited`` flag is not set skips this: no parent waits.
    The UPDATE waits for a parent's row that another child's end holds, and decrements the
    count that one committed.
    """
    counted = connection.execute(
        "WITH gone AS (DELETE FROM awaited WHERE child_pk = %s RETURNING parent_pk) "
        "UPDATE waits SET outstanding = waits.outstanding - 1 FROM gone "
        "WHERE waits.parent_pk = gone.parent_pk "
        "RETURNING waits.parent_pk, waits.outstanding, waits.seq",
        (child_pk,),
    ).fetchall()
    for parent_pk, outstanding, seq in counted:
        if outstanding <= 0:
            connection.execute("DELETE FROM waits WHERE parent_pk = %s", (parent_pk,))
            enqueue(connection, parent_pk, f"wake:{parent_pk}:{seq}", now)


def forget_worker_tx(connection: Connection, worker: str, silent_since: float) -> bool:
    """Remove the row of ``worker`` if its last heartbeat is older than ``silent_since``."""
    return (
        connection.execute(
            "DELETE FROM workers WHERE id = %s AND heartbeat < %s", (worker, silent_since)
        ).rowcount
        == 1
    )


def release_owner_tx(connection: Connection, owner: str) -> Released:
    """Free everything ``owner`` held (it is known to be dead): its tasks become ready again and
    its processes' leases expire now.  Returns (tasks, processes) released."""
    tasks = connection.execute(
        "UPDATE tasks SET status = 'ready', worker = NULL, lease_expires = NULL "
        "WHERE status = 'leased' AND worker = %s",
        (owner,),
    ).rowcount
    processes = connection.execute(
        "UPDATE nodes SET lease_expires = 0 WHERE process_state IN ('created', 'running', "
        "'waiting') AND owner = %s",
        (owner,),
    ).rowcount
    connection.execute("DELETE FROM workers WHERE id = %s", (owner,))
    return Released(tasks, processes)


def give_back_tx(connection: Connection, task_pk: int, process_pk: int, owner: str,
                 not_before: float) -> None:  # fmt: skip
    """A worker could not finish a task: the task is ready again from ``not_before``, and the
    process's lease is freed if ``owner`` still holds it (both conditional)."""
    connection.execute(
        "UPDATE tasks SET status = 'ready', worker = NULL, lease_expires = NULL, "
        "not_before = %s, attempts = 0 WHERE pk = %s AND status = 'leased' AND worker = %s",
        (not_before, task_pk, owner),
    )
    connection.execute(
        "UPDATE nodes SET owner = NULL, lease_expires = NULL WHERE pk = %s AND owner = %s "
        "AND process_state IN ('created', 'running', 'waiting')",
        (process_pk, owner),
    )
    # An inline call of the step that failed (a calcfunction or workfunction whose own last
    # write failed too) stays RUNNING under this owner, whose heartbeat would renew its lease
    # for as long as the worker lives: it ends EXCEPTED here (the replayed step calls afresh).
    end_inline_calls(connection, process_pk, owner, "excepted", abandoned_call(process_pk))


def end_inline_calls(connection: Connection, process_pk: int, owner: str, state: str,
                     message: str) -> None:  # fmt: skip
    """End (``excepted`` or ``killed``, with ``message``) the inline calls of ``process_pk``
    (its calcfunctions and workfunctions, theirs too) that ``owner`` still holds as RUNNING.

    Called where the run of ``process_pk`` by ``owner`` is over (its end is written, or its task
    handed back): its inline calls ran inside that run, so they are over too, whatever their
    rows say (their own end could not be written).  No one else would end them: a kill request
    goes to an owner that no longer runs them, and the owner's heartbeat renews their lease.
    """
    callers, now = [process_pk], time.time()
    while callers:
        caller = callers.pop()
        for (call,) in connection.execute(
            "SELECT n.pk FROM links l JOIN nodes n ON n.pk = l.out_pk WHERE l.in_pk = %s "
            "AND l.link_type IN ('call_calc', 'call_work') AND n.owner = %s "
            "AND n.process_state = 'running' "
            "AND n.node_type IN ('process.calcfunction', 'process.workfunction')",
            (caller, owner),
        ).fetchall():
            terminate_unowned(connection, call, state, message, now)
            callers.append(call)


def terminate_unowned(
    connection: Connection, pk: int, state: str, message: str, now: float
) -> None:
    """End a process that no live owner holds as ``excepted`` (``message`` is its exception)
    or ``killed`` (its status): its checkpoint and tasks go, its waits are dropped and the
    parents waiting for it are notified, all in the caller's transaction."""
    excepted = state == "excepted"
    connection.execute(
        "UPDATE nodes SET process_state = %s, exception = %s, process_status = %s, "
        "owner = NULL, lease_expires = NULL, control = NULL, paused = 0, mtime = %s "
        "WHERE pk = %s",
        (state, message if excepted else None, None if excepted else message, now, pk),
    )
    connection.execute(
        "INSERT INTO logs (node_pk, time, levelname, message) VALUES (%s, %s, %s, %s)",
        (pk, now, "ERROR" if excepted else "REPORT", message),
    )
    connection.execute("DELETE FROM checkpoints WHERE node_pk = %s", (pk,))
    connection.execute(
        "UPDATE tasks SET status = 'done', worker = NULL WHERE process_pk = %s "
        "AND status IN ('ready', 'leased')",
        (pk,),
    )
    connection.execute("DELETE FROM awaited WHERE parent_pk = %s", (pk,))
    connection.execute("DELETE FROM waits WHERE parent_pk = %s", (pk,))
    notify_parents(connection, pk, now)


def recover_expired_tx(connection: Connection, now: float) -> RecoveryCounts:
    """Repair what dead owners left behind, in one transaction (see the sqlite version).

    The expired process leases are claimed ``FOR NO KEY UPDATE SKIP LOCKED`` (row locks on
    nodes never take the KEY mode, which would block the inserts of rows that refer to them:
    links, logs, tasks): two recoverers running
    at once (workers on several hosts) split them, and a row another transaction is writing
    right now (its owner renewing it) is left for the next pass.
    """
    requeued = connection.execute(
        "UPDATE tasks SET status = 'ready', worker = NULL, lease_expires = NULL "
        "WHERE pk IN (SELECT pk FROM tasks WHERE status = 'leased' "
        f"AND lease_expires < {SERVER_NOW} FOR UPDATE SKIP LOCKED)"
    ).rowcount
    expired = connection.execute(
        "SELECT pk, submitted, lease_epoch, owner FROM nodes WHERE process_state IN "
        f"('created', 'running', 'waiting') AND owner IS NOT NULL AND lease_expires < {SERVER_NOW} "
        "ORDER BY pk FOR NO KEY UPDATE SKIP LOCKED"
    ).fetchall()
    recovered = 0
    excepted_pks: list[int] = []
    for pk, submitted, epoch, owner in expired:
        if submitted:
            live = connection.execute(
                "SELECT 1 FROM tasks WHERE process_pk = %s AND status IN ('ready', 'leased')",
                (pk,),
            ).fetchone()
            if live is None and enqueue(connection, pk, f"recover:{pk}:{epoch}", now):
                recovered += 1
            continue
        # (no advice to resume: once EXCEPTED, a process is terminated for good)
        message = (
            f"owner lost: the script or worker that ran this ({owner}) stopped renewing its "
            "lease (it died or hung)"
        )
        terminate_unowned(connection, pk, "excepted", message, now)
        excepted_pks.append(pk)
    # A step cut off mid-way may have created children that never started (their owner was
    # the dead script too, and they hold no lease): nobody would ever run or end them.
    from miniengine.storage.postgres import control_rows
    from miniengine.storage.postgres.rows import LIVE_CALLED

    for pk in excepted_pks:
        for (child,) in connection.execute(LIVE_CALLED, (pk,)).fetchall():
            control_rows.kill_tx(connection, child, f"Killed: its caller {pk} excepted")
    return RecoveryCounts(requeued, recovered, len(excepted_pks))


def queue_depth(connection: Connection) -> dict[str, int]:
    """Two counts, as on sqlite: each walks its partial index (``tasks_ready``,
    ``tasks_leased``), never the done tasks."""
    now = time.time()
    ready = connection.execute(
        "SELECT count(*) FROM tasks WHERE status = 'ready' AND not_before <= %s", (now,)
    ).fetchone()
    leased = connection.execute("SELECT count(*) FROM tasks WHERE status = 'leased'").fetchone()
    assert ready is not None and leased is not None
    return {"ready": int(ready[0]), "leased": int(leased[0])}


#: ``(connection, now)``: whether any task is ready to be claimed
has_ready_task: OneQuery[[float], bool] = OneQuery(
    "has_ready_task",
    "SELECT 1 FROM tasks WHERE status = 'ready' AND not_before <= %s LIMIT 1",
    bool,
)


# workers ----------------------------------------------------------------------------------------


def register_worker_tx(
    connection: Connection, worker_id: str, pid: int, slots: int, now: float, host: str = ""
) -> None:
    """Register a worker; ``host`` is its host identity, ``hostname`` the machine's name."""
    connection.execute(
        "INSERT INTO workers (id, pid, hostname, slots, started, heartbeat, host) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, "
        "hostname = excluded.hostname, slots = excluded.slots, busy = 0, "
        "started = excluded.started, heartbeat = excluded.heartbeat, host = excluded.host",
        (worker_id, pid, socket.gethostname(), slots, now, now, host),
    )


def renew_worker(
    connection: Connection, worker_id: str, busy: int, expires: float, now: float
) -> None:
    """Renew the leases of the tasks ``worker_id`` holds and record its heartbeat (part of the
    backend's heartbeat transaction)."""
    connection.execute(
        f"UPDATE tasks SET lease_expires = {SERVER_NOW} + %s WHERE status = 'leased' "
        "AND worker = %s",
        (lease_seconds(expires, now), worker_id),
    )
    connection.execute(
        "UPDATE workers SET heartbeat = %s, busy = %s WHERE id = %s", (now, busy, worker_id)
    )


#: ``(connection, task_pk, worker)``: whether ``worker`` still holds ``task_pk`` without
#: progress (see ``claim_tasks_tx``)
runs_alone: OneQuery[[int, str], bool] = OneQuery(
    "runs_alone",
    "SELECT 1 FROM tasks WHERE pk = %s AND status = 'leased' AND worker = %s AND attempts > 1",
    bool,
)


def worker_heartbeats(connection: Connection) -> dict[str, float]:
    return {
        str(worker): float(beat)
        for worker, beat in connection.execute("SELECT id, heartbeat FROM workers")
    }


def read_workers(connection: Connection) -> list[WorkerRow]:
    return [
        WorkerRow(str(worker), int(pid), int(slots), int(busy), float(beat), str(host))
        for worker, pid, slots, busy, beat, host in connection.execute(READ_WORKERS)
    ]
