"""Launching CalcJobs: run mode (``run``, ``arun``, a child of a run-mode WorkChain), the
daemon (``submit``, ``self.submit``), the executor builders, and dry runs.

Running a child and resuming from a checkpoint are the WorkChain's code
(:mod:`miniengine.runtime.workchain.launch`, :mod:`miniengine.runtime.workchain.load`), which
builds a CalcJob's executor with :func:`child_executor` or :func:`restored_executor`.

Creating a CalcJob writes its node (with its options and computer), inputs, links, first
checkpoint and -- for the daemon -- its start task in one transaction, as for a WorkChain.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from miniengine.core import codec
from miniengine.core.checkpoint import with_refs as _with_refs
from miniengine.core.ids import new_uuid
from miniengine.core.states import ProcessState
from miniengine.exceptions import InvalidOperation, MiniengineError
from miniengine.runtime import caching, context
from miniengine.runtime.calcjob.executor import CalcJobExecutor, prepare_folder
from miniengine.runtime.calcjob.process import BoundCalcJob, CalcJob, bind_calcjob_inputs
from miniengine.runtime.context import RunningProcess
from miniengine.runtime.driver import Lifecycle, Write
from miniengine.runtime.lifecycle import mark_stored
from miniengine.runtime.mode import DaemonMode, Mode, ProcessTree
from miniengine.runtime.nodes import CalcJobNode
from miniengine.runtime.workchain import class_path
from miniengine.runtime.workchain.inputs import CALC_LINKS, process_row, process_type
from miniengine.storage.interfaces.caching import CachedBegin
from miniengine.storage.interfaces.calcjobs import CALCJOB_TYPE
from miniengine.storage.interfaces.checkpoints import MemoKey
from miniengine.storage.interfaces.provenance import NewProcess, NodeRow, pack_attributes

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["launch_calcjob", "submit_calcjob"]


def is_calcjob(process: Any) -> bool:
    return isinstance(process, type) and issubclass(process, CalcJob)


def new_calcjob_row(
    cls: type[CalcJob],
    store: Backend,
    bound: BoundCalcJob,
    parent: RunningProcess | None,
    state: ProcessState,
    submitted: bool = False,
) -> NewProcess:
    return process_row(
        cls,
        store,
        bound.inputs,
        bound.metadata,
        parent,
        state,
        submitted,
        CALCJOB_TYPE,
        CALC_LINKS,
        {"options": bound.options, "computer_uuid": bound.computer.uuid},
    )


def first_checkpoint(
    cls: type[CalcJob], new: NewProcess, bound: BoundCalcJob
) -> Callable[[list[int]], bytes]:
    """The first checkpoint of a CalcJob being created, made once its new inputs have pks
    (:attr:`~miniengine.storage.interfaces.calcjobs.CalcJobs.create_calcjob` calls it)."""

    def checkpoint(input_pks: list[int]) -> bytes:
        fresh = {
            id(data): input_pk
            for (_, data), input_pk in zip(new.inputs, input_pks, strict=True)
            if data.pk is None
        }
        state = {
            "k": "calcjob",
            "p": class_path(cls),
            "i": _with_refs(bound.inputs, fresh),
            "o": bound.options,
            "c": bound.computer.uuid,
            "st": None,
            "s": 0,
        }
        return codec.encode(state)

    return checkpoint


def _executor(
    cls: type[CalcJob],
    store: Backend,
    node: CalcJobNode,
    epoch: int,
    mode: Mode,
    bound: BoundCalcJob | None = None,
) -> CalcJobExecutor:
    """A fresh CalcJob's executor in ``mode``, with its bound inputs (a new process)."""
    executor = CalcJobExecutor(cls.__new__(cls), store, node, epoch, mode)
    if bound is not None:
        executor.raw_inputs = bound.inputs
        from miniengine.core.attribute_dict import FrozenAttributeDict

        executor.inputs = FrozenAttributeDict(bound.inputs)
        executor.options = bound.options
        executor.computer = bound.computer
    return executor


