"""Which processes changed since a cursor: the diff behind the web view's live list.

No column says "changed since": ``mtime`` is not touched by pause and play, and is the writer's
clock; the ``events`` table is written only while a watcher is registered (a write, which a
reader may not be allowed to make).  But a process changes only while it is active (created,
running or waiting), and the active processes have their own index.  So a cursor holds the
active processes as last reported, grouped in buckets of pks with a fingerprint per bucket,
and the highest node pk seen.  A read is two statements:

1. one snapshot of the fingerprints of the active processes now, bucket by bucket (the
   database concatenates each bucket's rows: the reader compares a few hundred strings, not
   ten thousand rows), and of the nodes above the cursor's highest pk (the first
   :data:`NEW_ROWS` of them; further statements read on from the last);
2. only for the buckets whose fingerprint changed: their active processes now, and those
   the cursor knew there (ended since, or not).

Comparing them with the cursor gives every change, whatever order the writers committed in.
What changes between the two statements is either read by the second or changes a
fingerprint that the next read sees: it may be reported twice, never lost.

New nodes are found by pk.  On sqlite writers are serialised, so pks become visible in
increasing order.  On PostgreSQL a transaction may commit pk 100 after another committed 101:
a pk missing below the highest one seen (a *gap*) is read again at every call until it shows,
or until every transaction that was running when it was first missed has ended (then it was
rolled back, an insert that did nothing, or deleted).  This module is the same on both
backends; each backend runs the statements with its own marks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from miniengine.storage.interfaces.reads import ProcessSummary
from miniengine.storage.query_rows import (
    Dialect,
    bucket_rows_query,
    callers_query,
    changes_query,
)

__all__ = [
    "ACTIVE",
    "BUCKETS",
    "INITIAL_GAP_WINDOW",
    "NEW_ROWS",
    "ChangeCursor",
    "Diff",
    "Snapshot",
    "active_processes",
    "first_cursor",
    "read_changes",
]

ACTIVE = frozenset({"created", "running", "waiting"})

#: About how many buckets the active processes of a new cursor fall into (more as new
#: processes come): each is one string in a read, and a changed one is read row by row.
BUCKETS = 256

#: How far below the highest pk a new PostgreSQL cursor looks for transactions in flight.
INITIAL_GAP_WINDOW = 10_000

#: Rows per statement when reading callers or buckets by lists of pks.
_CHUNK = 500

#: New nodes read per statement by a reader of changes.
NEW_ROWS = 2000

Fetch = Callable[[str, Sequence[Any]], Awaitable[Sequence[Sequence[Any]]]]


@dataclass(frozen=True)
class Snapshot:
    """The transaction horizon of a PostgreSQL read: every transaction id below ``xmin`` has
    ended, and every one that had not started is at or above ``xmax``."""

    xmin: int
    xmax: int


@dataclass(frozen=True)
class ChangeCursor:
    """Where a reader of changes stands; opaque to callers (pass it back as it is).

    Only valid for the database it was read from."""

    #: the highest node pk seen
    top: int
    #: the active processes as last reported, by pk
    active: Mapping[int, ProcessSummary]
    #: the pks of a bucket are those with the same ``pk // bucket_size``
    bucket_size: int = 64
    #: the fingerprint of each bucket of active processes as last read
    buckets: Mapping[int, str] = field(default_factory=dict)
    #: pks below ``top`` not seen yet, each with the transaction horizon after which it is
    #: given up (None until the read after it was first missed sets it); PostgreSQL only
    gaps: Mapping[int, int | None] = field(default_factory=dict)


def _key(summary: ProcessSummary) -> tuple[Any, ...]:
    return (
        summary.process_state,
        summary.exit_status,
        summary.paused,
        summary.mtime,
        summary.process_status,
    )


def _summary(row: Sequence[Any], parent: int | None) -> ProcessSummary:
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


def first_cursor(
    active: Sequence[ProcessSummary], top: int, present: Iterable[int] | None = None
) -> ChangeCursor:
    """The cursor of ``current_cursor``: the active processes (read after ``top``) and the
    highest pk now; on PostgreSQL ``present`` is the pks seen in the window below ``top``,
    and the others in it are gaps that a transaction still running may fill.

    It has no fingerprints yet, so the first read compares every active process once (and
    reports only those that changed meanwhile)."""
    gaps: dict[int, int | None] = {}
    if present is not None:
        have = set(present)
        low = max(0, top - INITIAL_GAP_WINDOW)
        gaps = {pk: None for pk in range(low + 1, top) if pk not in have}
    return ChangeCursor(
        top=top,
        active={row.pk: row for row in active},
        bucket_size=bucket_size_for(active, top),
        gaps=gaps,
    )


async def active_processes(
    page: Callable[..., Awaitable[list[ProcessSummary]]], size: int
) -> list[ProcessSummary]:
    """Every active process, read with ``page`` (a backend's ``process_page``) ``size`` at a
    time, so that no single read builds thousands of rows while the loop waits."""
    found: list[ProcessSummary] = []
    before: int | None = None
    while True:
        rows = await page(states=sorted(ACTIVE), before_pk=before, limit=size)
        found.extend(rows)
        if len(rows) < size:
            return found
        before = rows[-1].pk


def bucket_size_for(active: Sequence[ProcessSummary], top: int) -> int:
    """A bucket size that spreads the pks from the lowest active one to ``top`` over about
    :data:`BUCKETS` buckets (at least 16 pks each)."""
    low = min((row.pk for row in active), default=top)
    return max(16, (top - low) // BUCKETS + 1)


async def read_changes(
    fetch: Fetch,
    dialect: Dialect,
    first_statement: str,
    cursor: ChangeCursor,
    with_snapshot: bool,
) -> tuple[ChangeCursor, list[ProcessSummary]]:
    """``changes_after`` on any backend: ``first_statement`` is ``changes_query`` (with two
    leading columns ``xmin, xmax`` and one row at least when ``with_snapshot``).

    The new nodes come :data:`NEW_ROWS` at a time, each batch a statement of its own and
    compared on its own, so a reader far behind (a big import just committed) never builds
    or compares them all while the loop waits."""
    found = await fetch(
        first_statement,
        (cursor.bucket_size, cursor.top, NEW_ROWS, dialect.list_param(list(cursor.gaps))),
    )
    snapshot = None
    if with_snapshot:
        snapshot = Snapshot(int(found[0][0]), int(found[0][1]))
        found = [row[2:] for row in found if row[2] is not None]
    fingerprints = {int(row[1]): str(row[2]) for row in found if row[0] == 0}
    changed = {
        bucket
        for bucket in fingerprints.keys() | cursor.buckets.keys()
        if fingerprints.get(bucket) != cursor.buckets.get(bucket)
    }
    # a bucket that holds none of the active processes now but held one the cursor knew has
    # changed too, fingerprint or not (a cursor fresh from first_cursor has none to compare)
    changed.update({pk // cursor.bucket_size for pk in cursor.active} - fingerprints.keys())
    changes = Diff(cursor, changed)
    nodes = [row[1:] for row in found if row[0] == 1]
    while True:
        await changes.add(nodes, await _callers(fetch, dialect, cursor, nodes), True)
        above = [int(row[0]) for row in nodes if int(row[0]) > cursor.top]
        if len(above) < NEW_ROWS:
            break
        more = await fetch(  # more above the last one read: read on from it
            changes_query(dialect, with_buckets=False),
            (max(above), NEW_ROWS, dialect.list_param([])),
        )
        nodes = [row[1:] for row in more]
    size = cursor.bucket_size
    buckets = sorted(changed)
    known = [pk for pk in cursor.active if pk // size in changed]
    for start in range(0, max(len(buckets), len(known)), _CHUNK):
        rows = await fetch(
            bucket_rows_query(dialect),
            (
                size,
                dialect.list_param(buckets[start : start + _CHUNK]),
                dialect.list_param(known[start : start + _CHUNK]),
            ),
        )
        await changes.add(rows, await _callers(fetch, dialect, cursor, rows), False)
    return changes.finish(fingerprints, snapshot)


async def _callers(
    fetch: Fetch, dialect: Dialect, cursor: ChangeCursor, rows: Sequence[Sequence[Any]]
) -> dict[int, int]:
    """The caller of each process among ``rows`` that the cursor does not know yet."""
    new = sorted({int(row[0]) for row in rows if row[3] is not None} - cursor.active.keys())
    callers: dict[int, int] = {}
    for start in range(0, len(new), _CHUNK):
        page = dialect.list_param(new[start : start + _CHUNK])
        for child, caller in await fetch(callers_query(dialect), (page,)):
            callers.setdefault(int(child), int(caller))
    return callers


class Diff:
    """The comparison of what a read finds with a cursor, fed a batch of rows at a time.

    Rows are ``SUMMARY_COLUMNS`` and ``process_status`` (a Data node has a NULL state); a
    later row of a pk overrides an earlier one (it was read later).  ``changed`` are the
    buckets whose fingerprint changed: all their active processes are among the rows."""

    def __init__(self, cursor: ChangeCursor, changed: set[int]) -> None:
        self.cursor = cursor
        self.changed = changed
        size = cursor.bucket_size
        self.active = {pk: row for pk, row in cursor.active.items() if pk // size not in changed}
        self.reported: dict[int, ProcessSummary] = {}
        self.seen: set[int] = set()

    async def add(
        self, rows: Iterable[Sequence[Any]], callers: Mapping[int, int], new_nodes: bool
    ) -> None:
        """Compare a batch (``new_nodes``: nodes above the cursor's highest pk or among its
        gaps), giving the loop a turn every :data:`_CHUNK` rows."""
        for count, row in enumerate(rows, 1):
            if count % _CHUNK == 0:
                await asyncio.sleep(0)
            pk = int(row[0])
            if new_nodes:
                self.seen.add(pk)
            if row[3] is None:  # a Data node: only its pk matters
                continue
            old = self.cursor.active.get(pk)
            now = _summary(row, old.parent if old is not None else callers.get(pk))
            if now.process_state in ACTIVE:
                self.active[pk] = now
            else:
                self.active.pop(pk, None)
            if old is None or _key(old) != _key(now):
                self.reported[pk] = now

    def finish(
        self, fingerprints: Mapping[int, str], snapshot: Snapshot | None
    ) -> tuple[ChangeCursor, list[ProcessSummary]]:
        """The new cursor and the changed processes (pk order); ``snapshot`` is the horizon
        of the read on PostgreSQL (None on sqlite, where no gap fills later)."""
        cursor, seen = self.cursor, self.seen
        top = max(max(seen, default=cursor.top), cursor.top)
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
        buckets = {b: f for b, f in cursor.buckets.items() if b not in self.changed}
        buckets.update((b, fingerprints[b]) for b in self.changed if b in fingerprints)
        new = ChangeCursor(top, self.active, cursor.bucket_size, buckets, gaps)
        return new, [self.reported[pk] for pk in sorted(self.reported)]
