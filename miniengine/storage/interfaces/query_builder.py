"""The QueryBuilder concern: a :class:`~miniengine.core.query.QuerySpec` read as ONE statement.

The rows are plain tuples in the order of the spec's projections, a ``'*'`` projection taking
the columns of :class:`~miniengine.storage.interfaces.provenance.NodeRow` (or of
:class:`~miniengine.storage.interfaces.groups.GroupRow`); JSON projections (extras) come as JSON
text and attributes as their stored blob, which the runtime decodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from miniengine.core.query import QuerySpec
    from miniengine.storage.interfaces.transaction import Transaction

__all__ = ["QueryBuilderBackend"]


class QueryBuilderBackend(Protocol):
    """Compiles and runs QueryBuilder queries on one database."""

    def rows(self, spec: QuerySpec) -> list[tuple[Any, ...]]:
        """The rows of ``spec`` (one page of them when it has a limit or offset)."""
        ...

    def count(self, spec: QuerySpec) -> int:
        """How many rows ``spec`` has, counted in the database."""
        ...

    def explain(self, spec: QuerySpec) -> list[str]:
        """The database's plan for ``spec``'s statement, one line per step (to check indexes)."""
        ...

    @property
    def index_extra(self) -> Transaction[[str], str]:
        """Create (if missing) the expression index on the extra ``key`` of nodes, so that a
        filter or order on ``extras.KEY`` over many nodes reads the index; returns its name."""
        ...

    @property
    def index_field(self) -> Transaction[[str, tuple[str, ...]], str]:
        """Create (if missing) the expression index on the field ``column.path`` of nodes
        (``column``: ``'extras'`` or ``'attributes'``); returns its name."""
        ...

    @property
    def drop_index(self) -> Transaction[[str, tuple[str, ...]], bool]:
        """Drop the expression index on ``column.path`` of nodes; False if there was none."""
        ...
