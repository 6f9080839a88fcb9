"""The SQL of the broker: tasks, leases of workers, and waking parents.

Tasks go ``ready`` -> ``leased`` -> ``done``.  Each carries a ``dedup_key`` (``start:<pk>``,
``wake:<pk>:<seq>``, ``recover:<pk>:<epoch>``), so enqueueing the same work twice is a no-op, and
a task for a process that has already terminated is acknowledged without running anything.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Sequence

from miniengine.storage.interfaces.broker import (
    ACTIVE_STATES,
    MAX_ATTEMPTS,
    SUSPECT_AFTER,
    RecoveryCounts,
    Released,
    TaskClaim,
    WorkerRow,
)

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


def enqueue(connection: sqlite3.Connection, process_pk: int, dedup_key: str, now: float,
            not_before: float = 0.0) -> bool:  # fmt: skip
    """Add a ready task unless one with the same key exists; True when it was added."""
    cursor = connection.execute(
        "INSERT OR IGNORE INTO tasks (process_pk, dedup_key, not_before, ctime) "
        "VALUES (?, ?, ?, ?)",
        (process_pk, dedup_key, not_before, now),
    )
    return cursor.rowcount == 1


def ack_task(connection: sqlite3.Connection, task_pk: int) -> None:
    connection.execute(
        "UPDATE tasks SET status = 'done', worker = NULL, lease_expires = NULL WHERE pk = ?",
        (task_pk,),
    )


def claim_tasks_tx(connection: sqlite3.Connection, worker: str, limit: int, expires: float,
                   now: float, idle: bool = True) -> list[TaskClaim]:  # fmt: skip
    """Lease up to ``limit`` ready tasks, oldest first.

    ``attempts`` counts the claims of a task since its process last made progress; a worker
    that survives a claim (the task ends, is handed back, or a step commits) resets it.  So a
    task claimed :data:`SUSPECT_AFTER` times or more was held each time by a worker that died:
    it may be what kills them (``os._exit`` at import, a crash in a C extension).  Such a task
    is leased alone, and only by an ``idle`` worker, so that nothing else dies with it again;
    until then nothing behind it in the queue is leased either (the busy workers drain), so it
    cannot starve.  Among the suspects at the head of the queue the least tried goes first.
    """
    ready = connection.execute(
        "SELECT pk, attempts FROM tasks WHERE status = 'ready' AND not_before <= ? "
        "ORDER BY pk LIMIT ?",
        (now, limit),
    ).fetchall()
    chosen: list[int] = []
    for index, (task, attempts) in enumerate(ready):
        if attempts >= SUSPECT_AFTER:
            if not chosen and idle:
                suspects = [row for row in ready[index:] if row[1] >= SUSPECT_AFTER]
                chosen = [min(suspects, key=lambda row: (row[1], row[0]))[0]]
            break
        chosen.append(task)
    if not chosen:
        return []
    return [
        TaskClaim(int(task), int(process), int(attempts))
        for task, process, attempts in connection.execute(
            "UPDATE tasks SET status = 'leased', worker = ?, lease_expires = ?, "
            f"attempts = attempts + 1 WHERE pk IN ({','.join('?' * len(chosen))}) "
            "RETURNING pk, process_pk, attempts",
            (worker, expires, *chosen),
        )
    ]


def give_up_tx(connection: sqlite3.Connection, task_pk: int, process_pk: int, owner: str,
               attempts: int, now: float) -> bool:  # fmt: skip
    """End the process of a task claimed more than ``max_attempts`` times without progress
    as EXCEPTED, unless another live owner holds it (then only the task is dropped).

    Returns True when the process was excepted.  Each of those claims ended with the death of
    the worker that held it, so running it again would only kill another worker.
    """
    row = connection.execute(
        "SELECT process_state, owner, lease_expires FROM nodes WHERE pk = ?", (process_pk,)
    ).fetchone()
    held_elsewhere = row is not None and row[1] not in (None, owner) and (row[2] or 0) >= now
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


def wait_for_children(connection: sqlite3.Connection, parent_pk: int, seq: int,
                      children: Sequence[int], now: float) -> int:  # fmt: skip
    """Record that ``parent_pk`` waits for ``children``; return how many are still running.

    When none is, the parent's continuation is enqueued at once.  The running children's
    ``awaited`` flag is set: their ends look for waiting parents only when it is.
    """
    active = [
        pk
        for (pk,) in connection.execute(
            f"UPDATE nodes SET awaited = 1 WHERE pk IN ({','.join('?' * len(children))}) "
            "AND process_state IN ('created', 'running', 'waiting') RETURNING pk",
            tuple(children),
        )
    ] if children else []  # fmt: skip
    if not active:
        enqueue(connection, parent_pk, f"wake:{parent_pk}:{seq}", now)
        return 0
    connection.executemany(
        "INSERT OR IGNORE INTO awaited (child_pk, parent_pk) VALUES (?, ?)",
        [(child, parent_pk) for child in active],
    )
    connection.execute(
        "INSERT OR REPLACE INTO waits (parent_pk, seq, outstanding) VALUES (?, ?, ?)",
        (parent_pk, seq, len(active)),
    )
    return len(active)


def notify_parents(connection: sqlite3.Connection, child_pk: int, now: float) -> None:
    """A process terminated: decrement its waiting parents' counts and wake those at zero."""
    parents = connection.execute(
        "DELETE FROM awaited WHERE child_pk = ? RETURNING parent_pk", (child_pk,)
    ).fetchall()
    for (parent_pk,) in parents:
        row = connection.execute(
            "UPDATE waits SET outstanding = outstanding - 1 WHERE parent_pk = ? "
            "RETURNING outstanding, seq",
            (parent_pk,),
        ).fetchone()
        if row is not None and row[0] <= 0:
            connection.execute("DELETE FROM waits WHERE parent_pk = ?", (parent_pk,))
            enqueue(connection, parent_pk, f"wake:{parent_pk}:{row[1]}", now)


