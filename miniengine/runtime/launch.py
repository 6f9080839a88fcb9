"""The launch functions: ``run``, ``run_get_node``, ``run_get_pk``, ``arun``, ``arun_get_node``,
and the queries ``load_node`` and ``find_processes``.

``run`` follows AiiDA's rule for what it returns: a process function whose only output is
``result`` returns that value; every other process returns the mapping of its outputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio.from_thread

from miniengine.core.builder import ProcessBuilder
from miniengine.core.states import ProcessState
from miniengine.exceptions import EventLoopError
from miniengine.runtime.context import store_for
from miniengine.runtime.functions import ProcessFunction, _loop_running
from miniengine.runtime.nodes import ProcessNode, node_from_row

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = [
    "arun",
    "arun_get_node",
    "find_processes",
    "resume",
    "run",
    "run_get_node",
    "run_get_pk",
]


def _split(process: Any, inputs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Accept ``run(builder)`` and ``run(builder, **more)`` as well as a class or function."""
    if isinstance(process, ProcessBuilder):
        return process.process_class, {**process._inputs(prune=True), **inputs}
    return process, inputs


def _is_workchain(process: Any) -> bool:
    from miniengine.runtime.workchain import WorkChain

    return isinstance(process, type) and issubclass(process, WorkChain)


def _is_calcjob(process: Any) -> bool:
    from miniengine.runtime.calcjob.process import CalcJob

    return isinstance(process, type) and issubclass(process, CalcJob)


def _unknown(process: Any) -> TypeError:
    return TypeError(
        f"cannot launch {process!r}: pass a @calcfunction or @workfunction, a WorkChain class or "
        "a builder"
    )


def run_get_node(process: Any, *args: Any, **inputs: Any) -> tuple[Any, ProcessNode]:
    """Run ``process`` to completion and return ``(result, node)``.

    A process function runs in this thread; a WorkChain gets an event loop of its own for the
    duration (or, from a worker thread of a running loop, runs on that loop).
    """
    if _loop_running():
        raise EventLoopError(
            "run() was called in a thread whose event loop is running, which would block it; "
            "use `await arun(...)` (or `await arun_get_node(...)`) there instead"
        )
    process, inputs = _split(process, inputs)
    if isinstance(process, ProcessFunction):
        return process.run_get_node(*args, **inputs)
    if _is_workchain(process):
        if args:
            raise TypeError("a WorkChain takes its inputs as keyword arguments")
        from miniengine.runtime.driver import in_worker_thread
        from miniengine.runtime.workchain.launch import launch

        if in_worker_thread():
            return anyio.from_thread.run(launch, process, inputs)
        from miniengine.runtime.loop_thread import run_on_loop_thread

        return run_on_loop_thread(lambda: launch(process, inputs))
    if _is_calcjob(process):
        if args:
            raise TypeError("a CalcJob takes its inputs as keyword arguments")
        from miniengine.runtime.calcjob.launch import launch_calcjob
        from miniengine.runtime.driver import in_worker_thread

        if in_worker_thread():
            return anyio.from_thread.run(launch_calcjob, process, inputs)
        from miniengine.runtime.loop_thread import run_on_loop_thread

        return run_on_loop_thread(lambda: launch_calcjob(process, inputs))
    raise _unknown(process)


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
"""Run a process to completion here and now and return its result: ``run(process, *args,
**inputs)``. ``run.get_node(...)`` returns ``(result, node)`` and ``run.get_pk(...)``
``(result, pk)``, as ``run_get_node`` and ``run_get_pk`` do."""


async def arun_get_node(process: Any, *args: Any, **inputs: Any) -> tuple[Any, ProcessNode]:
    """Run ``process`` on the running event loop and return ``(result, node)``."""
    process, inputs = _split(process, inputs)
    if isinstance(process, ProcessFunction):
        return await process.arun_get_node(*args, **inputs)
    if _is_workchain(process):
        if args:
            raise TypeError("a WorkChain takes its inputs as keyword arguments")
        from miniengine.runtime.workchain.launch import launch

        return await launch(process, inputs)
    if _is_calcjob(process):
        if args:
            raise TypeError("a CalcJob takes its inputs as keyword arguments")
        from miniengine.runtime.calcjob.launch import launch_calcjob

        return await launch_calcjob(process, inputs)
    raise _unknown(process)


async def arun(process: Any, *args: Any, **inputs: Any) -> Any:
    """Run ``process`` on the running event loop and return its result."""
    return (await arun_get_node(process, *args, **inputs))[0]


async def resume(
    pk: int, *, db: Backend | str | os.PathLike[str] | None = None, timeout: float | None = None
) -> tuple[Any, ProcessNode]:
    """Continue the WorkChain (or CalcJob) ``pk`` from its last checkpoint and return
    ``(outputs, node)``.

    Its lease is taken over only once its previous owner's lease has expired (waiting for that,
    at most ``timeout`` seconds).
    """
    from miniengine.runtime.workchain.launch import resume as resume_process

    return await resume_process(pk, db=db, timeout=timeout)


def find_processes(
    state: ProcessState | str | Sequence[ProcessState | str] | None = None,
    process_label: str | None = None,
    limit: int | None = None,
    *,
    db: Backend | str | os.PathLike[str] | None = None,
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
        for row in store.provenance.process_rows(states, process_label, limit)
    ]
