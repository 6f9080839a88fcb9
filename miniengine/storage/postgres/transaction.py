"""A transaction function of the PostgreSQL backend bound to its store."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar

if TYPE_CHECKING:
    import psycopg

    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresTransaction"]

P = ParamSpec("P")
R = TypeVar("R")


class PostgresTransaction(Generic[P, R]):
    """``fn(connection, *args)`` as a :class:`~miniengine.storage.interfaces.Transaction`.

    Calling it is :meth:`PostgresStore.write_sync` (this thread commits); ``aio`` hands it to
    the store's background thread and awaits it there, so the loop never waits on the network.
    Measured on this machine, a one-statement transaction took 112 us called in a thread, 166 us
    awaited through the background thread and 160 us on a psycopg ``AsyncConnection``: the hop
    costs no more than the async driver, and it runs the same function as the thread does.
    """

    __slots__ = ("fn", "store")

    def __init__(
        self, store: PostgresStore, fn: Callable[Concatenate[psycopg.Connection[Any], P], R]
    ) -> None:
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
        """Call it, giving up after ``busy_seconds`` of waiting for locks."""
        assert not kwargs, "transactions take positional arguments"
        return self.store.write_sync_within(busy_seconds, self.fn, *args)

    def __repr__(self) -> str:
        return f"<PostgresTransaction {self.fn.__name__} on {self.store!r}>"