def forget_worker_tx(connection: sqlite3.Connection, worker: str, silent_since: float) -> bool:
    """Remove the row of ``worker`` if its last heartbeat is older than ``silent_since``."""
    return (
        connection.execute(
            "DELETE FROM workers WHERE id = ? AND heartbeat < ?", (worker, silent_since)
        ).rowcount
        == 1
    )


def release_owner_tx(connection: sqlite3.Connection, owner: str) -> Released:
    """Free everything ``owner`` held (it is known to be dead): its tasks become ready again and
    its processes' leases expire now.  Returns (tasks, processes) released."""
    tasks = connection.execute(
        "UPDATE tasks SET status = 'ready', worker = NULL, lease_expires = NULL "
        "WHERE status = 'leased' AND worker = ?",
        (owner,),
    ).rowcount
    processes = connection.execute(
        "UPDATE nodes SET lease_expires = 0 WHERE process_state IN ('created', 'running', "
        "'waiting') AND owner = ?",
        (owner,),
    ).rowcount
    connection.execute("DELETE FROM workers WHERE id = ?", (owner,))
    return Released(tasks, processes)


def give_back_tx(connection: sqlite3.Connection, task_pk: int, process_pk: int, owner: str,
                 not_before: float) -> None:  # fmt: skip
    """A worker could not finish a task (its write failed, or it was fenced off): the task is
    ready again from ``not_before``, and the process's lease is freed if ``owner`` still holds it.
    Both updates are conditional, so a task or process that another owner took over is left
    alone."""
    connection.execute(
        "UPDATE tasks SET status = 'ready', worker = NULL, lease_expires = NULL, not_before = ?, "
        "attempts = 0 WHERE pk = ? AND status = 'leased' AND worker = ?",
        (not_before, task_pk, owner),
    )
    connection.execute(
        "UPDATE nodes SET owner = NULL, lease_expires = NULL WHERE pk = ? AND owner = ? "
        "AND process_state IN ('created', 'running', 'waiting')",
        (process_pk, owner),
    )
    # An inline call of the step that failed (a calcfunction or workfunction whose own last
    # write failed too) stays RUNNING under this owner, whose heartbeat would renew its lease
    # for as long as the worker lives: it ends EXCEPTED here (the replayed step calls afresh).
    end_inline_calls(connection, process_pk, owner, "excepted", abandoned_call(process_pk))