# run mode --------------------------------------------------------------------------------------


async def launch_calcjob(
    cls: type[CalcJob], raw_inputs: Mapping[str, Any], db: Any = None
) -> tuple[dict[str, Any], CalcJobNode]:
    """Run a CalcJob to its end on the running loop (``arun``; ``run`` via the loop thread)."""
    from miniengine.runtime.workchain.launch import _in_tree

    bound = bind_calcjob_inputs(cls, raw_inputs)
    parent = context.current_process()
    if parent is not None and parent.kind in ("calcfunction", "calcjob"):
        raise InvalidOperation(
            f"the {parent.kind} {parent.label} tried to run {cls.__name__}: it cannot call "
            "other processes"
        )
    if bound.dry_run:
        return await anyio.to_thread.run_sync(lambda: dry_run(cls, bound))
    store = context.store_for(parent.store if parent is not None else db)

    def make(tree: ProcessTree) -> Lifecycle[Any]:
        return _root_lifecycle(cls, store, tree, bound, parent)

    result: tuple[dict[str, Any], CalcJobNode] = await _in_tree(make, store)
    return result


def _root_lifecycle(
    cls: type[CalcJob],
    store: Backend,
    tree: ProcessTree,
    bound: BoundCalcJob,
    parent: RunningProcess | None,
) -> Lifecycle[tuple[dict[str, Any], CalcJobNode]]:
    from miniengine.runtime.workchain.launch import run_new

    new = new_calcjob_row(cls, store, bound, parent, ProcessState.RUNNING)
    cache = _cache_hash(cls, new, bound, store)
    new.node_hash = cache.node_hash
    if cache.lookup:
        return (yield from _run_cached(cls, store, tree, bound, parent, new))

    def create(memo: MemoKey | None) -> Write:
        computer, checkpoint = bound.computer.uuid, first_checkpoint(cls, new, bound)
        return Write(store.calcjobs.create_calcjob, new, computer, checkpoint, False, memo)

    result: tuple[dict[str, Any], CalcJobNode] = yield from run_new(
        cls, bound, store, tree, parent, new, create, CalcJobNode, child_executor
    )
    return result


def _run_cached(
    cls: type[CalcJob],
    store: Backend,
    tree: ProcessTree,
    bound: BoundCalcJob,
    parent: RunningProcess | None,
    new: NewProcess,
) -> Lifecycle[tuple[dict[str, Any], CalcJobNode]]:
    """A CalcJob run with caching enabled for it: created finished as a copy of an equal one
    in the transaction that looks it up, else created and run as
    :func:`~miniengine.runtime.workchain.launch.run_new` does."""
    from miniengine.runtime.lifecycle import leased
    from miniengine.runtime.mode import RunMode

    memo = None
    if parent is not None:
        memo = parent.memo_key(store.checkpoints.fingerprint(new.process_type, new.inputs))
    checkpoint = first_checkpoint(cls, new, bound)
    begun = yield Write(
        store.caching.create_calcjob_cached, new, bound.computer.uuid, checkpoint, False, memo
    )
    mark_stored(new.inputs, begun.input_pks, store)
    if parent is not None:
        parent.call_count += 1
    if begun.source_uuid is not None:  # finished at once as a copy: its program does not run
        node, outputs = caching.copied_node(store, CalcJobNode, begun)
        return outputs, node
    node = CalcJobNode(store, store.provenance.node(begun.pk))
    executor = child_executor(cls, store, node, 1, RunMode(tree), bound)
    return (yield from leased(store, executor.lifecycle(ProcessState.CREATED)))


def child_executor(
    cls: type[CalcJob], store: Backend, node: Any, epoch: int, mode: Mode, bound: Any
) -> CalcJobExecutor:
    """The executor of a CalcJob that a run-mode WorkChain submitted (see ``run_child`` in
    :mod:`miniengine.runtime.workchain.launch`)."""
    return _executor(cls, store, node, epoch, mode, bound)


