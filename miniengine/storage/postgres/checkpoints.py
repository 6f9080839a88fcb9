"""The checkpoints concern on PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresCheckpoints"]


class PostgresCheckpoints:
    """:class:`~miniengine.storage.interfaces.checkpoints.Checkpoints` on a PostgreSQL store."""

    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
