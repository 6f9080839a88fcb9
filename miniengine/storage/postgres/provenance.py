"""The provenance concern on PostgreSQL: the statements of
:mod:`miniengine.storage.postgres.rows` bound to a store (reads on a reader connection of the
store, writes as one transaction each)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from miniengine.storage.interfaces.provenance import LinkRow, LogRow, NodeRow
from miniengine.storage.postgres import checkpoint_rows, computer_rows, repository_rows, rows
from miniengine.storage.postgres.transaction import PostgresTransaction
from miniengine.storage.repository import Repository

if TYPE_CHECKING:
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresProvenance"]


class PostgresProvenance:
    """:class:`miniengine.storage.interfaces.provenance.Provenance` on a :class:`PostgresStore`."""

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

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.store_data = PostgresTransaction(store, rows.store_data_tx)
        self.begin_process = PostgresTransaction(store, rows.begin_process_tx)
        self.begin_memoised = PostgresTransaction(store, checkpoint_rows.begin_memoised_tx)
        self.finish_process = PostgresTransaction(store, rows.finish_process_tx)
        self.add_log = PostgresTransaction(store, rows.add_log_tx)
        self.add_logs = PostgresTransaction(store, rows.add_logs_tx)
        self.update_label = PostgresTransaction(store, rows.update_label_tx)

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
        return self._store.read(computer_rows.repository)

    def referenced_object_keys(self) -> set[str]:
        return self._store.read(repository_rows.read_referenced_object_keys)
