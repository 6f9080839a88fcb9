"""State-change broadcasts: ``(node pk, from state, to state, time)`` as processes move.

``with subscribe(db=...) as changes:`` registers a subscriber (a row in ``watchers`` that it
renews while it listens); while any subscriber exists, database triggers append every state
change of every process to ``events`` in the same transaction as the change.  Iterating (sync or
``async for``) yields the changes as they commit, reading only ``PRAGMA data_version`` until
another connection commits.  Without subscribers the triggers write nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio

from miniengine.runtime.context import store_for
from miniengine.storage.store import Store

__all__ = ["StateChange", "Subscription", "subscribe"]

#: A subscription is renewed this often and lapses after twice as long without renewal.
RENEW_EVERY = 5.0
POLL_INTERVAL = 0.005
#: Events older than this are pruned by daemon workers.
KEEP_EVENTS_SECONDS = 3600.0


@dataclass(frozen=True)
class StateChange:
    """One process moved from ``from_state`` (None when it was created) to ``to_state``."""

    id: int
    pk: int
    from_state: str | None
    to_state: str
    time: float


class Subscription:
    """The state changes committed since the subscription started, optionally for some pks."""

    def __init__(self, store: Store, pks: Iterable[int] | None) -> None:
        self.store = store
        self.pks = set(pks) if pks is not None else None
        self._watcher_id: int | None = None
        self._last_id = 0
        self._renewed = 0.0
        self._version = -1

    def __enter__(self) -> Subscription:
        now = time.time()
        self._watcher_id, self._last_id = self.store.write_sync(_add_watcher, now + 2 * RENEW_EVERY)
        self._renewed = now
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._watcher_id is not None and not self.store.closed:
            self.store.write_sync(_remove_watcher, self._watcher_id)
        self._watcher_id = None

    def _renew(self) -> None:
        now = time.time()
        if now - self._renewed > RENEW_EVERY and self._watcher_id is not None:
            self.store.write_sync(_renew_watcher, self._watcher_id, now + 2 * RENEW_EVERY)
            self._renewed = now

    def poll(self) -> list[StateChange]:
        """The changes committed since the last call (an empty list if nothing changed)."""
        self._renew()
        version = self.store.data_version()
        if version == self._version:
            return []
        self._version = version
        rows = self.store.read(_read_events, self._last_id)
        if rows:
            self._last_id = rows[-1][0]
        return [StateChange(*row) for row in rows if self.pks is None or row[1] in self.pks]

    def __iter__(self) -> Iterator[StateChange]:
        while True:
            changes = self.poll()
            yield from changes
            if not changes:
                time.sleep(POLL_INTERVAL)

    async def __aiter__(self) -> AsyncIterator[StateChange]:
        while True:
            changes = self.poll()
            for change in changes:
                yield change
            if not changes:
                await anyio.sleep(POLL_INTERVAL)


def subscribe(
    pks: Iterable[int] | None = None, *, db: Store | str | os.PathLike[str] | None = None
) -> Subscription:
    """Subscribe to state changes (of ``pks`` only, if given); use it as a context manager."""
    return Subscription(store_for(db), pks)


def _add_watcher(connection: Any, expires: float) -> tuple[int, int]:
    cursor = connection.execute("INSERT INTO watchers (expires) VALUES (?)", (expires,))
    last = connection.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    return int(cursor.lastrowid), int(last)


def _renew_watcher(connection: Any, watcher_id: int, expires: float) -> None:
    connection.execute("UPDATE watchers SET expires = ? WHERE id = ?", (expires, watcher_id))


def _remove_watcher(connection: Any, watcher_id: int) -> None:
    connection.execute("DELETE FROM watchers WHERE id = ?", (watcher_id,))


def _read_events(connection: Any, after: int) -> list[tuple[int, int, str | None, str, float]]:
    return [
        (int(a), int(b), c, str(d), float(e))
        for a, b, c, d, e in connection.execute(
            "SELECT id, node_pk, from_state, to_state, time FROM events WHERE id > ? "
            "ORDER BY id LIMIT 10000",
            (after,),
        )
    ]


def prune_tx(connection: Any, now: float) -> None:
    """Drop old events and lapsed subscribers (run by daemon workers now and then)."""
    connection.execute("DELETE FROM events WHERE time < ?", (now - KEEP_EVENTS_SECONDS,))
    connection.execute("DELETE FROM watchers WHERE expires < ?", (now,))
