"""Running WorkChains in run mode: the process tree, launching, running a submitted child (a
WorkChain or a CalcJob), and resuming either kind from its checkpoint.

A launched WorkChain owns a task group for its tree: children started with ``self.submit`` run
as its tasks and wake their waiting parent on completion, never by polling; a watcher task
applies control requests (kill, pause) to the tree's processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from miniengine.core.checkpoint import peek
from miniengine.core.function_spec import Metadata
from miniengine.core.outline import (
    OutlineMismatch,
)
from miniengine.core.ports import unflatten_namespace
from miniengine.core.states import ProcessState
from miniengine.exceptions import (
    CheckpointError,
    InvalidOperation,
    MiniengineError,
    ProcessKilledError,
)
from miniengine.runtime import context
from miniengine.runtime.context import RunningProcess
from miniengine.runtime.driver import Lifecycle, Write, drive_async
from miniengine.runtime.lifecycle import await_lease, leased, mark_stored
from miniengine.runtime.mode import ProcessTree, RunMode
from miniengine.runtime.nodes import CalcJobNode, ProcessNode, WorkChainNode, load_nodes
from miniengine.runtime.workchain.executor import _Child, child_executor, restored_executor
from miniengine.runtime.workchain.inputs import bind_inputs, new_process_row
from miniengine.runtime.workchain.load import Loaded, LoadError, load_process
from miniengine.runtime.workchain.process import WorkChain, class_path, import_process_class
from miniengine.storage.interfaces.checkpoints import MemoKey, StoredCheckpoint
from miniengine.storage.interfaces.provenance import FinishProcess, NewProcess

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["launch", "resume"]


async def run_child(
    child: _Child,
    build: Callable[..., Any],
    cls: type[Any],
    inputs: Any,
    store: Backend,
    tree: ProcessTree,
) -> None:
    """Run a child that a run-mode WorkChain submitted (a WorkChain or a CalcJob, whose
    executor ``build(cls, store, node, epoch, mode, inputs)`` makes) to its end in the parent's
    tree; its fate is recorded on its node, not raised here."""
    node = child.node
    assert node.pk is not None
    started = False
    try:
        with child.scope:
            await anyio.lowlevel.checkpoint()  # killed before it could start?
            started = True
            epoch = await store.checkpoints.claim_process.aio(
                node.pk,
                store.owner,
                store.lease_expiry(),
                ProcessState.RUNNING.value,
            )
            tree.scopes[node.pk] = child.scope
            executor = build(cls, store, node, epoch, RunMode(tree), inputs)
            try:
                await drive_async(leased(store, executor.lifecycle(ProcessState.CREATED)))
            except Exception:
                pass  # the child's node is EXCEPTED; its parent decides what that means
        if not started:
            with anyio.CancelScope(shield=True):
                await _kill_unstarted(store, node.pk, "Killed: its parent failed before it started")
    finally:
        child.done.set()


async def _kill_unstarted(store: Backend, pk: int, message: str) -> None:
    """Record that a CREATED process was killed before anything ran it."""
    await store.checkpoints.kill_unstarted.aio(pk, message)


def root_lifecycle(
    cls: type[WorkChain],
    store: Backend,
    tree: ProcessTree,
    inputs: dict[str, Any],
    metadata: Metadata,
    parent: RunningProcess | None,
) -> Lifecycle[tuple[dict[str, Any], WorkChainNode]]:
    """Create the node (running, with its lease) and run the outline."""
    new = new_process_row(cls, store, inputs, metadata, parent, ProcessState.RUNNING)

    def create(memo: MemoKey | None) -> Write:
        return Write(store.checkpoints.create_workchain, new, class_path(cls), inputs, False, memo)

    result: tuple[dict[str, Any], WorkChainNode] = yield from run_new(
        cls, inputs, store, tree, parent, new, create, WorkChainNode, child_executor
    )
    return result


def run_new(
    cls: type[Any],
    inputs: Any,
    store: Backend,
    tree: ProcessTree,
    parent: RunningProcess | None,
    new: NewProcess,
    create: Callable[[MemoKey | None], Write],
    node_class: type[ProcessNode],
    build: Callable[..., Any],
) -> Lifecycle[Any]:
    """Create a process launched in run mode (``create(memo)``: its node, running with its
    lease at epoch 1, its inputs and first checkpoint; reused if the calling step is replayed)
    and drive the executor that ``build(cls, store, node, epoch, mode, inputs)`` makes for its
    ``node_class`` node to its end, in ``tree``."""
    memo = None
    if parent is not None:
        memo = parent.memo_key(store.checkpoints.fingerprint(new.process_type, new.inputs))
    pk, input_pks = yield create(memo)
    mark_stored(new.inputs, input_pks, store)
    if parent is not None:
        parent.call_count += 1
    node = node_class(store, store.provenance.node(pk))
    executor = build(cls, store, node, 1, RunMode(tree), inputs)
    return (yield from leased(store, executor.lifecycle(ProcessState.CREATED)))


async def launch(
    cls: type[WorkChain], raw_inputs: Mapping[str, Any], db: Any = None
) -> tuple[dict[str, Any], WorkChainNode]:
    """Run a WorkChain to its end on the running loop (the process tree owns a task group)."""
    inputs, metadata = bind_inputs(cls, raw_inputs)
    parent = context.current_process()
    if parent is not None and parent.kind == "calcfunction":
        raise InvalidOperation(
            f"the calcfunction {parent.label} tried to run {cls.__name__}: a calcfunction "
            "cannot call other processes"
        )
    store = context.store_for(parent.store if parent is not None else db)
    result: tuple[dict[str, Any], WorkChainNode] = await _in_tree(
        lambda tree: root_lifecycle(cls, store, tree, inputs, metadata, parent), store
    )
    return result


async def _in_tree(make: Callable[[ProcessTree], Lifecycle[Any]], store: Backend) -> Any:
    """Drive a root lifecycle with its children in one task group, and a watcher that applies
    control requests (kill, pause) made from elsewhere to this tree's processes."""
    error: BaseException | None = None
    result: Any = None
    async with anyio.create_task_group() as task_group:
        tree = ProcessTree(task_group)
        watcher = anyio.CancelScope()

        async def watch() -> None:
            with watcher:
                await _watch_controls(tree, store)

        task_group.start_soon(watch)
        try:
            with tree.root_scope:
                result = await drive_async(make(tree))
            if tree.root_scope.cancelled_caught:
                raise ProcessKilledError(tree.root_kill_message() or "the process was killed")
        except BaseException as exc:
            error = exc
            task_group.cancel_scope.cancel()
        tree.close()
        watcher.cancel()
    if error is not None:
        raise error
    return result


