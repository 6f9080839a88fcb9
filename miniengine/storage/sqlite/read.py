"""A read function of the sqlite backend bound to its store."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Concatenate, Generic, ParamSpec, TypeVar

if TYPE_CHECKING:
    from miniengine.storage.store import Store

__all__ = ["SqliteRead"]

P = ParamSpec("P")
R = TypeVar("R")


class SqliteRead(Generic[P, R]):
    """``fn(connection, *args)`` as a :class:`~miniengine.storage.interfaces.read.Read`.

    Both forms read in the calling thread: a read of the local file takes microseconds and
    never waits for a writer, so ``aio`` does not hop to a thread either.
    """

    __slots__ = ("fn", "store")

    def __init__(self, store: Store, fn: Callable[Concatenate[sqlite3.Connection, P], R]) -> None:
        self.store = store
        self.fn = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        assert not kwargs, "reads take positional arguments"
        return self.store.read(self.fn, *args)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        assert not kwargs, "reads take positional arguments"
        return self.store.read(self.fn, *args)

    def __repr__(self) -> str:
        return f"<SqliteRead {self.fn.__name__} on {self.store!r}>"
