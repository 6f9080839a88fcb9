"""The control concern on PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresControl"]


class PostgresControl:
    """:class:`miniengine.storage.interfaces.control.Control` on a :class:`PostgresStore`."""

    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
