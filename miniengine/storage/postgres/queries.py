"""The queries concern on PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from miniengine.storage.postgres import query_rows

if TYPE_CHECKING:
    from miniengine.storage.interfaces.queries import ProcessOwner
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresQueries"]


class PostgresQueries:
    """:class:`miniengine.storage.interfaces.queries.Queries` on a :class:`PostgresStore`."""

    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    def process_owner(self, pk: int) -> ProcessOwner | None:
        return self._store.read(query_rows.process_owner, pk)
