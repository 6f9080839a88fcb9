"""The SQL of process control on PostgreSQL (the port of ``storage/control_rows.py``).

A process that a live owner holds gets a request in its ``control`` column; one nobody holds is
changed here directly.  Whether an owner is live is decided from the row, so the rows read for
that decision are locked (``FOR NO KEY UPDATE``) until the commit, as sqlite's write lock does:
an owner that claims the process meanwhile waits, then sees the request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from miniengine.exceptions import NotExistent
from miniengine.storage.interfaces.control import (
    KILL_STATUS,
    PAUSE_STATUS,
    ControlRequest,
    KillOutcome,
    PauseOutcome,
    PlayOutcome,
)
from miniengine.storage.postgres import broker_rows
from miniengine.storage.postgres.clock import SERVER_NOW
from miniengine.storage.postgres.read import OneQuery
from miniengine.storage.postgres.rows import LIVE_CALLED, check_lease
from miniengine.storage.rows import SQL_INTEGERS

if TYPE_CHECKING:
    from miniengine.storage.postgres.rows import Connection

__all__ = [
    "KILL_STATUS",
    "PAUSE_STATUS",
    "control_request",
    "honour_kill_request",
    "honour_pending_kill",
    "kill_in_database",
    "kill_tx",
    "pause_tx",
    "pause_unloadable_tx",
    "pending_controls",
    "play_tx",
    "process_state",
    "revive_tx",
]


def _row(connection: Connection, pk: int) -> tuple[str, str | None, float | None]:
    """The state, owner and the seconds its lease has left (on the server's clock) of ``pk``."""
    row = (
        connection.execute(
            f"SELECT process_state, owner, lease_expires - {SERVER_NOW}, node_type FROM nodes "
            "WHERE pk = %s FOR NO KEY UPDATE",
            (pk,),
        ).fetchone()
        if pk in SQL_INTEGERS
        else None
    )
    if row is None:
        raise NotExistent(f"no process with pk {pk}")
    if row[0] is None:  # the words of the CLI: one wording for "not a process" everywhere
        raise NotExistent(f"node {pk} is not a process (its type is {row[3]})")
    return row[0], row[1], row[2]


def _live(owner: str | None, left: float | None) -> bool:
    """Whether an owner holds a lease with ``left`` seconds to go (the server's clock)."""
    return owner is not None and left is not None and left >= 0


def _subtree(connection: Connection, pk: int) -> list[tuple[int, str, str | None, float | None]]:
    """The process and every descendant through CALL links that has not terminated, top first
    (locked, top first too)."""
    return [
        (int(row[0]), row[1], row[2], row[3])
        for row in connection.execute(
            "WITH RECURSIVE tree(pk, depth) AS (SELECT %s::bigint, 0 UNION "
            "SELECT l.out_pk, tree.depth + 1 FROM links l JOIN tree ON l.in_pk = tree.pk "
            "WHERE l.link_type IN ('call_calc', 'call_work')) "
            f"SELECT n.pk, n.process_state, n.owner, n.lease_expires - {SERVER_NOW} FROM tree "
            "JOIN nodes n ON n.pk = tree.pk "
            "WHERE n.process_state IN ('created', 'running', 'waiting') "
            "ORDER BY tree.depth, n.pk FOR NO KEY UPDATE OF n",
            (pk,),
        )
    ]


def kill_in_database(connection: Connection, pk: int, message: str, now: float) -> None:
    """Terminate an unowned process as KILLED (its tasks done, its parents notified)."""
    broker_rows.terminate_unowned(connection, pk, "killed", message, now)


def honour_pending_kill(connection: Connection, pk: int, now: float) -> bool:
    """Kill ``pk`` in the database if a kill request waits for it; True if it did.

    Called by whoever claims the process: a kill asked of an owner that stopped before acting
    must not be lost when another owner continues the process.  Its descendants are killed as
    by :func:`kill_tx`.
    """
    row = connection.execute("SELECT control FROM nodes WHERE pk = %s", (pk,)).fetchone()
    return row is not None and honour_kill_request(connection, pk, row[0], now)


def honour_kill_request(connection: Connection, pk: int, control: str | None, now: float) -> bool:
    """:func:`honour_pending_kill` for a caller that has read the process's ``control``
    already."""
    if control is None or not str(control).startswith("kill:"):
        return False
    message = str(control)[len("kill:") :] or KILL_STATUS
    kill_in_database(connection, pk, message, now)
    for (child,) in connection.execute(LIVE_CALLED, (pk,)).fetchall():
        kill_tx(connection, child, f"{message} (its caller {pk} was killed)")
    return True


def kill_tx(connection: Connection, pk: int, message: str | None) -> KillOutcome:
    """Kill ``pk`` and every non-terminated descendant.

    Returns the state before, the pks killed here and the pks whose live owner was asked; a
    terminated process is left alone (both lists empty).
    """
    now = time.time()
    state, _, _ = _row(connection, pk)
    text = message or KILL_STATUS
    killed: list[int] = []
    requested: list[int] = []
    if state in broker_rows.ACTIVE_STATES:
        for node_pk, _, owner, expires in _subtree(connection, pk):
            reason = text if node_pk == pk else f"{text} (its caller {pk} was killed)"
            if _live(owner, expires):
                connection.execute(
                    "UPDATE nodes SET control = %s WHERE pk = %s", (f"kill:{reason}", node_pk)
                )
                requested.append(node_pk)
            else:
                kill_in_database(connection, node_pk, reason, now)
                killed.append(node_pk)
    return KillOutcome(state, killed, requested)


def pause_tx(connection: Connection, pk: int) -> PauseOutcome:
    """Pause ``pk``: it keeps its state and does not run until played."""
    state, owner, expires = _row(connection, pk)
    if state not in broker_rows.ACTIVE_STATES:
        return PauseOutcome(state, False, False)
    live = _live(owner, expires)
    connection.execute(
        "UPDATE nodes SET paused = 1, process_status = %s, control = CASE WHEN %s THEN 'pause' "
        "ELSE control END WHERE pk = %s",
        (PAUSE_STATUS, live, pk),
    )
    return PauseOutcome(state, True, live)


def play_tx(connection: Connection, pk: int) -> PlayOutcome:
    """Un-pause ``pk``; if nobody runs it and it is not waiting for children, enqueue it."""
    now = time.time()
    state, owner, expires = _row(connection, pk)
    if state not in broker_rows.ACTIVE_STATES:
        return PlayOutcome(state, False)
    submitted = connection.execute(
        "UPDATE nodes SET paused = 0, process_status = NULL, control = CASE WHEN control = "
        "'pause' THEN NULL ELSE control END WHERE pk = %s RETURNING submitted",
        (pk,),
    ).fetchone()
    waiting = connection.execute(
        "SELECT outstanding FROM waits WHERE parent_pk = %s", (pk,)
    ).fetchone()
    if (
        submitted is not None
        and submitted[0]
        and not _live(owner, expires)
        and not (waiting and waiting[0] > 0)
    ):
        broker_rows.enqueue(connection, pk, f"play:{pk}:{now}", now)
    return PlayOutcome(state, True)


def _control_requests(rows: Sequence[Sequence[Any]]) -> list[ControlRequest]:
    return [ControlRequest(int(pk), str(control)) for pk, control in rows]


#: ``(connection, owner)``: the control requests for processes that ``owner`` holds
pending_controls: OneQuery[[str], list[ControlRequest]] = OneQuery(
    "pending_controls",
    "SELECT pk, control FROM nodes WHERE owner = %s AND control IS NOT NULL",
    _control_requests,
)


def pause_unloadable_tx(connection: Connection, pk: int, owner: str, epoch: int,
                        message: str, task_pk: int | None) -> None:  # fmt: skip
    """Pause a process that its owner claimed but cannot load (its class does not import here):
    checkpoint kept, lease released, task done, ``message`` as its status and an ERROR log
    entry.  Fenced by the lease epoch like every write made for a process.
    """
    now = time.time()
    cursor = connection.execute(
        "UPDATE nodes SET paused = 1, process_status = %s, owner = NULL, lease_expires = NULL, "
        "mtime = %s, control = CASE WHEN control = 'pause' THEN NULL ELSE control END "
        "WHERE pk = %s AND owner = %s AND lease_epoch = %s",
        (message, now, pk, owner, epoch),
    )
    if cursor.rowcount != 1:
        check_lease(connection, pk, owner, epoch)
    connection.execute(
        "INSERT INTO logs (node_pk, time, levelname, message) VALUES (%s, %s, 'ERROR', %s)",
        (pk, now, message),
    )
    if task_pk is not None:
        broker_rows.ack_task(connection, task_pk)


def revive_tx(connection: Connection, pk: int, now: float) -> bool:
    """Give ``pk`` a task again, so that a daemon continues it from its last checkpoint."""
    return broker_rows.enqueue(connection, pk, f"revive:{pk}:{now}", now)


def control_request(connection: Connection, pk: int) -> str | None:
    """The request still waiting in ``pk``'s control column (None when taken or absent)."""
    row = connection.execute("SELECT control FROM nodes WHERE pk = %s", (pk,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def process_state(connection: Connection, pk: int) -> str | None:
    """The process state of node ``pk``; ``NotExistent`` if there is no such node."""
    row = (
        connection.execute("SELECT process_state FROM nodes WHERE pk = %s", (pk,)).fetchone()
        if pk in SQL_INTEGERS
        else None
    )
    if row is None:
        raise NotExistent(f"no node with the pk {pk}")
    return None if row[0] is None else str(row[0])
