"""Deleting nodes with AiiDA's DELETE traversal rules (``aiida.tools.delete_nodes``), and the
sets of nodes a deletion or an export takes (``get_nodes_delete``, ``get_nodes_export``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from miniengine.core.graph_rules import DELETE, EXPORT
from miniengine.exceptions import MiniengineError

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = [
    "PkTypeError",
    "delete_group_nodes",
    "delete_nodes",
    "get_nodes_delete",
    "get_nodes_export",
]

LOGGER = logging.getLogger("miniengine.tools.delete_nodes")


class PkTypeError(MiniengineError, TypeError):
    """A deletion or traversal was given something that names no node: not a pk, a stored node,
    or a string of digits.  ``int()`` would have read an ``Int(6)`` node as the pk 6 and ``True``
    as the pk 1, and deleted those nodes; this is raised before anything is read."""


def _pks(values: Iterable[Any], what: str = "node") -> list[int]:
    """The pks of ``values``: ints (not bools), strings of digits, or stored nodes."""
    from miniengine.runtime.nodes import Node

    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise PkTypeError(f"give a list of {what} pks, not {values!r}")
    pks: list[int] = []
    for value in values:
        if isinstance(value, Node):
            pk: int | None = getattr(value, "pk", None)
            if pk is None:
                raise PkTypeError(f"{value!r} is not stored: it has no pk to delete")
            pks.append(pk)
        elif isinstance(value, int) and not isinstance(value, bool):
            pks.append(value)
        elif isinstance(value, str) and value.strip().isdecimal():
            pks.append(int(value))
        else:
            raise PkTypeError(f"{value!r} is not a {what} pk (an int)")
    return pks


def _store(backend: Backend | str | os.PathLike[str] | None) -> Backend:
    from miniengine.runtime.context import store_for

    return store_for(backend)


def get_nodes_delete(
    starting_pks: Iterable[int],
    backend: Backend | str | os.PathLike[str] | None = None,
    **traversal_rules: bool,
) -> dict[str, Any]:
    """``{"nodes": pks}``: the nodes that deleting ``starting_pks`` deletes, as AiiDA's
    ``get_nodes_delete`` (pks of no node are left out)."""
    links = DELETE.links(**traversal_rules)
    return {"nodes": _store(backend).traversal.traverse(_pks(starting_pks), links)}


def get_nodes_export(
    starting_pks: Iterable[int],
    backend: Backend | str | os.PathLike[str] | None = None,
    **traversal_rules: bool,
) -> dict[str, Any]:
    """``{"nodes": pks}``: the nodes that exporting ``starting_pks`` takes along so that their
    provenance is complete, as AiiDA's ``get_nodes_export``."""
    links = EXPORT.links(**traversal_rules)
    return {"nodes": _store(backend).traversal.traverse(_pks(starting_pks), links)}


def delete_nodes(
    pks: Iterable[int],
    dry_run: bool | Callable[[set[int]], bool] = True,
    backend: Backend | str | os.PathLike[str] | None = None,
    **traversal_rules: bool,
) -> tuple[set[int], bool]:
    """Delete the nodes ``pks`` (ints, or stored nodes, taken by their pk; anything else is a
    :class:`PkTypeError`) and every node that would otherwise tell an incomplete story, as
    AiiDA's ``delete_nodes``: the processes that used a deleted node as input, the process that
    created or returned it, the processes that called a deleted process and (unless switched
    off with ``create_forward=False``, ``call_calc_forward=False`` or
    ``call_work_forward=False``) what a deleted process created or called.

    ``dry_run`` (the default, as in AiiDA) deletes nothing; a callable is given the pks and
    deletes nothing if it returns true (a confirmation).  Returns the pks of the nodes deleted
    (or that would be) and whether they were deleted.  Pks of no node are skipped.  Deleting
    is one transaction: it removes the nodes' links, logs, checkpoints, tasks, calcjob job
    rows, comments and group memberships, and refuses (``InvalidOperation``, nothing deleted)
    if a worker is running or waiting on any of those processes.  The files in the repository
    that only deleted nodes referred to stay until ``miniengine db maintain``.
    """
    links = DELETE.links(**traversal_rules)
    wanted = _pks(pks)
    if not isinstance(dry_run, bool) and not callable(dry_run):
        raise PkTypeError(f"dry_run is True, False or a function of the pks, not {dry_run!r}")
    store = _store(backend)
    if dry_run is not False:
        found = store.traversal.traverse(wanted, links)
        _warn_missing(wanted, found)
        LOGGER.info("%d node(s) marked for deletion", len(found))
        live = store.traversal.live_processes(sorted(found))
        if live:
            LOGGER.warning(
                "the processes %s are live: kill them before deleting them",
                ", ".join(str(process.pk) for process in live),
            )
        if dry_run is True or dry_run(found):
            LOGGER.info("this was a dry run: nothing deleted")
            return found, False
    deleted = store.traversal.delete_nodes(wanted, links)
    if dry_run is False:
        _warn_missing(wanted, deleted)
    LOGGER.info("deleted %d node(s)", len(deleted))
    return deleted, True


def delete_group_nodes(
    pks: Iterable[int],
    dry_run: bool | Callable[[set[int]], bool] = True,
    backend: Backend | str | os.PathLike[str] | None = None,
    **traversal_rules: bool,
) -> tuple[set[int], bool]:
    """Delete the nodes of the groups ``pks`` (not the groups), as :func:`delete_nodes` does."""
    store = _store(backend)
    nodes: dict[int, None] = {}
    for group_pk in _group_pks(pks):
        nodes.update(dict.fromkeys(store.groups.group_node_pks(group_pk)))
    return delete_nodes(list(nodes), dry_run=dry_run, backend=store, **traversal_rules)


def _group_pks(values: Iterable[Any]) -> list[int]:
    """The pks of ``values``: ints, strings of digits, or stored groups."""
    from miniengine.runtime.groups import Group

    items = list(values) if isinstance(values, Iterable) and not isinstance(values, str) else None
    if items is None:
        raise PkTypeError(f"give a list of group pks, not {values!r}")
    return _pks(
        [item.pk if isinstance(item, Group) and item.pk is not None else item for item in items],
        "group",
    )


def _warn_missing(wanted: list[int], found: set[int]) -> None:
    for pk in sorted(set(wanted) - found):
        LOGGER.warning("node with pk %d does not exist, skipping", pk)
