"""``process repair`` on PostgreSQL (the port of ``storage/repair_rows.py``): find and fix
inconsistencies between the queue and the nodes, one sentence per finding."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from miniengine.storage.postgres import broker_rows, control_rows
from miniengine.storage.postgres.clock import SERVER_NOW

if TYPE_CHECKING:
    from miniengine.storage.postgres.rows import Connection

__all__ = ["repair_tx"]


def repair_tx(connection: Connection, dry_run: bool = False) -> list[str]:
    """Fix what is inconsistent (unless ``dry_run``) and say what, one sentence per finding."""
    now = time.time()
    found: list[str] = []

    # a task for a process that has terminated
    for task_pk, process_pk, state in connection.execute(
        "SELECT t.pk, t.process_pk, n.process_state FROM tasks t JOIN nodes n ON n.pk = "
        "t.process_pk WHERE t.status IN ('ready', 'leased') AND n.process_state NOT IN "
        "('created', 'running', 'waiting') ORDER BY t.pk"
    ).fetchall():
        found.append(f"task {task_pk} is for process {process_pk}, which is {state}: dropped")
        if not dry_run:
            broker_rows.ack_task(connection, task_pk)

    # an expired run-mode lease, or a submitted process whose owner died without a task
    expired = connection.execute(
        "SELECT pk, submitted FROM nodes WHERE process_state IN ('created', 'running', "
        f"'waiting') AND owner IS NOT NULL AND lease_expires < {SERVER_NOW} ORDER BY pk"
    ).fetchall()
    for pk, submitted in expired:
        what = "re-queued" if submitted else "marked EXCEPTED (owner lost)"
        found.append(f"process {pk} has an expired lease and no live owner: {what}")
    if expired and not dry_run:
        broker_rows.recover_expired_tx(connection, now)

    # a live submitted process that nobody holds, that waits for nothing and has no task
    for (pk,) in connection.execute(
        "SELECT n.pk FROM nodes n WHERE n.submitted = 1 AND n.paused = 0 AND n.owner IS NULL "
        "AND n.process_state IN ('created', 'running', 'waiting') "
        "AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.process_pk = n.pk "
        "AND t.status IN ('ready', 'leased')) "
        "AND NOT EXISTS (SELECT 1 FROM waits w WHERE w.parent_pk = n.pk AND w.outstanding > 0) "
        "ORDER BY n.pk"
    ).fetchall():
        found.append(f"process {pk} is live but has no task: enqueued")
        if not dry_run:
            broker_rows.enqueue(connection, pk, f"repair:{pk}:{now}", now)

    # an orphan: a live child whose caller has terminated
    for child_pk, parent_pk, parent_state in connection.execute(
        "SELECT c.pk, p.pk, p.process_state FROM links l JOIN nodes c ON c.pk = l.out_pk "
        "JOIN nodes p ON p.pk = l.in_pk WHERE l.link_type IN ('call_calc', 'call_work') "
        "AND c.process_state IN ('created', 'running', 'waiting') "
        "AND p.process_state NOT IN ('created', 'running', 'waiting') ORDER BY l.pk"
    ).fetchall():
        found.append(
            f"process {child_pk} is live but its caller {parent_pk} is {parent_state}: killed"
        )
        if not dry_run:
            control_rows.kill_tx(
                connection, child_pk, f"Killed by `process repair`: its caller is {parent_state}"
            )
    return found
