"""Deleting nodes with AiiDA's DELETE traversal rules (``aiida.tools.delete_nodes``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from miniengine.core.graph_rules import DELETE

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["delete_nodes"]

LOGGER = logging.getLogger("miniengine.tools.delete_nodes")


def delete_nodes(
    pks: Iterable[int],
    dry_run: bool = True,
    backend: Backend | str | os.PathLike[str] | None = None,
    **traversal_rules: bool,
) -> tuple[set[int], bool]:
    """Delete the nodes ``pks`` and every node that would otherwise tell an incomplete story, as
    AiiDA's ``delete_nodes``: the processes that used a deleted node as input, the calculation
    that created it, the processes that called a deleted process and (unless switched off with
    ``create_forward=False``, ``call_calc_forward=False`` or ``call_work_forward=False``) what a
    deleted process created or called.

    Returns the pks of the nodes deleted (or that would be, with ``dry_run``, the default, as in
    AiiDA) and whether they were deleted.  Pks of no node are skipped.  Deleting is one
    transaction: it removes the nodes' links, logs, checkpoints, tasks, calcjob job rows,
    comments and group memberships, and refuses (``InvalidOperation``, nothing deleted) if a
    worker is running or waiting on any of those processes.  The files in the repository that
    only deleted nodes referred to stay until ``miniengine db maintain``.
    """
    from miniengine.runtime.context import store_for

    links = DELETE.links(**traversal_rules)
    store = store_for(backend)
    wanted = [int(pk) for pk in pks]
    if dry_run:
        found = store.traversal.traverse(wanted, links)
        missing = sorted(set(wanted) - found)
        if missing:
            LOGGER.warning("no nodes with pks %s", ", ".join(map(str, missing)))
        live = store.traversal.live_processes(sorted(found))
        if live:
            LOGGER.warning(
                "the processes %s are live and would have to be killed first",
                ", ".join(str(process.pk) for process in live),
            )
        LOGGER.info("%d node(s) would be deleted (dry run)", len(found))
        return found, False
    deleted = store.traversal.delete_nodes(wanted, links)
    missing = sorted(set(wanted) - deleted)
    if missing:
        LOGGER.warning("no nodes with pks %s", ", ".join(map(str, missing)))
    LOGGER.info("deleted %d node(s)", len(deleted))
    return deleted, True
