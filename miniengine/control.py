"""Pause, play and kill processes, wherever they are.

A process held by a live owner (a daemon worker, or a script running it with ``run``) is asked
through the database and its owner acts within a poll interval: a kill at once, a pause at the
next step boundary.  A process that nobody holds -- created, waiting for children, or left by a
dead owner -- is changed in the database directly.  Killing cascades to every descendant that has
not terminated.  The AiiDA names (``pause_processes``, ``play_processes``, ``kill_processes``,
``revive_processes``) work too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from miniengine.core.states import ProcessState
from miniengine.runtime.context import store_for
from miniengine.runtime.nodes import ProcessNode
from miniengine.storage import broker_rows, control_rows, rows
from miniengine.storage.store import Store

__all__ = [
    "kill",
    "kill_processes",
    "pause",
    "pause_processes",
    "play",
    "play_processes",
    "revive_processes",
]

Db = Store | str | os.PathLike[str] | None


def _pk(process: ProcessNode | int) -> int:
    pk = process.pk if isinstance(process, ProcessNode) else process
    if not isinstance(pk, int) or isinstance(pk, bool):
        raise TypeError(f"expected a process node or pk, got {process!r}")
    return pk


def _wait(store: Store, pk: int, done: Any, timeout: float | None) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        row = store.read(rows.read_node_row, pk)
        if done(row):
            return True
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def _wait_for_control(store: Store, pk: int, timeout: float | None) -> bool:
    """Wait until the owner has taken the control request (the column is cleared)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        row = store.read(
            lambda c: c.execute("SELECT control FROM nodes WHERE pk = ?", (pk,)).fetchone()
        )
        if row is None or row[0] is None:
            return True
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def kill(
    process: ProcessNode | int,
    message: str | None = None,
    *,
    db: Db = None,
    wait: bool = False,
    timeout: float | None = 5.0,
) -> str:
    """Kill a process and its non-terminated descendants; returns what happened, for people."""
    store = store_for(db)
    pk = _pk(process)
    outcome = store.write_sync(control_rows.kill_tx, pk, message)
    if outcome["state"] not in broker_rows.ACTIVE_STATES:
        return f"process {pk} has already terminated ({outcome['state']}): nothing to kill"
    requested = pk in outcome["requested"]  # type: ignore[operator]
    if (
        wait
        and requested
        and not _wait(store, pk, lambda row: row[5] == ProcessState.KILLED.value, timeout)
    ):
        return f"asked the owner of process {pk} to kill it; it has not confirmed yet"
    return f"killed process {pk}"


def pause(
    process: ProcessNode | int, *, db: Db = None, wait: bool = False, timeout: float | None = 5.0
) -> str:
    """Pause a process: it keeps its state and runs no further step until played."""
    store = store_for(db)
    pk = _pk(process)
    outcome = store.write_sync(control_rows.pause_tx, pk)
    if not outcome["paused"]:
        return f"process {pk} has already terminated ({outcome['state']}): nothing to pause"
    if wait and outcome.get("live") and not _wait_for_control(store, pk, timeout):
        return f"asked the owner of process {pk} to pause it; it is still in a step"
    return f"paused process {pk}"


def play(process: ProcessNode | int, *, db: Db = None) -> str:
    """Let a paused process continue (enqueued again if nobody holds it)."""
    store = store_for(db)
    pk = _pk(process)
    outcome = store.write_sync(control_rows.play_tx, pk)
    if not outcome["played"]:
        return f"process {pk} has already terminated ({outcome['state']}): nothing to play"
    return f"played process {pk}"


def _select(
    processes: Sequence[ProcessNode | int] | None,
    all_entries: bool,
    store: Store,
    states: Iterable[str],
) -> list[int]:
    if processes:
        return [_pk(process) for process in processes]
    if not all_entries:
        return []
    return [row[0] for row in store.read(rows.read_process_rows, list(states), None, None)]


def kill_processes(
    processes: Sequence[ProcessNode | int] | None = None,
    *,
    msg_text: str | None = None,
    all_entries: bool = False,
    timeout: float = 5.0,
    wait: bool = False,
    db: Db = None,
) -> list[str]:
    """AiiDA's ``kill_processes``: kill the given processes (or all active ones)."""
    store = store_for(db)
    chosen = _select(processes, all_entries, store, broker_rows.ACTIVE_STATES)
    return [kill(pk, msg_text, db=store, wait=wait, timeout=timeout) for pk in chosen]


def pause_processes(
    processes: Sequence[ProcessNode | int] | None = None,
    *,
    all_entries: bool = False,
    timeout: float = 5.0,
    wait: bool = False,
    db: Db = None,
) -> list[str]:
    """AiiDA's ``pause_processes``."""
    store = store_for(db)
    chosen = _select(processes, all_entries, store, broker_rows.ACTIVE_STATES)
    return [pause(pk, db=store, wait=wait, timeout=timeout) for pk in chosen]


def play_processes(
    processes: Sequence[ProcessNode | int] | None = None,
    *,
    all_entries: bool = False,
    timeout: float = 5.0,
    wait: bool = False,
    db: Db = None,
) -> list[str]:
    """AiiDA's ``play_processes``."""
    store = store_for(db)
    chosen = _select(processes, all_entries, store, broker_rows.ACTIVE_STATES)
    return [play(pk, db=store) for pk in chosen]


def revive_processes(processes: Sequence[ProcessNode | int], *, db: Db = None) -> list[str]:
    """AiiDA's ``revive_processes``: give unowned live processes a task again, so a daemon
    continues them from their last checkpoint (what ``process repair`` does for all)."""
    store = store_for(db)
    now = time.time()
    messages = []
    for process in processes:
        pk = _pk(process)

        def revive(connection: Any, pk: int = pk) -> bool:
            return broker_rows.enqueue(connection, pk, f"revive:{pk}:{now}", now)

        store.write_sync(revive)
        messages.append(f"revived process {pk}")
    return messages