def abandoned_call(caller: int) -> str:
    """Why an inline call was ended when its caller's task was handed back."""
    return (
        f"abandoned: the step of process {caller} that called this could not be written, and "
        "runs again from its checkpoint (calling afresh)"
    )


def end_inline_calls(connection: sqlite3.Connection, process_pk: int, owner: str, state: str,
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
            "SELECT n.pk FROM links l JOIN nodes n ON n.pk = l.out_pk WHERE l.in_pk = ? "
            "AND l.link_type IN ('call_calc', 'call_work') AND n.owner = ? "
            "AND n.process_state = 'running' "
            "AND n.node_type IN ('process.calcfunction', 'process.workfunction')",
            (caller, owner),
        ).fetchall():
            terminate_unowned(connection, call, state, message, now)
            callers.append(call)


def terminate_unowned(
    connection: sqlite3.Connection, pk: int, state: str, message: str, now: float
) -> None:
    """End a process that no live owner holds as ``excepted`` (``message`` is its exception)
    or ``killed`` (its status): its checkpoint and tasks go, its waits are dropped and the
    parents waiting for it are notified, all in the caller's transaction."""
    excepted = state == "excepted"
    connection.execute(
        "UPDATE nodes SET process_state = ?, exception = ?, process_status = ?, owner = NULL, "
        "lease_expires = NULL, control = NULL, paused = 0, mtime = ? WHERE pk = ?",
        (state, message if excepted else None, None if excepted else message, now, pk),
    )
    connection.execute(
        "INSERT INTO logs (node_pk, time, levelname, message) VALUES (?, ?, ?, ?)",
        (pk, now, "ERROR" if excepted else "REPORT", message),
    )
    connection.execute("DELETE FROM checkpoints WHERE node_pk = ?", (pk,))
    connection.execute(
        "UPDATE tasks SET status = 'done', worker = NULL WHERE process_pk = ? "
        "AND status IN ('ready', 'leased')",
        (pk,),
    )
    connection.execute("DELETE FROM awaited WHERE parent_pk = ?", (pk,))
    connection.execute("DELETE FROM waits WHERE parent_pk = ?", (pk,))
    notify_parents(connection, pk, now)


