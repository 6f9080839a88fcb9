"""Awaitable twins of ``load_node`` and ``find_processes`` for code on an event loop.

``load_node`` and ``find_processes`` query in the calling thread: in a FastAPI handler or a
Jupyter cell that is the loop's thread, and a listing of many processes would hold up every other
request meanwhile.  ``await aload_node(pk)`` and ``async for node in afind_processes(...)`` run
their queries on the backend's async reads (aiosqlite's thread on sqlite) and return the same
node classes, so the loop keeps answering while they wait.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from miniengine.core.states import ProcessState
from miniengine.exceptions import NotExistent
from miniengine.runtime.context import store_for
from miniengine.runtime.nodes import (
    ProcessNode,
    neither_pk_nor_uuid,
    node_from_row,
    node_lookups,
)

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["afind_processes", "aload_node"]


async def aload_node(
    identifier: int | str | None = None,
    *,
    pk: int | None = None,
    uuid: str | None = None,
    db: Backend | str | os.PathLike[str] | None = None,
) -> Any:
    """:func:`~miniengine.load_node` for a coroutine: the same arguments, node classes and
    errors, read without blocking the event loop."""
    *first, last = node_lookups("aload_node", identifier, pk, uuid)
    store = store_for(db)
    reads = store.async_reads
    for candidate in first:
        try:
            return node_from_row(store, await reads.node(candidate))
        except NotExistent:
            pass  # no such pk: a uuid prefix, perhaps
    try:
        return node_from_row(store, await reads.node(last))
    except NotExistent as exc:
        raise neither_pk_nor_uuid(first, last) or exc from None


def afind_processes(
    state: ProcessState | str | Sequence[ProcessState | str] | None = None,
    process_label: str | None = None,
    limit: int | None = None,
    *,
    db: Backend | str | os.PathLike[str] | None = None,
) -> AsyncIterator[ProcessNode]:
    """:func:`~miniengine.find_processes` for a coroutine: ``async for node in
    afind_processes(...)`` yields the process nodes, newest first, a page of rows at a time.

    The arguments are checked at once (``ValueError``, as ``find_processes``).  Each page is
    read from the latest commit, continuing below the last pk seen; breaking off the loop, or
    cancelling it, leaves nothing open."""
    if state is None:
        states = None
    else:
        items = [state] if isinstance(state, ProcessState | str) else list(state)
        states = [ProcessState(item).value for item in items]
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    store = store_for(db)
    return _process_nodes(store, states, process_label, limit)


async def _process_nodes(
    store: Backend, states: list[str] | None, process_label: str | None, limit: int | None
) -> AsyncIterator[ProcessNode]:
    async for row in store.async_reads.process_rows(states, process_label, limit):
        yield node_from_row(store, row)
