"""The control concern on sqlite."""

from __future__ import annotations

from typing import TYPE_CHECKING

from miniengine.storage import control_rows
from miniengine.storage.sqlite.read import SqliteRead
from miniengine.storage.sqlite.transaction import SqliteTransaction

if TYPE_CHECKING:
    from miniengine.storage.store import Store

__all__ = ["SqliteControl"]


class SqliteControl:
    """:class:`miniengine.storage.interfaces.control.Control` on a sqlite :class:`Store`."""

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

    def __init__(self, store: Store) -> None:
        self._store = store
        self.kill = SqliteTransaction(store, control_rows.kill_tx)
        self.pause = SqliteTransaction(store, control_rows.pause_tx)
        self.play = SqliteTransaction(store, control_rows.play_tx)
        self.revive = SqliteTransaction(store, control_rows.revive_tx)
        self.pause_unloadable = SqliteTransaction(store, control_rows.pause_unloadable_tx)
        self.honour_pending_kill = SqliteTransaction(store, control_rows.honour_pending_kill)
        self.kill_in_database = SqliteTransaction(store, control_rows.kill_in_database)
        self.pending_controls = SqliteRead(store, control_rows.pending_controls)

    def control_request(self, pk: int) -> str | None:
        return self._store.read(control_rows.control_request, pk)

    def process_state(self, pk: int) -> str | None:
        return self._store.read(control_rows.process_state, pk)
