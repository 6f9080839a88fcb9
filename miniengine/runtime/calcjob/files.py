"""The input files of a CalcJob kept on its node (AiiDA keeps the submitted folder in the
CalcJobNode's repository): ``node.base.repository.list_object_names()``, ``get_object_content``.

The files go into the content-addressed repository when the job is prepared, before the commit
that names their tree in the node's attributes (under the key file nodes use, so that the
repository's maintenance sees them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from miniengine.exceptions import ModificationNotAllowed
from miniengine.runtime.file_data import _TREE, NodeRepository
from miniengine.storage.repository import Repository

__all__ = ["TREE_ATTRIBUTE", "CalcJobFiles", "store_input_files"]

#: The attribute that holds the tree of a node's repository files.
TREE_ATTRIBUTE = _TREE


class CalcJobFiles:
    """A :class:`~miniengine.runtime.file_data.RepositoryHolder` for a CalcJob's input files:
    writable while the job is prepared, read-only once on the node."""

    def __init__(self, repository: Repository, tree: dict[str, Any] | None = None,
                 mutable: bool = False) -> None:  # fmt: skip
        self._tree: dict[str, Any] = tree if tree is not None else {}
        self._repository_root = repository
        self._mutable = mutable

    def _check_mutable(self) -> None:
        if not self._mutable:
            raise ModificationNotAllowed("the input files of a CalcJob cannot be changed")

    def _repository(self) -> Repository:
        return self._repository_root

    def _repository_for_writing(self) -> Repository:
        return self._repository_root


def store_input_files(
    repository: Repository, folder: str, exclude: Sequence[str] = ()
) -> dict[str, Any]:
    """Put ``folder`` into ``repository``, except the ``provenance_exclude_list`` paths, and
    return the tree of names and keys for the node's attributes."""
    files = CalcJobFiles(repository, mutable=True)
    holder = NodeRepository(files)
    holder.put_object_from_tree(folder)
    for path in exclude:
        with contextlib.suppress(Exception):
            holder.delete_object(path)
    return files._tree


def node_repository(repository: Repository, tree: dict[str, Any]) -> NodeRepository:
    return NodeRepository(CalcJobFiles(repository, tree))
