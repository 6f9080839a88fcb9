"""The groups concern of a backend: what users add to nodes after the fact, as in AiiDA.

Extras (mutable key-value pairs of a node or a group, JSON values, kept as JSON so that queries
can filter on them), comments (notes on a node) and groups (named sets of nodes, typed by the
``type_string`` of their class).  None of it is provenance: it may change at any time, and no
process's course depends on it (``BaseRestartWorkChain`` only records its handlers in an
extra, as AiiDA does).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from miniengine.exceptions import ValidationError
from miniengine.storage.interfaces.transaction import Transaction

__all__ = ["CommentRow", "DuplicateGroupError", "GroupRow", "Groups", "dump_extras"]


def dump_extras(extras: Mapping[str, Any]) -> str:
    """Extras as the JSON text both backends store (NaN and infinities are not JSON)."""
    return json.dumps(extras, allow_nan=False, ensure_ascii=False)


class DuplicateGroupError(ValidationError):
    """A group of this label and type exists already (a label and type name one group)."""


class CommentRow(NamedTuple):
    """One comment on a node; times are seconds since the epoch."""

    pk: int
    uuid: str
    node_pk: int
    ctime: float
    mtime: float
    content: str


class GroupRow(NamedTuple):
    """One stored group (its nodes are read apart: a group may hold millions)."""

    pk: int
    uuid: str
    label: str
    type_string: str
    description: str
    ctime: float


class Groups(Protocol):
    """Extras, comments and groups of nodes.

    The writes on a node that does not exist raise ``NotExistent`` naming its pk.
    """

    # extras ----------------------------------------------------------------------------------

    def extras(self, pk: int) -> dict[str, Any]:
        """The extras of node ``pk`` (``NotExistent`` if there is no such node)."""
        ...

    @property
    def set_extras(self) -> Transaction[[int, Mapping[str, Any]], None]:
        """Set (add or replace) the given extras of a node, keeping the others."""
        ...

    @property
    def reset_extras(self) -> Transaction[[int, Mapping[str, Any]], None]:
        """Replace all the extras of a node by the given ones."""
        ...

    @property
    def delete_extras(self) -> Transaction[[int, Sequence[str]], list[str]]:
        """Delete the given extras of a node; if any is not set, delete none and return the
        keys that are not set (so the caller names them)."""
        ...

    def group_extras(self, pk: int) -> dict[str, Any]:
        """The extras of group ``pk`` (``NotExistent`` if there is no such group)."""
        ...

    @property
    def set_group_extras(self) -> Transaction[[int, Mapping[str, Any]], None]:
        """:attr:`set_extras` for a group."""
        ...

    @property
    def reset_group_extras(self) -> Transaction[[int, Mapping[str, Any]], None]:
        """:attr:`reset_extras` for a group."""
        ...

    @property
    def delete_group_extras(self) -> Transaction[[int, Sequence[str]], list[str]]:
        """:attr:`delete_extras` for a group."""
        ...

    # comments --------------------------------------------------------------------------------

    def comments(self, node_pk: int) -> list[CommentRow]:
        """The comments on a node, oldest first."""
        ...

    @property
    def add_comment(self) -> Transaction[[int, str], CommentRow]:
        """Add a comment (its content) to a node."""
        ...

    @property
    def update_comment(self) -> Transaction[[int, str], bool]:
        """Replace the content of comment ``pk``; ``False`` when there is no such comment."""
        ...

    @property
    def remove_comment(self) -> Transaction[[int], bool]:
        """Delete comment ``pk``; ``False`` when there is no such comment."""
        ...

    # groups ----------------------------------------------------------------------------------

    @property
    def create_group(self) -> Transaction[[str, str, str, bool], tuple[GroupRow, bool]]:
        """Create a group ``(label, type_string, description, get_existing)``; return it and
        whether it was created.  An existing group of the label and type is returned when
        ``get_existing``, else :class:`DuplicateGroupError` naming the label is raised."""
        ...

    def find_groups(
        self,
        *,
        pk: int | None = None,
        uuid: str | None = None,
        label: str | None = None,
        type_string: str | None = None,
    ) -> list[GroupRow]:
        """The groups matching every filter given (``uuid``: a uuid or a prefix of one),
        by pk."""
        ...

    def node_groups(self, node_pk: int) -> list[GroupRow]:
        """The groups that hold a node, by pk."""
        ...

    def group_node_pks(self, group_pk: int) -> list[int]:
        """The pks of the nodes of a group, in ascending order."""
        ...

    def group_count(self, group_pk: int) -> int:
        """How many nodes a group holds."""
        ...

    def group_counts(self) -> dict[int, int]:
        """How many nodes each group that holds any holds, by group pk (one query)."""
        ...

    @property
    def update_group(self) -> Transaction[[int, str, str], None]:
        """Set the label and description of a group (:class:`DuplicateGroupError` when the
        label is taken by another group of its type)."""
        ...

    @property
    def add_group_nodes(self) -> Transaction[[int, Sequence[int]], int]:
        """Add nodes to a group (those already in it are left as they are); return how many
        were added.  ``NotExistent`` names the pks of nodes that do not exist."""
        ...

    @property
    def remove_group_nodes(self) -> Transaction[[int, Sequence[int]], int]:
        """Remove nodes from a group (those not in it are ignored); return how many were."""
        ...

    @property
    def delete_group(self) -> Transaction[[int], bool]:
        """Delete a group and its memberships, never its nodes; ``False`` if it did not exist."""
        ...
