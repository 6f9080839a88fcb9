"""The launch functions: ``run``, ``run_get_node``, ``run_get_pk``, ``arun``, ``arun_get_node``,
and the queries ``load_node`` and ``find_processes``.

``run`` follows AiiDA's rule for what it returns: a process function whose only output is
``result`` returns that value; every other process returns the mapping of its outputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from miniengine.core.states import ProcessState
from miniengine.exceptions import EventLoopError
from miniengine.runtime.context import store_for
from miniengine.runtime.functions import ProcessFunction, _loop_running
from miniengine.runtime.nodes import ProcessNode, node_from_row
from miniengine.storage import rows
from miniengine.storage.store import Store

__all__ = ["arun", "arun_get_node", "find_processes", "run", "run_get_node", "run_get_pk"]


def _launchable(process: Any) -> ProcessFunction:
    if isinstance(process, ProcessFunction):
        return process
    raise TypeError(
        f"cannot launch {process!r}: pass a @calcfunction or @workfunction (or a process class)"
    )


def run_get_node(process: Any, *args: Any, **inputs: Any) -> tuple[Any, ProcessNode]:
    """Run ``process`` to completion in this thread and return ``(result, node)``."""
    if _loop_running():
        raise EventLoopError(
            "run() was called in a thread whose event loop is running, which would block it; "
            "use `await arun(...)` (or `await arun_get_node(...)`) there instead"
        )
    return _launchable(process).run_get_node(*args, **inputs)


def run_get_pk(process: Any, *args: Any, **inputs: Any) -> tuple[Any, int | None]:
    """Run ``process`` and return ``(result, pk)``."""
    result, node = run_get_node(process, *args, **inputs)
    return result, node.pk


class _Run:
    """``run(process, *args, **inputs)``, with ``run.get_node`` and ``run.get_pk``."""

    get_node = staticmethod(run_get_node)
    get_pk = staticmethod(run_get_pk)

    def __call__(self, process: Any, *args: Any, **inputs: Any) -> Any:
        return run_get_node(process, *args, **inputs)[0]

    def __repr__(self) -> str:
        return "<function miniengine.run>"


run = _Run()


async def arun_get_node(process: Any, *args: Any, **inputs: Any) -> tuple[Any, ProcessNode]:
    """Run ``process`` on the running event loop and return ``(result, node)``."""
    return await _launchable(process).arun_get_node(*args, **inputs)


async def arun(process: Any, *args: Any, **inputs: Any) -> Any:
    """Run ``process`` on the running event loop and return its result."""
    return (await arun_get_node(process, *args, **inputs))[0]


def find_processes(
    state: ProcessState | str | Sequence[ProcessState | str] | None = None,
    process_label: str | None = None,
    limit: int | None = None,
    *,
    db: Store | str | os.PathLike[str] | None = None,
) -> list[ProcessNode]:
    """Process nodes, newest first, optionally filtered by state(s) and label."""
    if state is None:
        states = None
    else:
        items = [state] if isinstance(state, ProcessState | str) else list(state)
        states = [ProcessState(item).value for item in items]
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    store = store_for(db)
    return [
        node_from_row(store, row)
        for row in store.read(rows.read_process_rows, states, process_label, limit)
    ]
