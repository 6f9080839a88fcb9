"""The broker concern on sqlite."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from miniengine.storage.store import Store

__all__ = ["SqliteBroker"]


class SqliteBroker:
    """:class:`miniengine.storage.interfaces.broker.Broker` on a sqlite :class:`Store`."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store
