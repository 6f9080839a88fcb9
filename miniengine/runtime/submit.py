"""Handing processes to the daemon: ``submit``, ``asubmit`` and ``await_node``.

``submit`` validates the inputs, then stores the process as CREATED with its first checkpoint and
enqueues its start task, all in one transaction, and returns the node at once.  A worker in this
OS process (``async with Worker(...)``) is woken directly; workers elsewhere notice the commit
through the backend's "something committed" signal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import anyio

from miniengine.core.builder import ProcessBuilder
from miniengine.core.data import Data
from miniengine.core.states import ProcessState
from miniengine.exceptions import EventLoopError, MiniengineError, SubmitError
from miniengine.runtime import context
from miniengine.runtime.functions import ProcessFunction, _loop_running
from miniengine.runtime.nodes import ProcessNode, WorkChainNode
from miniengine.storage.store import Store

__all__ = ["asubmit", "await_node", "submit"]

#: In-process workers by database path, woken directly when this process submits.
_local_workers: dict[str, set[Any]] = {}


def _prepare(process: Any, inputs: dict[str, Any]) -> Any:
    from miniengine.runtime import workchain
    from miniengine.runtime.workchain import inputs as workchain_inputs

    if context.current_process() is not None:
        raise SubmitError(
            "submit() was called inside a running process; inside a WorkChain step use "
            "self.submit(...), which links the child to its parent and waits for the step's commit"
        )
    if isinstance(process, ProcessBuilder):
        inputs = {**process._inputs(prune=True), **inputs}
        process = process.process_class
    if isinstance(process, ProcessFunction):
        raise SubmitError(
            f"{process.process_label} is a process function: it runs where it is called and "
            "cannot be submitted to the daemon; call it, or wrap it in a WorkChain"
        )
    if not (isinstance(process, type) and issubclass(process, workchain.WorkChain)):
        raise TypeError(f"cannot submit {process!r}: pass a WorkChain class or a builder")
    metadata = inputs.get("metadata")
    if isinstance(metadata, dict) and metadata.get("store_provenance") is False:
        raise SubmitError(
            "submit() needs store_provenance=True: the daemon works from the database"
        )
    workchain.check_importable(process)
    bound, parsed = workchain_inputs.bind_inputs(process, inputs)
    store = context.store_for(None)
    new = workchain_inputs.new_process_row(
        process, store, bound, parsed, None, ProcessState.CREATED, submitted=True
    )
    return workchain.class_path(process), store, new, bound


def _calcjob_class(process: Any, inputs: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
    """``(CalcJob class, inputs)`` when ``process`` is a CalcJob (or its builder), else None."""
    from miniengine.runtime.calcjob.process import CalcJob

    if isinstance(process, ProcessBuilder):
        if not issubclass(process.process_class, CalcJob):
            return None
        inputs = {**process._inputs(prune=True), **inputs}
        process = process.process_class
    if not (isinstance(process, type) and issubclass(process, CalcJob)):
        return None
    if context.current_process() is not None:
        raise SubmitError(
            "submit() was called inside a running process; inside a WorkChain step use "
            "self.submit(...), which links the child to its parent and waits for the step's commit"
        )
    return process, inputs


def _finish(store: Store, new: Any, pk: int, input_pks: list[int]) -> WorkChainNode:
    for (_, data), input_pk in zip(new.inputs, input_pks, strict=True):
        if data.pk is None:
            data._set_stored(input_pk, data.uuid, store)
    for worker in list(_local_workers.get(store.location, ())):
        worker.wake_threadsafe()
    # The row as just written (no read-back): live fields and ctime are read on access.
    now = time.time()
    row = (
        pk,
        new.uuid,
        new.node_type,
        new.process_type,
        new.process_label,
        new.process_state,
        None,
        None,
        None,
        None,
        0,
        new.label,
        new.description,
        None,
        None,
        0,
        None,
        now,
        now,
    )
    return WorkChainNode(store, row)


def _refuse_positional(process: Any, args: tuple[Any, ...]) -> None:
    """``submit(add, 1, 2)``: say that inputs go by keyword, with the call spelled out."""
    if not args:
        return
    if isinstance(process, ProcessBuilder):
        raise SubmitError(
            "submit(builder) takes no positional inputs: set them on the builder, or pass them "
            "as keywords"
        )
    label = getattr(process, "process_label", None) or getattr(process, "__name__", "process")
    names: list[str] = []
    if isinstance(process, ProcessFunction):
        names = [name for name in process.spec().inputs.ports if name != "metadata"]
    elif isinstance(process, type) and hasattr(process, "spec"):
        try:
            names = [name for name in process.spec().inputs.ports if name != "metadata"]
        except MiniengineError:
            names = []
    if len(names) >= len(args) and all(not isinstance(a, Data) for a in args):
        spelled = ", ".join(f"{name}={arg!r}" for name, arg in zip(names, args, strict=False))
    elif names:
        spelled = ", ".join(f"{name}=..." for name in names[: max(len(args), 1)])
    else:
        spelled = "name=value, ..."
    raise SubmitError(
        f"submit() takes the inputs as keyword arguments, as in AiiDA: "
        f"submit({label}, {spelled}), not {len(args)} positional argument(s)"
    )


def submit(process: Any, *args: Any, **inputs: Any) -> WorkChainNode:
    """Store ``process`` with its inputs and enqueue it for the daemon; return its node at once.

    Inputs go by keyword only (``submit(AddWorkChain, x=1, y=2)``), as in AiiDA: a positional
    input raises ``SubmitError`` that spells out the keyword call.
    """
    _refuse_positional(process, args)
    if _loop_running() and context.current_process() is None:
        raise EventLoopError(
            "submit() was called on a thread that runs an event loop; use `await asubmit(...)`"
        )
    calcjob = _calcjob_class(process, inputs)
    if calcjob is not None:
        from miniengine.runtime.calcjob.launch import submit_calcjob

        return submit_calcjob(*calcjob)  # type: ignore[return-value]
    path, store, new, bound = _prepare(process, inputs)
    pk, input_pks = store.checkpoints.create_workchain(new, path, bound, True, None)
    return _finish(store, new, pk, input_pks)


async def asubmit(process: Any, *args: Any, **inputs: Any) -> WorkChainNode:
    """``submit`` for async code: the same single transaction, awaited."""
    _refuse_positional(process, args)
    calcjob = _calcjob_class(process, inputs)
    if calcjob is not None:
        from miniengine.runtime.calcjob.launch import asubmit_calcjob

        return await asubmit_calcjob(*calcjob)  # type: ignore[return-value]
    path, store, new, bound = _prepare(process, inputs)
    pk, input_pks = await store.checkpoints.create_workchain.aio(new, path, bound, True, None)
    return _finish(store, new, pk, input_pks)


#: The longest a waiter waits for a commit before it looks at the node again anyway.
WAIT_STEP = 1.0


def _terminated(node: ProcessNode) -> bool:
    state = node.process_state
    return state is not None and state.is_terminal


async def _await_async(node: ProcessNode, timeout: float | None) -> ProcessNode:
    store = node.store
    if store is None:
        return node
    with anyio.fail_after(timeout):
        while True:
            marker = store.commit_marker()  # before the look: a later commit changes it
            if _terminated(node):
                return node
            await store.await_commit(marker, WAIT_STEP)


def _await_sync(node: ProcessNode, timeout: float | None) -> ProcessNode:
    store = node.store
    if store is None:
        return node
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        marker = store.commit_marker()  # before the look: a later commit changes it
        if _terminated(node):
            return node
        wait = WAIT_STEP
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(f"process {node.pk} did not terminate within {timeout} s")
        store.wait_for_commit(marker, wait)


def await_node(
    node: ProcessNode, timeout: float | None = None
) -> ProcessNode | Coroutine[Any, Any, ProcessNode]:
    """Wait until ``node`` has terminated and return it.

    In a thread that runs an event loop this returns an awaitable (``await await_node(node)``);
    in a plain script it blocks.  Either way it looks at the node only when something has
    committed, so waiting costs microseconds, not queries.  ``TimeoutError`` after
    ``timeout`` seconds.
    """
    if not isinstance(node, ProcessNode):
        raise TypeError(f"await_node() needs a process node, got {node!r}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _await_sync(node, timeout)
    return _await_async(node, timeout)


def register_local_worker(location: str, worker: Any) -> None:
    _local_workers.setdefault(location, set()).add(worker)


def unregister_local_worker(location: str, worker: Any) -> None:
    workers = _local_workers.get(location)
    if workers is not None:
        workers.discard(worker)
