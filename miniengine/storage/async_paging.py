"""The paging of the awaitable process listing, the same on every backend.

A listing is read a page at a time, each page continuing below the last pk seen, so nothing
stays open between pages: breaking off or cancelling half-way holds no read snapshot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from miniengine.storage.interfaces.provenance import NodeRow

__all__ = ["PAGE_ROWS", "process_rows_in_pages"]

#: Rows per page of an awaitable listing.  On sqlite a page is one hop to aiosqlite's thread:
#: ~0.3 ms of row building there (the GIL the loop may wait for) and of node building on the
#: loop; larger pages save hops but lengthen both.
PAGE_ROWS = 256

Fetch = Callable[[str, Any], Awaitable[Sequence[Sequence[Any]]]]
BuildQuery = Callable[[Sequence[str] | None, str | None, int, int | None], tuple[str, Any]]


async def process_rows_in_pages(
    fetch: Fetch,
    build_query: BuildQuery,
    states: Sequence[str] | None,
    process_label: str | None,
    limit: int | None,
) -> AsyncIterator[NodeRow]:
    """Yield the process rows ``build_query`` selects, newest first, ``limit`` at most,
    fetching one page of :data:`PAGE_ROWS` at a time with ``fetch(sql, params)``."""
    left = limit
    below: int | None = None
    while left is None or left > 0:
        size = PAGE_ROWS if left is None else min(PAGE_ROWS, left)
        page = await fetch(*build_query(states, process_label, size, below))
        for row in page:
            yield NodeRow._make(row)
        if len(page) < size:
            return
        below = page[-1][0]
        if left is not None:
            left -= len(page)