def recover_expired_tx(connection: sqlite3.Connection, now: float) -> RecoveryCounts:
    """Repair what dead owners left behind, in one transaction.

    - leased tasks whose lease expired become ready again;
    - a submitted process whose owner's lease expired and that has no live task gets a
      ``recover`` task, so it continues elsewhere from its last checkpoint;
    - a run-mode process whose script died (lease expired, never submitted) is marked EXCEPTED:
      nobody can continue it unless a user resumes it, and it must not look RUNNING forever.
    """
    requeued = connection.execute(
        "UPDATE tasks SET status = 'ready', worker = NULL, lease_expires = NULL "
        "WHERE status = 'leased' AND lease_expires < ?",
        (now,),
    ).rowcount
    expired = connection.execute(
        "SELECT pk, submitted, lease_epoch, owner FROM nodes WHERE process_state IN "
        "('created', 'running', 'waiting') AND owner IS NOT NULL AND lease_expires < ?",
        (now,),
    ).fetchall()
    recovered = 0
    excepted_pks: list[int] = []
    for pk, submitted, epoch, owner in expired:
        if submitted:
            live = connection.execute(
                "SELECT 1 FROM tasks WHERE process_pk = ? AND status IN ('ready', 'leased')",
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
    from miniengine.storage import control_rows

    for pk in excepted_pks:
        for (child,) in connection.execute(
            "SELECT l.out_pk FROM links l JOIN nodes n ON n.pk = l.out_pk WHERE l.in_pk = ? "
            "AND l.link_type IN ('call_calc', 'call_work') "
            "AND n.process_state IN ('created', 'running', 'waiting')",
            (pk,),
        ).fetchall():
            control_rows.kill_tx(connection, child, f"Killed: its caller {pk} excepted")
    return RecoveryCounts(requeued, recovered, len(excepted_pks))


def queue_depth(connection: sqlite3.Connection) -> dict[str, int]:
    now = time.time()
    ready = connection.execute(
        "SELECT count(*) FROM tasks WHERE status = 'ready' AND not_before <= ?", (now,)
    ).fetchone()[0]
    leased = connection.execute("SELECT count(*) FROM tasks WHERE status = 'leased'").fetchone()[0]
    return {"ready": int(ready), "leased": int(leased)}


def has_ready_task(connection: sqlite3.Connection, now: float) -> bool:
    return (
        connection.execute(
            "SELECT 1 FROM tasks WHERE status = 'ready' AND not_before <= ? LIMIT 1", (now,)
        ).fetchone()
        is not None
    )


# workers ----------------------------------------------------------------------------------------


def register_worker_tx(
    connection: sqlite3.Connection,
    worker_id: str,
    pid: int,
    slots: int,
    now: float,
    host: str = "",
) -> None:
    """Register a worker; ``host`` is its host identity, ``hostname`` the machine's name."""
    connection.execute(
        "INSERT OR REPLACE INTO workers (id, pid, hostname, slots, started, heartbeat, host) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (worker_id, pid, socket.gethostname(), slots, now, now, host),
    )


def renew_worker(
    connection: sqlite3.Connection, worker_id: str, busy: int, expires: float, now: float
) -> None:
    """Renew the leases of the tasks ``worker_id`` holds and record its heartbeat (part of the
    store's heartbeat transaction)."""
    connection.execute(
        "UPDATE tasks SET lease_expires = ? WHERE status = 'leased' AND worker = ?",
        (expires, worker_id),
    )
    connection.execute(
        "UPDATE workers SET heartbeat = ?, busy = ? WHERE id = ?", (now, busy, worker_id)
    )


def runs_alone(connection: sqlite3.Connection, task_pk: int, worker_id: str) -> bool:
    """Whether ``worker_id`` still holds ``task_pk`` without progress (see ``claim_tasks_tx``)."""
    return (
        connection.execute(
            "SELECT 1 FROM tasks WHERE pk = ? AND status = 'leased' AND worker = ? "
            "AND attempts > 1",
            (task_pk, worker_id),
        ).fetchone()
        is not None
    )


def worker_heartbeats(connection: sqlite3.Connection) -> dict[str, float]:
    return {
        str(worker): float(beat)
        for worker, beat in connection.execute("SELECT id, heartbeat FROM workers")
    }


#: The registered workers with the tasks each holds, oldest first (the same text on every
#: backend, also read by the awaitable reads of the web view).
READ_WORKERS = (
    "SELECT w.id, w.pid, w.slots, (SELECT count(*) FROM tasks t WHERE "
    "t.status = 'leased' AND t.worker = w.id), w.heartbeat, w.host FROM workers w "
    "ORDER BY w.started"
)


def read_workers(connection: sqlite3.Connection) -> list[WorkerRow]:
    return [
        WorkerRow(str(worker), int(pid), int(slots), int(busy), float(beat), str(host))
        for worker, pid, slots, busy, beat, host in connection.execute(READ_WORKERS)
    ]
