"""Which processes changed since a cursor: the diff behind the web view's live list.

No column says "changed since": ``mtime`` is not touched by pause and play, and is the writer's
clock; the ``events`` table is written only while a watcher is registered (a write, which a
reader may not be allowed to make).  But a process changes only while it is active (created,
running or waiting), and the active processes have their own index.  So a cursor holds the
active processes as last read and the highest node pk seen, and one statement (one snapshot,
:func:`miniengine.storage.query_rows.changes_query`) reads the active processes now, the nodes
above that pk, and the cursor's active processes that have ended; comparing the two gives every
change, whatever order the writers committed in.

New nodes are found by pk.  On sqlite writers are serialised, so pks become visible in
increasing order.  On PostgreSQL a transaction may commit pk 100 after another committed 101:
a pk missing below the highest one seen (a *gap*) is read again at every call until it shows,
or until every transaction that was running when it was first missed has ended (then it was
rolled back, an insert that did nothing, or deleted).  This module is the same on both
backends; the backends run the statements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from miniengine.storage.interfaces.reads import ProcessSummary

__all__ = [
    "ACTIVE",
    "INITIAL_GAP_WINDOW",
    "ChangeCursor",
    "Snapshot",
    "diff",
    "first_cursor",
    "needs_callers",
    "summary",
]

ACTIVE = frozenset({"created", "running", "waiting"})

#: How far below the highest pk a new PostgreSQL cursor looks for transactions in flight.
INITIAL_GAP_WINDOW = 10_000


@dataclass(frozen=True)
class ChangeCursor:
    """Where a reader of changes stands; opaque to callers (pass it back as it is).

    Only valid for the database it was read from."""

    #: the highest node pk seen
    top: int
    #: the active processes as last reported, by pk
    active: Mapping[int, ProcessSummary]
    #: pks below ``top`` not seen yet, each with the transaction horizon after which it is
    #: given up (None until the read after it was first missed sets it); PostgreSQL only
    gaps: Mapping[int, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """The transaction horizon of a PostgreSQL read: every transaction id below ``xmin`` has
    ended, and every one that had not started is at or above ``xmax``."""

    xmin: int
    xmax: int


def _key(summary: ProcessSummary) -> tuple[Any, ...]:
    return (
        summary.process_state,
        summary.exit_status,
        summary.paused,
        summary.mtime,
        summary.process_status,
    )


def summary(row: Sequence[Any], parent: int | None) -> ProcessSummary:
    """A :class:`ProcessSummary` from a row of ``SUMMARY_COLUMNS`` and ``process_status``."""
    pk, uuid, label, state, exit_status, paused, ctime, mtime, status = row
    return ProcessSummary(
        int(pk),
        str(uuid),
        label,
        str(state),
        None if exit_status is None else int(exit_status),
        bool(paused),
        float(ctime),
        float(mtime),
        parent,
        status,
    )


def diff(
    cursor: ChangeCursor,
    rows: Iterable[Sequence[Any]],
    callers: Mapping[int, int],
    snapshot: Snapshot | None,
) -> tuple[ChangeCursor, list[ProcessSummary]]:
    """The new cursor and the changed processes (pk order) from the rows of ``changes_query``.

    ``callers`` holds the caller of each process of :func:`needs_callers`; ``snapshot`` is the
    read's horizon on PostgreSQL (None on sqlite, where no gap can fill later).
    """
    changed: dict[int, ProcessSummary] = {}
    active: dict[int, ProcessSummary] = {}
    seen: set[int] = set()
    for row in rows:
        pk = int(row[0])
        seen.add(pk)
        if row[3] is None:  # a Data node: only its pk matters
            continue
        old = cursor.active.get(pk)
        parent = old.parent if old is not None else callers.get(pk)
        now = summary(row, parent)
        if now.process_state in ACTIVE:
            active[pk] = now
        if old is None or _key(old) != _key(now):
            changed[pk] = now
    top = max(seen, default=cursor.top)
    top = max(top, cursor.top)
    gaps: dict[int, int | None] = {}
    if snapshot is not None:
        for pk, horizon in cursor.gaps.items():
            if pk in seen:
                continue  # committed since
            if horizon is None:
                gaps[pk] = snapshot.xmax
            elif snapshot.xmin < horizon:
                gaps[pk] = horizon  # a transaction that may hold it is still running
        gaps.update((pk, None) for pk in range(cursor.top + 1, top) if pk not in seen)
    return ChangeCursor(top, active, gaps), [changed[pk] for pk in sorted(changed)]


def needs_callers(cursor: ChangeCursor, rows: Iterable[Sequence[Any]]) -> list[int]:
    """The processes among ``rows`` whose caller the cursor does not know yet."""
    return [int(row[0]) for row in rows if row[3] is not None and int(row[0]) not in cursor.active]


def first_cursor(
    active: Iterable[ProcessSummary],
    top: int,
    present: Iterable[int] | None = None,
) -> ChangeCursor:
    """The cursor of :meth:`current_cursor`: the active processes and the highest pk now;
    on PostgreSQL ``present`` is the pks seen in the window below ``top``, and the others
    in it are gaps that a transaction still running may fill."""
    gaps: dict[int, int | None] = {}
    if present is not None:
        have = set(present)
        gaps = {
            pk: None for pk in range(max(0, top - INITIAL_GAP_WINDOW) + 1, top) if pk not in have
        }
    return ChangeCursor(top, {row.pk: row for row in active}, gaps)
