"""The traversal concern on PostgreSQL: the statements of
:mod:`miniengine.storage.traversal_rows` with psycopg's parameter marker, and leases compared with
the server's clock (as PostgreSQL's leases are written)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from miniengine.core.graph_rules import TraversalLinks
from miniengine.storage import traversal_rows
from miniengine.storage.interfaces.traversal import GraphLink, LiveProcess
from miniengine.storage.postgres.clock import SERVER_NOW
from miniengine.storage.postgres.rows import Connection
from miniengine.storage.postgres.transaction import PostgresTransaction

if TYPE_CHECKING:
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresTraversal"]


def _now() -> str:
    return SERVER_NOW


def _traverse(connection: Connection, pks: Sequence[int], links: TraversalLinks) -> set[int]:
    return traversal_rows.traverse(connection, pks, links, "%s")


def _neighbour_links(
    connection: Connection, pks: Sequence[int], incoming: bool, types: Sequence[str]
) -> list[GraphLink]:
    return traversal_rows.neighbour_links(connection, pks, incoming, types, "%s")


def _live_processes(connection: Connection, pks: Sequence[int]) -> list[LiveProcess]:
    return traversal_rows.live_processes(connection, pks, "%s", _now())


def delete_nodes_tx(connection: Connection, pks: Sequence[int], links: TraversalLinks) -> set[int]:
    """Delete ``pks`` and what ``links`` reach from them (see ``Traversal.delete_nodes``)."""
    return traversal_rows.delete_nodes(connection, pks, links, "%s", _now(), lock_rows=True)


class PostgresTraversal:
    """:class:`miniengine.storage.interfaces.traversal.Traversal` on a :class:`PostgresStore`."""

    __slots__ = ("_store", "delete_nodes")

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.delete_nodes = PostgresTransaction(store, delete_nodes_tx)

    def traverse(self, pks: Sequence[int], links: TraversalLinks) -> set[int]:
        return self._store.read(_traverse, pks, links)

    def neighbour_links(
        self, pks: Sequence[int], *, incoming: bool, link_types: Sequence[str] = ()
    ) -> list[GraphLink]:
        return self._store.read(_neighbour_links, pks, incoming, link_types)

    def live_processes(self, pks: Sequence[int]) -> list[LiveProcess]:
        return self._store.read(_live_processes, pks)
