"""The computers concern on PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from miniengine.storage.interfaces.computers import CodeRow, ComputerRow
from miniengine.storage.postgres import computer_rows
from miniengine.storage.postgres.transaction import PostgresTransaction

if TYPE_CHECKING:
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresComputers"]


class PostgresComputers:
    """:class:`miniengine.storage.interfaces.computers.Computers` on a :class:`PostgresStore`."""

    __slots__ = ("_store", "delete_computer", "insert_computer", "update_computer")

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.insert_computer = PostgresTransaction(store, computer_rows.insert_computer_tx)
        self.update_computer = PostgresTransaction(store, computer_rows.update_computer_tx)
        self.delete_computer = PostgresTransaction(store, computer_rows.delete_computer_tx)

    def read_computer(self, identifier: int | str) -> ComputerRow:
        return self._store.read(computer_rows.read_computer, identifier)

    def read_computers(self) -> list[ComputerRow]:
        return self._store.read(computer_rows.read_computers)

    def code_pks(self, label: str, computer_label: str | None) -> list[int]:
        return self._store.read(computer_rows.read_code_pks, label, computer_label)

    def code_rows(self) -> list[CodeRow]:
        return self._store.read(computer_rows.read_code_rows)
