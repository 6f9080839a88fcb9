"""A transaction function of the sqlite backend bound to its store."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Concatenate, Generic, ParamSpec, TypeVar

if TYPE_CHECKING:
    from miniengine.storage.store import Store

__all__ = ["SqliteTransaction"]

P = ParamSpec("P")
R = TypeVar("R")


class SqliteTransaction(Generic[P, R]):
    """``fn(connection, *args)`` as a :class:`~miniengine.storage.interfaces.Transaction`.

    Calling it is :meth:`Store.write_sync` (this thread commits); ``aio`` is :meth:`Store.write`
    (inline on the loop when uncontended, else the store's background thread).  The wrapper
    adds one Python call to a transaction of 20-60 us.
    """

    __slots__ = ("fn", "store")

    def __init__(self, store: Store, fn: Callable[Concatenate[sqlite3.Connection, P], R]) -> None:
        self.store = store
        self.fn = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        assert not kwargs, "transactions take positional arguments"
        return self.store.write_sync(self.fn, *args)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        assert not kwargs, "transactions take positional arguments"
        return await self.store.write(self.fn, *args)

    def deferring_interrupt(
        self, *args: P.args, **kwargs: P.kwargs
    ) -> tuple[R, KeyboardInterrupt | None]:
        assert not kwargs, "transactions take positional arguments"
        return self.store.write_sync_deferring_interrupt(self.fn, *args)

    def within(self, busy_seconds: float, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call it, waiting at most ``busy_seconds`` for another connection's write lock."""
        assert not kwargs, "transactions take positional arguments"
        return self.store.write_sync_within(busy_seconds, self.fn, *args)

    def __repr__(self) -> str:
        return f"<SqliteTransaction {self.fn.__name__} on {self.store!r}>"
