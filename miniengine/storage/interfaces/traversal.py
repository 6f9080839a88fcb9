"""The traversal concern of a backend: following provenance links, and deleting along them.

Deletion and archives follow AiiDA's traversal rules (:mod:`miniengine.core.graph_rules`); both
backends compute the closure with batched queries on the link indexes, one round per step away
from the start, so a traversal costs a few queries per generation of the graph, not one per node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from miniengine.core.graph_rules import TraversalLinks
from miniengine.storage.interfaces.transaction import Transaction

__all__ = ["GraphLink", "LiveProcess", "Traversal"]


class GraphLink(NamedTuple):
    """One link of the provenance graph, from ``in_pk`` to ``out_pk``."""

    in_pk: int
    out_pk: int
    link_type: str
    label: str


class LiveProcess(NamedTuple):
    """A process that a worker holds now (running or waiting, its lease not expired)."""

    pk: int
    process_label: str | None
    process_state: str | None
    owner: str | None


class Traversal(Protocol):
    """Reads and the one deletion that follow the links of the provenance graph."""

    def traverse(self, pks: Sequence[int], links: TraversalLinks) -> set[int]:
        """The nodes among ``pks`` that exist, and every node reached from them by following
        ``links.forward`` link types from input to output and ``links.backward`` ones back."""
        ...

    def neighbour_links(
        self, pks: Sequence[int], *, incoming: bool, link_types: Sequence[str] = ()
    ) -> list[GraphLink]:
        """The links into (``incoming``) or out of the nodes ``pks``, of the given types (any
        type if none is given), in the order they were made."""
        ...

    def live_processes(self, pks: Sequence[int]) -> list[LiveProcess]:
        """The processes among ``pks`` that a worker holds now, which a deletion refuses."""
        ...

    @property
    def delete_nodes(self) -> Transaction[[Sequence[int], TraversalLinks], set[int]]:
        """Delete the nodes ``pks`` and all that ``links`` reach from them, with their links,
        logs, checkpoints, tasks, calcjob job rows, comments and group memberships, in one
        transaction; return the pks deleted.  Refuse (``InvalidOperation`` naming them, nothing
        deleted) if a worker holds any of those processes now.  Repository objects are left
        for ``db maintain``, which removes the ones no node refers to any more."""
        ...
