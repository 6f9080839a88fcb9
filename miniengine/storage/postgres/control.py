"""The control concern on PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from miniengine.storage.postgres import control_rows
from miniengine.storage.postgres.read import PostgresRead
from miniengine.storage.postgres.transaction import PostgresTransaction

if TYPE_CHECKING:
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresControl"]


class PostgresControl:
    """:class:`miniengine.storage.interfaces.control.Control` on a :class:`PostgresStore`."""

    __slots__ = (
        "_store",
        "honour_pending_kill",
        "kill",
        "kill_in_database",
        "pause",
        "pause_unloadable",
        "pending_controls",
        "play",
        "revive",
    )

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.kill = PostgresTransaction(store, control_rows.kill_tx)
        self.pause = PostgresTransaction(store, control_rows.pause_tx)
        self.play = PostgresTransaction(store, control_rows.play_tx)
        self.revive = PostgresTransaction(store, control_rows.revive_tx)
        self.pause_unloadable = PostgresTransaction(store, control_rows.pause_unloadable_tx)
        self.honour_pending_kill = PostgresTransaction(store, control_rows.honour_pending_kill)
        self.kill_in_database = PostgresTransaction(store, control_rows.kill_in_database)
        self.pending_controls = PostgresRead(store, control_rows.pending_controls)

    def control_request(self, pk: int) -> str | None:
        return self._store.read(control_rows.control_request, pk)

    def process_state(self, pk: int) -> str | None:
        return self._store.read(control_rows.process_state, pk)
