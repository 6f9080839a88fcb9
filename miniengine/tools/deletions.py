"""Deleting nodes with AiiDA's DELETE traversal rules (``aiida.tools.delete_nodes``), and the
sets of nodes a deletion or an export takes (``get_nodes_delete``, ``get_nodes_export``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from miniengine.core.graph_rules import DELETE, EXPORT

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["delete_group_nodes", "delete_nodes", "get_nodes_delete", "get_nodes_export"]

LOGGER = logging.getLogger("miniengine.tools.delete_nodes")


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
    return {"nodes": _store(backend).traversal.traverse([int(pk) for pk in starting_pks], links)}


def get_nodes_export(
    starting_pks: Iterable[int],
    backend: Backend | str | os.PathLike[str] | None = None,
    **traversal_rules: bool,
) -> dict[str, Any]:
    """``{"nodes": pks}``: the nodes that exporting ``starting_pks`` takes along so that their
    provenance is complete, as AiiDA's ``get_nodes_export``."""
    links = EXPORT.links(**traversal_rules)
    return {"nodes": _store(backend).traversal.traverse([int(pk) for pk in starting_pks], links)}


def delete_nodes(
    pks: Iterable[int],
    dry_run: bool | Callable[[set[int]], bool] = True,
    backend: Backend | str | os.PathLike[str] | None = None,
    **traversal_rules: bool,
) -> tuple[set[int], bool]:
    """Delete the nodes ``pks`` and every node that would otherwise tell an incomplete story, as
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
    store = _store(backend)
    wanted = [int(pk) for pk in pks]
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
    for group_pk in pks:
        nodes.update(dict.fromkeys(store.groups.group_node_pks(int(group_pk))))
    return delete_nodes(list(nodes), dry_run=dry_run, backend=store, **traversal_rules)


def _warn_missing(wanted: list[int], found: set[int]) -> None:
    for pk in sorted(set(wanted) - found):
        LOGGER.warning("node with pk %d does not exist, skipping", pk)