#: The shortest time between two reads of a run-mode tree's kill and pause requests.
CONTROL_POLL = 0.02

#: The longest: requests are read again after this long even if nothing seemed to commit.
CONTROL_WAIT = 1.0


async def _watch_controls(tree: ProcessTree, store: Backend) -> None:
    handled: set[tuple[int, str]] = set()
    while True:
        marker = store.commit_marker()  # before the read: a later request changes it
        requests = await store.control.pending_controls.aio(store.owner)
        handled &= set(requests)
        for pk, control in requests:
            if (pk, control) not in handled and tree.apply_control(pk, control):
                handled.add((pk, control))
        # a busy tree commits all the time: read the requests at most every CONTROL_POLL
        await anyio.sleep(CONTROL_POLL)
        await store.await_commit(marker, CONTROL_WAIT)


async def resume(
    pk: int, *, db: Any = None, timeout: float | None = None
) -> tuple[dict[str, Any], ProcessNode]:
    """Continue a WorkChain or a CalcJob from its last checkpoint (a CalcJob from its stage, e.g.
    after the script that ran it died while its job ran), once its previous owner's lease
    expired."""
    store = context.store_for(db)
    node = load_nodes(store, [pk]).get(pk)
    if not isinstance(node, WorkChainNode | CalcJobNode):
        raise MiniengineError(f"node {pk} is not a WorkChain or CalcJob process")
    if node.is_terminated:
        return unflatten_namespace(_output_map(node)), node
    await await_lease(store, pk, node, timeout)
    checkpoint = store.checkpoints.read_checkpoint(pk)
    calcjob = isinstance(node, CalcJobNode)
    if calcjob and checkpoint is None:
        raise MiniengineError(f"process {pk} has no checkpoint to continue from")
    try:
        cls = import_process_class(_class_path_of(node, checkpoint))
        epoch = await store.checkpoints.claim_process.aio(
            pk,
            store.owner,
            store.lease_expiry(),
            ProcessState.RUNNING.value,
        )
    except MiniengineError as exc:
        await _except_unowned(store, pk, f"cannot resume: {exc}")
        raise

    def make(tree: ProcessTree) -> Lifecycle[Any]:
        mode = RunMode(tree)
        if checkpoint is None:  # a WorkChain that has none yet starts from its first step
            row = store.provenance.node(pk)
            loaded = Loaded(
                restored_executor(store, cls, row, epoch, mode, None), ProcessState.RUNNING
            )
        else:
            try:
                loaded = load_process(store, store.provenance.node(pk), epoch, checkpoint, mode)
            except LoadError as exc:
                raise exc.cause  # noqa: B904  (what the checkpoint raised, as before)
        return _resumed(loaded, store)

    try:
        result: tuple[dict[str, Any], ProcessNode] = await _in_tree(make, store)
        return result
    except (CheckpointError, OutlineMismatch) as exc:
        await _except_owned(store, pk, epoch, f"cannot resume from the checkpoint: {exc}")
        raise
    finally:
        if not calcjob:  # (a CalcJob calls no processes)
            with anyio.CancelScope(shield=True):
                await _end_calls_not_replayed(store, pk, checkpoint[0] if checkpoint else 0)