def submit_child(parent: Any, cls: type[CalcJob], inputs: dict[str, Any]) -> CalcJobNode:
    """``self.submit(MyCalcJob, ...)`` in a WorkChain step: the node is created now, linked to
    the parent and started by the step's commit (daemon) or in the parent's tree (run mode)."""
    from miniengine.runtime.workchain import check_importable

    bound = bind_calcjob_inputs(cls, inputs)
    if bound.dry_run:
        raise InvalidOperation("self.submit() cannot make a dry run; run() the CalcJob instead")
    store = parent.store
    daemon = parent.mode.children_via_daemon
    if daemon:
        check_importable(cls)
    new = new_calcjob_row(cls, store, bound, parent.process, ProcessState.CREATED, daemon)
    cache = _cache_hash(cls, new, bound, store)
    new.node_hash = cache.node_hash
    memo = parent.process.memo_key(store.checkpoints.fingerprint(new.process_type, new.inputs))
    parent.process.call_count += 1
    checkpoint = first_checkpoint(cls, new, bound)
    if cache.lookup:
        begun = store.caching.create_calcjob_cached(
            new, bound.computer.uuid, checkpoint, False, memo
        )
        mark_stored(new.inputs, begun.input_pks, store)
        if begun.source_uuid is not None:
            # finished at once as a copy: nothing to start, ToContext finds it terminated
            return caching.copied_node(store, CalcJobNode, begun)[0]  # type: ignore[no-any-return]
        pk = begun.pk
    else:
        pk, input_pks = store.calcjobs.create_calcjob(
            new, bound.computer.uuid, checkpoint, False, memo
        )
        mark_stored(new.inputs, input_pks, store)
    node = CalcJobNode(store, store.provenance.node(pk))
    if not node.is_terminated:  # (a replayed step's call that finished is not started again)
        parent.new_children.append((cls, node, bound))
    return node


# the daemon --------------------------------------------------------------------------------------


def submit_calcjob_prepare(process: type[CalcJob], inputs: Mapping[str, Any]) -> Any:
    from miniengine.runtime.workchain import check_importable

    bound = bind_calcjob_inputs(process, inputs)
    if bound.dry_run:
        raise InvalidOperation("submit() cannot make a dry run; use run() for metadata.dry_run")
    check_importable(process)
    store = context.store_for(None)
    new = new_calcjob_row(process, store, bound, None, ProcessState.CREATED, submitted=True)
    return store, new, bound


def submit_calcjob(process: type[CalcJob], inputs: Mapping[str, Any]) -> CalcJobNode:
    """``submit(MyCalcJob, ...)``: stored and enqueued in one transaction (or, when caching
    finds an equal CalcJob that finished OK, stored finished as its copy and not enqueued)."""
    store, new, bound = submit_calcjob_prepare(process, inputs)
    checkpoint = first_checkpoint(process, new, bound)
    if not _hashed(process, new, bound, store):
        pk, input_pks = store.calcjobs.create_calcjob(
            new, bound.computer.uuid, checkpoint, True, None
        )
        return _submitted(store, new, pk, input_pks)
    begun = store.caching.create_calcjob_cached(new, bound.computer.uuid, checkpoint, True, None)
    return _begun(store, new, begun)


async def asubmit_calcjob(process: type[CalcJob], inputs: Mapping[str, Any]) -> CalcJobNode:
    store, new, bound = submit_calcjob_prepare(process, inputs)
    checkpoint = first_checkpoint(process, new, bound)
    if not _hashed(process, new, bound, store):
        pk, input_pks = await store.calcjobs.create_calcjob.aio(
            new, bound.computer.uuid, checkpoint, True, None
        )
        return _submitted(store, new, pk, input_pks)
    begun = await store.caching.create_calcjob_cached.aio(
        new, bound.computer.uuid, checkpoint, True, None
    )
    return _begun(store, new, begun)


