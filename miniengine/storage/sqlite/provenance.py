"""The provenance concern on sqlite: the statements of :mod:`miniengine.storage.rows` bound to a
store (reads on the calling thread's reader connection, writes as one transaction each)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from miniengine.storage import checkpoint_rows, repository_rows, rows
from miniengine.storage.interfaces.provenance import LinkRow, LogRow, NodeRow
from miniengine.storage.repository import Repository
from miniengine.storage.sqlite.transaction import SqliteTransaction

if TYPE_CHECKING:
    from miniengine.storage.store import Store

__all__ = ["SqliteProvenance"]


class SqliteProvenance:
    """:class:`miniengine.storage.interfaces.provenance.Provenance` on a sqlite :class:`Store`."""

    __slots__ = (
        "_store",
        "add_log",
        "add_logs",
        "begin_memoised",
        "begin_process",
        "finish_process",
        "store_data",
        "update_label",
    )

    def __init__(self, store: Store) -> None:
        self._store = store
        self.store_data = SqliteTransaction(store, rows.store_data_tx)
        self.begin_process = SqliteTransaction(store, rows.begin_process_tx)
        self.begin_memoised = SqliteTransaction(store, checkpoint_rows.begin_memoised_tx)
        self.finish_process = SqliteTransaction(store, rows.finish_process_tx)
        self.add_log = SqliteTransaction(store, rows.add_log_tx)
        self.add_logs = SqliteTransaction(store, rows.add_logs_tx)
        self.update_label = SqliteTransaction(store, rows.update_label_tx)

    def node(self, identifier: int | str) -> NodeRow:
        return self._store.read(rows.read_node_row, identifier)

    def nodes(self, pks: Sequence[int]) -> dict[int, NodeRow]:
        return self._store.read(rows.read_node_rows, pks)

    def uuid_matches(self, text: str) -> list[int]:
        return self._store.read(rows.uuid_matches, text)

    def links(
        self, pk: int, incoming: bool, link_types: Sequence[str] | None = None
    ) -> list[LinkRow]:
        return self._store.read(rows.read_links, pk, incoming, link_types)

    def logs(self, pk: int) -> list[LogRow]:
        return self._store.read(rows.read_logs, pk)

    def process_rows(
        self, states: Sequence[str] | None, process_label: str | None, limit: int | None
    ) -> list[NodeRow]:
        return self._store.read(rows.read_process_rows, states, process_label, limit)

    def repository(self) -> Repository:
        return Repository.for_database(self._store.path)

    def referenced_object_keys(self) -> set[str]:
        return self._store.read(repository_rows.read_referenced_object_keys)