async def _end_calls_not_replayed(store: Backend, pk: int, seq: int) -> None:
    """End what the cut-off attempt called that the replay did not call again (best effort: a
    failed write must not hide how the resumed run itself ended)."""
    try:
        await store.checkpoints.end_calls_not_replayed.aio(pk, seq)
    except MiniengineError:
        pass


def _resumed(loaded: Loaded, store: Backend) -> Lifecycle[Any]:
    """Drive a loaded process, its awaited children that did not end resumed in the tree."""
    executor = loaded.executor
    tree = executor.tree
    assert tree is not None
    for _, _, child in executor.awaiting:
        if not child.is_terminated and child.pk is not None:
            executor.children[child.pk] = _Child(child)
            tree.task_group.start_soon(_resume_child, executor.children[child.pk], store)
    return (yield from leased(store, executor.lifecycle(loaded.state)))


async def _resume_child(child: _Child, store: Backend) -> None:
    try:
        with child.scope:
            try:
                await resume(child.node.pk, db=store)  # type: ignore[arg-type]
            except Exception:
                pass
    finally:
        child.done.set()


def _class_path_of(node: ProcessNode, checkpoint: StoredCheckpoint | None) -> str:
    if checkpoint is None:
        module, _, name = node.process_type.rpartition(".")
        return f"{module}:{name}"
    import miniengine.runtime.registry  # noqa: F401  (types above the core a checkpoint may hold)

    return peek(checkpoint.data).class_path


def _output_map(node: ProcessNode) -> dict[str, Any]:
    store = node.store
    assert store is not None and node.pk is not None
    links = store.provenance.links(node.pk, False, ["return", "create"])
    nodes = load_nodes(store, [link[0] for link in links])
    return {label: nodes[pk] for pk, _, label in links}


async def _except_unowned(store: Backend, pk: int, message: str) -> None:
    """Mark a process as EXCEPTED with ``message``, unless a live owner holds it."""
    try:
        await store.checkpoints.except_unless_owned.aio(pk, store.owner, message)
    except MiniengineError:
        pass  # a live owner holds it: leave it alone


async def _except_owned(
    store: Backend, pk: int, epoch: int, message: str, task_pk: int | None = None
) -> None:
    await store.provenance.finish_process.aio(
        FinishProcess(
            pk=pk,
            owner=store.owner,
            epoch=epoch,
            process_state=ProcessState.EXCEPTED.value,
            exception=message,
            log=("ERROR", message),
            task_pk=task_pk,
        ),
    )
