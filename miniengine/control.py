"""Pause, play and kill processes, wherever they are.

A process held by a live owner (a daemon worker, or a script running it with ``run``) is asked
through the database and its owner acts within a poll interval: a kill at once in an ``async``
step or when the running ``def`` step ends (its thread cannot be interrupted), a pause at the
next step boundary.  A request that a dead owner never acted on is honoured by the next claim.
A process that nobody holds -- created, waiting for children, or left by a dead owner -- is
changed in the database directly.  Killing cascades to every descendant that has not
terminated.  The AiiDA names (``pause_processes``, ``play_processes``, ``kill_processes``,
``revive_processes``) work too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence

from miniengine.core.states import ProcessState
from miniengine.runtime.context import store_for
from miniengine.runtime.nodes import ProcessNode
from miniengine.storage.interfaces import Backend

__all__ = [
    "Outcome",
    "kill",
    "kill_processes",
    "pause",
    "pause_processes",
    "play",
    "play_processes",
    "revive_processes",
]

#: An open database (a store), a path or URL, or None for the default database.
Db = Backend | str | os.PathLike[str] | None

#: The states of a process that has not terminated.
_ACTIVE_STATES = tuple(state.value for state in ProcessState if not state.is_terminal)


class Outcome(str):
    """What a control action did, as a sentence for people.

    ``confirmed`` is False when the process's live owner was asked and the action was not seen
    to take effect within the timeout (or the process ended otherwise first), so that a caller
    such as ``miniengine process kill --wait`` can fail instead of reporting success.
    """

    confirmed: bool

    def __new__(cls, text: str, confirmed: bool = True) -> Outcome:
        outcome = super().__new__(cls, text)
        outcome.confirmed = confirmed
        return outcome


def _backend(db: Db) -> Backend:
    """An open database as it is, else the store of a path (or of the default database)."""
    if db is None or isinstance(db, (str, os.PathLike)):
        return store_for(db)
    return db


def _pk(process: ProcessNode | int) -> int:
    pk = process.pk if isinstance(process, ProcessNode) else process
    if not isinstance(pk, int) or isinstance(pk, bool):
        raise TypeError(f"expected a process node or pk, got {process!r}")
    return pk


#: The longest wait for a commit between two looks when waiting without a timeout.
_LOOK_EVERY = 1.0


def _wait_for_end(store: Backend, pk: int, timeout: float | None) -> str | None:
    """The state the process terminated in, or None if it is still active after ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    marker = store.commit_marker()  # before the look: a commit after it ends the wait
    while True:
        state = store.control.process_state(pk)
        if state not in _ACTIVE_STATES:
            return state
        left = _LOOK_EVERY if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return None
        marker = store.wait_for_commit(marker, min(left, _LOOK_EVERY))


