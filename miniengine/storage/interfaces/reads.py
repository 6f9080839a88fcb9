"""Reads that an application awaits, served without ever blocking its event loop.

The backend's plain reads run in the calling thread: right for a script, a worker thread or the
engine's own short lookups, wrong for an application whose loop also answers requests while it
lists a million processes.  :class:`AsyncReads` is the awaitable twin of those reads; the sqlite
backend serves it on aiosqlite's connection thread, PostgreSQL on psycopg's async connection.
Rows are the provenance concern's :class:`~miniengine.storage.interfaces.provenance.NodeRow`, so
the same node objects are built from either path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from miniengine.storage.interfaces.provenance import NodeRow

if TYPE_CHECKING:
    from miniengine.core.query import QuerySpec

__all__ = ["AsyncReads"]


class AsyncReads(Protocol):
    """Awaitable reads of one open database, for coroutines on any event loop.

    Each loop gets its own connection, opened on first use and closed with the loop (or with
    the database, whichever comes first), so nothing outlives the application's loop.
    """

    async def node(self, identifier: int | str) -> NodeRow:
        """A node by pk, or by uuid or a unique prefix of it, as the provenance concern's
        ``node``: the same errors (``NotExistent``, ``MultipleObjectsError``)."""
        ...

    async def nodes(self, pks: Sequence[int]) -> dict[int, NodeRow]:
        """The rows of the nodes in ``pks`` by pk; a missing pk is left out."""
        ...

    def process_rows(
        self, states: Sequence[str] | None, process_label: str | None, limit: int | None
    ) -> AsyncIterator[NodeRow]:
        """Process nodes, newest first, with the filters of the provenance concern's
        ``process_rows``, read a page at a time.

        Each page is read from the latest commit and the next page continues below the last pk
        seen, so a long iteration holds no read snapshot open between pages, and breaking off
        (or being cancelled) leaves nothing to clean up."""
        ...

    async def query_rows(self, spec: QuerySpec) -> list[tuple[Any, ...]]:
        """The rows of a QueryBuilder query, as the query builder concern's ``rows``."""
        ...

    async def close(self) -> None:
        """Close the connection of the running loop (the next read opens a new one)."""
        ...
