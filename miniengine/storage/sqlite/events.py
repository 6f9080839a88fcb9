"""The events concern on sqlite.

Database triggers append a row to ``events`` for every change of a process's state while a row
exists in ``watchers``; without subscribers they write nothing.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from miniengine.storage.interfaces.events import KEEP_EVENTS_SECONDS, StateChange, Watcher
from miniengine.storage.sqlite.transaction import SqliteTransaction

if TYPE_CHECKING:
    from miniengine.storage.store import Store

__all__ = ["SqliteEvents"]


class SqliteEvents:
    """:class:`miniengine.storage.interfaces.events.Events` on a sqlite :class:`Store`."""

    __slots__ = ("_store", "add_watcher", "open_gate", "prune", "remove_watcher", "renew_watcher")

    def __init__(self, store: Store) -> None:
        self._store = store
        self.add_watcher = SqliteTransaction(store, _add_watcher)
        self.renew_watcher = SqliteTransaction(store, _renew_watcher)
        self.remove_watcher = SqliteTransaction(store, _remove_watcher)
        self.prune = SqliteTransaction(store, prune_tx)
        self.open_gate = SqliteTransaction(store, _open_gate_tx)

    def events_after(self, after: int) -> list[StateChange]:
        return self._store.read(_read_events, after)

    def gate_is_open(self, name: str) -> bool:
        return self._store.read(_gate_is_open, name)


def _add_watcher(connection: sqlite3.Connection, expires: float) -> Watcher:
    cursor = connection.execute("INSERT INTO watchers (expires) VALUES (?)", (expires,))
    last = connection.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    assert cursor.lastrowid is not None
    return Watcher(int(cursor.lastrowid), int(last))


def _renew_watcher(connection: sqlite3.Connection, watcher_id: int, expires: float) -> None:
    connection.execute("UPDATE watchers SET expires = ? WHERE id = ?", (expires, watcher_id))


def _remove_watcher(connection: sqlite3.Connection, watcher_id: int) -> None:
    connection.execute("DELETE FROM watchers WHERE id = ?", (watcher_id,))


def _read_events(connection: sqlite3.Connection, after: int) -> list[StateChange]:
    return [
        StateChange(int(a), int(b), c, str(d), float(e))
        for a, b, c, d, e in connection.execute(
            "SELECT id, node_pk, from_state, to_state, time FROM events WHERE id > ? "
            "ORDER BY id LIMIT 10000",
            (after,),
        )
    ]


def prune_tx(connection: sqlite3.Connection, now: float) -> None:
    """Drop old events and lapsed subscribers (run by daemon workers now and then)."""
    connection.execute("DELETE FROM events WHERE time < ?", (now - KEEP_EVENTS_SECONDS,))
    connection.execute("DELETE FROM watchers WHERE expires < ?", (now,))


def _open_gate_tx(connection: sqlite3.Connection, name: str, now: float) -> None:
    connection.execute("INSERT OR IGNORE INTO gates (name, opened) VALUES (?, ?)", (name, now))


def _gate_is_open(connection: sqlite3.Connection, name: str) -> bool:
    return connection.execute("SELECT 1 FROM gates WHERE name = ?", (name,)).fetchone() is not None
