"""A read of the PostgreSQL backend that is one statement, bound to its store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

if TYPE_CHECKING:
    import psycopg

    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["OneQuery", "PostgresRead"]

P = ParamSpec("P")
R = TypeVar("R")


class OneQuery(Generic[P, R]):
    """A read that is one statement: its SQL (``%s`` for each argument, in order) and what its
    rows mean.  Called with a connection it is a row function like any other; written this way,
    the same statement can also be awaited on an async connection (:class:`PostgresRead`)."""

    __slots__ = ("__name__", "answer", "params", "sql")

    def __init__(
        self,
        name: str,
        sql: str,
        answer: Callable[[Sequence[Sequence[Any]]], R],
        params: Callable[P, tuple[Any, ...]] | None = None,
    ) -> None:
        self.__name__ = name
        self.sql = sql
        self.answer = answer
        #: the statement's parameters from the arguments (default: the arguments as they are)
        self.params = params

    def parameters(self, *args: P.args, **kwargs: P.kwargs) -> tuple[Any, ...]:
        assert not kwargs, "reads take positional arguments"
        return args if self.params is None else self.params(*args, **kwargs)

    def __call__(self, connection: psycopg.Connection[Any], *args: P.args, **kwargs: P.kwargs) -> R:
        return self.answer(
            connection.execute(self.sql, self.parameters(*args, **kwargs)).fetchall()
        )


class PostgresRead(Generic[P, R]):
    """A :class:`OneQuery` as a :class:`~miniengine.storage.interfaces.read.Read`.

    Calling it is :meth:`PostgresStore.read` (the calling thread waits).  ``aio`` sends the
    statement on the loop's async connection (:class:`PostgresAsyncReads`): the loop goes on
    while the server answers, and while the read waits for a server that went away.  Not a hop
    to a thread: a worker's loop asks "is work ready?" before each claim, and measured with one
    50-slot worker, a thread hop there took 9 % of its throughput; the async connection adds no
    thread and took none.
    """

    __slots__ = ("query", "store")

    def __init__(self, store: PostgresStore, query: OneQuery[P, R]) -> None:
        self.store = store
        self.query = query

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        assert not kwargs, "reads take positional arguments"
        return self.store.read(self.query, *args)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        query = self.query
        params = query.parameters(*args, **kwargs)
        return query.answer(await self.store.async_reads.fetch(query.sql, params))

    def __repr__(self) -> str:
        return f"<PostgresRead {self.query.__name__} on {self.store!r}>"
