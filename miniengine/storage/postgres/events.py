"""The events concern on PostgreSQL.

A trigger appends a row to ``events`` for every change of a process's state while a row exists
in ``watchers``; without subscribers it writes nothing.  It takes a transaction-level advisory
lock before inserting, so event ids become visible in commit order and a reader of ``id > last
seen`` never skips one committed later with a lower id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from miniengine.storage.interfaces.events import StateChange
from miniengine.storage.postgres import event_rows
from miniengine.storage.postgres.transaction import PostgresTransaction

if TYPE_CHECKING:
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresEvents"]


class PostgresEvents:
    """:class:`miniengine.storage.interfaces.events.Events` on a :class:`PostgresStore`."""

    __slots__ = ("_store", "add_watcher", "open_gate", "prune", "remove_watcher", "renew_watcher")

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.add_watcher = PostgresTransaction(store, event_rows.add_watcher_tx)
        self.renew_watcher = PostgresTransaction(store, event_rows.renew_watcher_tx)
        self.remove_watcher = PostgresTransaction(store, event_rows.remove_watcher_tx)
        self.prune = PostgresTransaction(store, event_rows.prune_tx)
        self.open_gate = PostgresTransaction(store, event_rows.open_gate_tx)

    def events_after(self, after: int) -> list[StateChange]:
        return self._store.read(event_rows.read_events, after)

    def gate_is_open(self, name: str) -> bool:
        return self._store.read(event_rows.gate_is_open, name)
