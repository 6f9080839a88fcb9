"""What the web view's awaitable reads do alike on every backend, around their statements.

The statements are in :mod:`miniengine.storage.query_rows` (PostgreSQL spells them with its own
:class:`~miniengine.storage.query_rows.Dialect`); here the arguments are checked before anything
is read, and rows become the records of :mod:`miniengine.storage.interfaces.reads`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from miniengine.core.states import ProcessState
from miniengine.exceptions import ValidationError
from miniengine.storage.interfaces.reads import DaemonOverview, ProcessSummary, WorkerOverview
from miniengine.storage.rows import SQL_INTEGERS

__all__ = ["check_page", "daemon_overview", "page_summaries"]

_STATES = frozenset(state.value for state in ProcessState)


def check_page(
    states: Sequence[str] | None,
    label: str | None,
    group: str | None,
    since: float | None,
    until: float | None,
    before_pk: int | None,
    limit: int,
) -> int | None:
    """Check a page's arguments, raising ``ValidationError`` naming the bad one; return the
    pk to read below (``None``: the page is empty whatever the data)."""
    for name, text in (("label", label), ("group", group)):
        if text is not None and not isinstance(text, str):
            raise ValidationError(f"{name} must be a string, not {text!r}")
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and (
            isinstance(moment, bool) or not isinstance(moment, int | float) or moment != moment
        ):
            raise ValidationError(
                f"{name} must be a time in seconds since the epoch, not {moment!r}"
            )
    if isinstance(states, str):
        raise ValidationError(f"states must be a list of states, not the string {states!r}")
    for state in states or ():
        if state not in _STATES:
            raise ValidationError(
                f"unknown process state {state!r} (one of {', '.join(sorted(_STATES))})"
            )
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(f"limit must be a positive int, not {limit!r}")
    if before_pk is None:
        return SQL_INTEGERS[-1]
    if isinstance(before_pk, bool) or not isinstance(before_pk, int):
        raise ValidationError(f"before_pk must be an int, not {before_pk!r}")
    if before_pk <= 1:
        return None
    return min(before_pk, SQL_INTEGERS[-1])


def page_summaries(rows: Sequence[Sequence[Any]]) -> list[ProcessSummary]:
    """Summaries from rows of ``SUMMARY_COLUMNS``, the caller and ``process_status``."""
    return [
        ProcessSummary(
            int(pk),
            str(uuid),
            label,
            str(state),
            None if exit_status is None else int(exit_status),
            bool(paused),
            float(ctime),
            float(mtime),
            None if caller is None else int(caller),
            status,
        )
        for pk, uuid, label, state, exit_status, paused, ctime, mtime, caller, status in rows
    ]


def daemon_overview(
    now: float,
    lease_timeout: float,
    workers: Sequence[Sequence[Any]],
    queue: Sequence[Any],
    minutes: Sequence[Sequence[Any]],
) -> DaemonOverview:
    """The overview from the rows of ``READ_WORKERS``, ``queue_counts_query`` and
    ``finished_per_minute_query`` read at ``now``; a worker is alive while its heartbeat is
    younger than the lease timeout (after that its leases lapse and others take its work)."""
    first = int(now // 60) - 59
    counts = [0] * 60
    for minute, count in minutes:
        index = int(minute) - first
        if 0 <= index < 60:
            counts[index] += int(count)
    return DaemonOverview(
        workers=[
            WorkerOverview(
                id=str(worker),
                host=str(host),
                pid=int(pid),
                slots_used=int(busy),
                slots_total=int(slots),
                heartbeat=float(beat),
                alive=now - float(beat) < lease_timeout,
            )
            for worker, pid, slots, busy, beat, host in workers
        ],
        queue_depth=int(queue[0]),
        running_tasks=int(queue[1]),
        first_minute=first * 60.0,
        finished_per_minute=counts,
    )
