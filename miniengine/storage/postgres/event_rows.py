"""The SQL of state-change broadcasts and test gates on PostgreSQL (the port of the SQL in
``storage/sqlite/events.py``).

The trigger of the schema appends a row to ``events`` for every change of a process's state
while a watcher has not expired.  Ids are handed out in commit order (the trigger serialises
event writers with an advisory lock), so ``id > last seen`` never skips a row that commits
later with a lower id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from miniengine.storage.interfaces.events import KEEP_EVENTS_SECONDS, StateChange, Watcher

if TYPE_CHECKING:
    from miniengine.storage.postgres.rows import Connection

__all__ = [
    "add_watcher_tx",
    "gate_is_open",
    "open_gate_tx",
    "prune_tx",
    "read_events",
    "remove_watcher_tx",
    "renew_watcher_tx",
]


def add_watcher_tx(connection: Connection, expires: float) -> Watcher:
    """Register a subscriber; its id, and the last event id before it (it reads after that)."""
    row = connection.execute(
        "INSERT INTO watchers (expires) VALUES (%s) RETURNING id, "
        "(SELECT coalesce(max(id), 0) FROM events)",
        (expires,),
    ).fetchone()
    assert row is not None
    return Watcher(int(row[0]), int(row[1]))


def renew_watcher_tx(connection: Connection, watcher_id: int, expires: float) -> None:
    connection.execute("UPDATE watchers SET expires = %s WHERE id = %s", (expires, watcher_id))


def remove_watcher_tx(connection: Connection, watcher_id: int) -> None:
    connection.execute("DELETE FROM watchers WHERE id = %s", (watcher_id,))


def read_events(connection: Connection, after: int) -> list[StateChange]:
    return [
        StateChange(int(a), int(b), c, str(d), float(e))
        for a, b, c, d, e in connection.execute(
            "SELECT id, node_pk, from_state, to_state, time FROM events WHERE id > %s "
            "ORDER BY id LIMIT 10000",
            (after,),
        )
    ]


def prune_tx(connection: Connection, now: float) -> None:
    """Drop old events and lapsed subscribers (run by daemon workers now and then)."""
    connection.execute("DELETE FROM events WHERE time < %s", (now - KEEP_EVENTS_SECONDS,))
    connection.execute("DELETE FROM watchers WHERE expires < %s", (now,))


def open_gate_tx(connection: Connection, name: str, now: float) -> None:
    connection.execute(
        "INSERT INTO gates (name, opened) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
        (name, now),
    )


def gate_is_open(connection: Connection, name: str) -> bool:
    return connection.execute("SELECT 1 FROM gates WHERE name = %s", (name,)).fetchone() is not None
