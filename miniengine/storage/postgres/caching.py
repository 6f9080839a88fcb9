"""The caching concern on PostgreSQL: :mod:`miniengine.storage.postgres.caching_rows`, bound."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from miniengine.storage.postgres import caching_rows
from miniengine.storage.postgres.transaction import PostgresTransaction

if TYPE_CHECKING:
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresCaching"]


class PostgresCaching:
    """:class:`miniengine.storage.interfaces.caching.Caching` on a :class:`PostgresStore`."""

    __slots__ = ("_store", "begin_cached", "create_calcjob_cached", "set_settings")

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.begin_cached = PostgresTransaction(store, caching_rows.begin_cached_tx)
        self.create_calcjob_cached = PostgresTransaction(
            store, caching_rows.create_calcjob_cached_tx
        )
        self.set_settings = PostgresTransaction(store, caching_rows.set_settings_tx)

    def node_hash(self, pk: int) -> str | None:
        return self._store.read(caching_rows.node_hash, pk)

    def cache_source(self, process_type: str, node_hash: str) -> str | None:
        return self._store.read(caching_rows.cache_source, process_type, node_hash)

    def settings(self, names: Sequence[str]) -> dict[str, Any]:
        return self._store.read(caching_rows.settings, names)