def _wait_for_control(store: Backend, pk: int, timeout: float | None) -> bool:
    """Wait until the owner has taken the control request (the column is cleared)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    marker = store.commit_marker()
    while True:
        if store.control.control_request(pk) is None:
            return True
        left = _LOOK_EVERY if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return False
        marker = store.wait_for_commit(marker, min(left, _LOOK_EVERY))


def kill(
    process: ProcessNode | int,
    message: str | None = None,
    *,
    db: Db = None,
    wait: bool = False,
    timeout: float | None = 5.0,
) -> Outcome:
    """Kill a process and its non-terminated descendants; returns what happened, for people.

    A process that a live owner runs is killed by that owner: at once in an ``async`` step, at
    the end of the running step in a ``def`` one (a thread cannot be interrupted).  With
    ``wait`` this returns once the process is KILLED, or an unconfirmed :class:`Outcome`.
    """
    store = _backend(db)
    pk = _pk(process)
    outcome = store.control.kill(pk, message)
    if outcome.state not in _ACTIVE_STATES:
        return Outcome(f"process {pk} has already terminated ({outcome.state}): nothing to kill")
    if pk not in outcome.requested:
        return Outcome(f"killed process {pk}")
    if not wait:
        return Outcome(f"asked the owner of process {pk} to kill it")
    final = _wait_for_end(store, pk, timeout)
    if final == ProcessState.KILLED.value:
        return Outcome(f"killed process {pk}")
    if final is None:
        return Outcome(
            f"asked the owner of process {pk} to kill it; it has not confirmed yet", False
        )
    return Outcome(f"process {pk} ended {final} before the kill took effect", False)


def pause(
    process: ProcessNode | int, *, db: Db = None, wait: bool = False, timeout: float | None = 5.0
) -> Outcome:
    """Pause a process: it keeps its state and runs no further step until played."""
    store = _backend(db)
    pk = _pk(process)
    outcome = store.control.pause(pk)
    if not outcome.paused:
        return Outcome(f"process {pk} has already terminated ({outcome.state}): nothing to pause")
    if wait and outcome.live and not _wait_for_control(store, pk, timeout):
        return Outcome(f"asked the owner of process {pk} to pause it; it is still in a step", False)
    return Outcome(f"paused process {pk}")


def play(process: ProcessNode | int, *, db: Db = None) -> Outcome:
    """Let a paused process continue (enqueued again if nobody holds it)."""
    store = _backend(db)
    pk = _pk(process)
    outcome = store.control.play(pk)
    if not outcome.played:
        return Outcome(f"process {pk} has already terminated ({outcome.state}): nothing to play")
    return Outcome(f"played process {pk}")


def _select(
    processes: Sequence[ProcessNode | int] | None,
    all_entries: bool,
    store: Backend,
    states: Iterable[str],
) -> list[int]:
    if processes:
        return [_pk(process) for process in processes]
    if not all_entries:
        return []
    # oldest first: a caller is always older than what it calls, so a kill of "all" reaches a
    # waiting parent (and, through it, its children) before a child whose end would wake it
    return sorted(row.pk for row in store.provenance.process_rows(list(states), None, None))


def kill_processes(
    processes: Sequence[ProcessNode | int] | None = None,
    *,
    msg_text: str | None = None,
    all_entries: bool = False,
    timeout: float = 5.0,
    wait: bool = False,
    db: Db = None,
) -> list[Outcome]:
    """AiiDA's ``kill_processes``: kill the given processes (or all active ones)."""
    store = _backend(db)
    chosen = _select(processes, all_entries, store, _ACTIVE_STATES)
    return [kill(pk, msg_text, db=store, wait=wait, timeout=timeout) for pk in chosen]


def pause_processes(
    processes: Sequence[ProcessNode | int] | None = None,
    *,
    all_entries: bool = False,
    timeout: float = 5.0,
    wait: bool = False,
    db: Db = None,
) -> list[Outcome]:
    """AiiDA's ``pause_processes``."""
    store = _backend(db)
    chosen = _select(processes, all_entries, store, _ACTIVE_STATES)
    return [pause(pk, db=store, wait=wait, timeout=timeout) for pk in chosen]


def play_processes(
    processes: Sequence[ProcessNode | int] | None = None,
    *,
    all_entries: bool = False,
    timeout: float = 5.0,
    wait: bool = False,
    db: Db = None,
) -> list[Outcome]:
    """AiiDA's ``play_processes``."""
    store = _backend(db)
    chosen = _select(processes, all_entries, store, _ACTIVE_STATES)
    return [play(pk, db=store) for pk in chosen]


def revive_processes(processes: Sequence[ProcessNode | int], *, db: Db = None) -> list[str]:
    """AiiDA's ``revive_processes``: give unowned live processes a task again, so a daemon
    continues them from their last checkpoint (what ``process repair`` does for all)."""
    store = _backend(db)
    now = time.time()
    messages = []
    for process in processes:
        pk = _pk(process)
        store.control.revive(pk, now)
        messages.append(f"revived process {pk}")
    return messages