def _cache_hash(
    cls: type[CalcJob], new: NewProcess, bound: BoundCalcJob, store: Backend
) -> caching.LaunchHash:
    """The CalcJob's hash (its computer counts too) and whether caching is enabled for it."""
    if caching.off_for(store):  # the default: no options to gather, no settings walk
        return caching.LaunchHash(None, False)
    options = {**bound.options, "computer_uuid": bound.computer.uuid}
    return caching.calcjob_hash(cls, new.process_type, new.inputs, options, store)


def _hashed(cls: type[CalcJob], new: NewProcess, bound: BoundCalcJob, store: Backend) -> bool:
    """Give ``new`` its hash; whether to look it up."""
    cache = _cache_hash(cls, new, bound, store)
    new.node_hash = cache.node_hash
    return cache.lookup


def _begun(store: Backend, new: NewProcess, begun: CachedBegin) -> CalcJobNode:
    """The node of a submitted CalcJob: created finished as a copy of an equal one (never
    enqueued), or enqueued."""
    if begun.source_uuid is None:
        return _submitted(store, new, begun.pk, begun.input_pks)
    mark_stored(new.inputs, begun.input_pks, store)
    node: CalcJobNode = caching.copied_node(store, CalcJobNode, begun)[0]
    return node


def _submitted(store: Backend, new: NewProcess, pk: int, input_pks: list[int]) -> CalcJobNode:
    """The node of a CalcJob just submitted; the workers of this OS process are woken."""
    from miniengine.runtime.submit import _local_workers

    mark_stored(new.inputs, input_pks, store)
    for worker in list(_local_workers.get(store.location, ())):
        worker.wake_threadsafe()
    return CalcJobNode(store, store.provenance.node(pk))


def restored_executor(
    store: Backend, cls: Any, row: NodeRow, epoch: int, mode: Mode, blob: bytes
) -> CalcJobExecutor:
    """A CalcJob's executor in ``mode``, restored from its checkpoint ``blob`` (a worker's
    task, or a run-mode resume: :func:`~miniengine.runtime.workchain.load.load_process`)."""
    executor = CalcJobExecutor(cls.__new__(cls), store, CalcJobNode(store, row), epoch, mode)
    executor.restore(blob)
    return executor


# dry runs ----------------------------------------------------------------------------------------


def dry_run(cls: type[CalcJob], bound: BoundCalcJob) -> tuple[dict[str, Any], CalcJobNode]:
    """Prepare the job in ``submit_test/<date>-<n>`` under the current folder, submit nothing;
    the returned (unstored) node's ``dry_run_info`` says where (AiiDA's dry run)."""
    base = os.path.join(os.getcwd(), "submit_test")
    os.makedirs(base, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    number = 0
    while True:
        folder = os.path.join(base, f"{stamp}-{number:05d}")
        try:
            os.mkdir(folder)
            break
        except FileExistsError:
            number += 1
    store = context.store_for(None)
    now = time.time()
    row = NodeRow(
        pk=None,  # type: ignore[arg-type]  # never stored
        uuid=new_uuid(),
        node_type=CALCJOB_TYPE,
        process_type=process_type(cls),
        process_label=cls.__name__,
        process_state="finished",
        process_status=None,
        exit_status=0,
        exit_message=None,
        exception=None,
        paused=0,
        label=bound.metadata.label,
        description=bound.metadata.description,
        attributes=None,
        owner=None,
        lease_epoch=0,
        lease_expires=None,
        ctime=now,
        mtime=now,
    )
    node = CalcJobNode(None, row)
    executor = _executor(cls, store, node, 0, DaemonMode(), bound)  # (never driven)
    prepared = prepare_folder(executor, folder)
    info = {"folder": folder, "script_filename": prepared.script_filename}
    attributes = {
        "options": bound.options,
        "computer_uuid": bound.computer.uuid,
        "dry_run_info": info,
    }
    node._row = node._row._replace(attributes=pack_attributes(attributes))
    return {}, node


def check_not_in_process(what: str) -> None:
    if context.current_process() is not None:
        raise MiniengineError(f"{what} inside a running process")
