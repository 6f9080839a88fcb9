"""The caching concern on sqlite: :mod:`miniengine.storage.caching_rows` bound to a store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from miniengine.storage import caching_rows
from miniengine.storage.sqlite.transaction import SqliteTransaction

if TYPE_CHECKING:
    from miniengine.storage.store import Store

__all__ = ["SqliteCaching"]


class SqliteCaching:
    """:class:`miniengine.storage.interfaces.caching.Caching` on a :class:`Store`."""

    __slots__ = ("_store", "begin_cached", "create_calcjob_cached", "set_settings")

    def __init__(self, store: Store) -> None:
        self._store = store
        self.begin_cached = SqliteTransaction(store, caching_rows.begin_cached_tx)
        self.create_calcjob_cached = SqliteTransaction(store, caching_rows.create_calcjob_cached_tx)
        self.set_settings = SqliteTransaction(store, caching_rows.set_settings_tx)

    def node_hash(self, pk: int) -> str | None:
        return self._store.read(caching_rows.node_hash, pk)

    def cache_source(self, process_type: str, node_hash: str) -> str | None:
        return self._store.read(caching_rows.cache_source, process_type, node_hash)

    def settings(self, names: Sequence[str]) -> dict[str, Any]:
        return self._store.read(caching_rows.settings, names)
