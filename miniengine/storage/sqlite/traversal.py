"""The traversal concern on sqlite: the statements of :mod:`miniengine.storage.traversal_rows`
with sqlite's parameter marker, and leases compared with this host's clock (as sqlite's leases
are written)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from miniengine.core.graph_rules import TraversalLinks
from miniengine.storage import traversal_rows
from miniengine.storage.interfaces.traversal import GraphLink, LiveProcess
from miniengine.storage.sqlite.transaction import SqliteTransaction

if TYPE_CHECKING:
    from miniengine.storage.store import Store

__all__ = ["SqliteTraversal"]


def _now() -> str:
    return repr(time.time())


def _traverse(
    connection: sqlite3.Connection, pks: Sequence[int], links: TraversalLinks
) -> set[int]:
    return traversal_rows.traverse(connection, pks, links, "?")


def _neighbour_links(
    connection: sqlite3.Connection, pks: Sequence[int], incoming: bool, types: Sequence[str]
) -> list[GraphLink]:
    return traversal_rows.neighbour_links(connection, pks, incoming, types, "?")


def _live_processes(connection: sqlite3.Connection, pks: Sequence[int]) -> list[LiveProcess]:
    return traversal_rows.live_processes(connection, pks, "?", _now())


def delete_nodes_tx(
    connection: sqlite3.Connection, pks: Sequence[int], links: TraversalLinks
) -> set[int]:
    """Delete ``pks`` and what ``links`` reach from them (see ``Traversal.delete_nodes``)."""
    return traversal_rows.delete_nodes(connection, pks, links, "?", _now())


class SqliteTraversal:
    """:class:`miniengine.storage.interfaces.traversal.Traversal` on a :class:`Store`."""

    __slots__ = ("_store", "delete_nodes")

    def __init__(self, store: Store) -> None:
        self._store = store
        self.delete_nodes = SqliteTransaction(store, delete_nodes_tx)

    def traverse(self, pks: Sequence[int], links: TraversalLinks) -> set[int]:
        return self._store.read(_traverse, pks, links)

    def neighbour_links(
        self, pks: Sequence[int], *, incoming: bool, link_types: Sequence[str] = ()
    ) -> list[GraphLink]:
        return self._store.read(_neighbour_links, pks, incoming, link_types)

    def live_processes(self, pks: Sequence[int]) -> list[LiveProcess]:
        return self._store.read(_live_processes, pks)
