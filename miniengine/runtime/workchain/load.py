"""Loading a process from its checkpoint: read it, import its class, build its executor, restore.

Run-mode ``resume`` and a daemon worker both continue a process from its last checkpoint; this
module is the one place that does it, so both read the same checkpoint the same way:
:func:`load_process` for the whole sequence, :func:`decode_checkpoint` for reading a blob with
its nodes resolved in a store.  A failure says at which stage it happened
(:class:`LoadError`), because a worker keeps a process whose class does not import (the code is
at fault) and excepts one whose checkpoint cannot be loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from miniengine.core.checkpoint import Checkpoint, peek
from miniengine.core.states import ProcessState
from miniengine.exceptions import MiniengineError
from miniengine.runtime.mode import Mode
from miniengine.runtime.nodes import blob_resolver, node_resolver
from miniengine.runtime.workchain.process import import_process_class

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend
    from miniengine.storage.interfaces.checkpoints import StoredCheckpoint
    from miniengine.storage.interfaces.provenance import NodeRow

__all__ = [
    "IMPORT_STAGE",
    "LOAD_STAGE",
    "READ_STAGE",
    "LoadError",
    "Loaded",
    "decode_checkpoint",
    "load_process",
]

#: :attr:`LoadError.stage`: there was no checkpoint, or it names no process class.
READ_STAGE = "its checkpoint could not be read"
#: :attr:`LoadError.stage`: the class the checkpoint names does not import here.
IMPORT_STAGE = "its process class could not be imported"
#: :attr:`LoadError.stage`: the class imported, but the checkpoint does not fit it.
LOAD_STAGE = "its checkpoint could not be loaded"


class LoadError(MiniengineError):
    """A process could not be loaded from its checkpoint: ``stage`` says where, ``cause`` why
    (whatever the checkpoint or the module raised, ``SystemExit`` included)."""

    def __init__(self, stage: str, cause: BaseException, class_path: str | None) -> None:
        super().__init__(f"{stage}: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause
        #: the class the checkpoint names (``None`` if it could not be read)
        self.class_path = class_path


class Loaded(NamedTuple):
    """A process ready to be driven: its executor and the state its lifecycle starts from."""

    executor: Any
    state: ProcessState


def decode_checkpoint(store: Backend, blob: bytes) -> Checkpoint:
    """A WorkChain checkpoint with its stored nodes (Data and process nodes) loaded from
    ``store``; every runtime type is known (:mod:`miniengine.runtime.registry`)."""
    import miniengine.runtime.registry  # noqa: F401  (types above the core a checkpoint may hold)

    resolve = blob_resolver(store, blob)
    token = node_resolver.set(resolve)
    try:
        return Checkpoint.decode(blob, resolve_pk=resolve)
    finally:
        node_resolver.reset(token)


def load_process(
    store: Backend,
    row: NodeRow,
    epoch: int,
    checkpoint: StoredCheckpoint | None,
    mode: Mode,
) -> Loaded:
    """Continue process ``row`` (whose lease this OS process holds at ``epoch``) from its
    checkpoint in ``mode``: import the class the checkpoint names, build its executor (a
    WorkChain's or a CalcJob's, in either mode) and restore it.  Raises :class:`LoadError`."""
    stage, class_path = READ_STAGE, None
    try:
        if checkpoint is None:
            raise MiniengineError("there is no checkpoint to continue from")
        import miniengine.runtime.registry  # noqa: F401  (types above the core)

        head = peek(checkpoint.data)
        stage, class_path = IMPORT_STAGE, head.class_path
        cls: Any = import_process_class(head.class_path)
        stage = LOAD_STAGE
        restored: Any
        if head.kind == "calcjob":
            from miniengine.runtime.calcjob.launch import restored_executor as restored
        else:
            from miniengine.runtime.workchain.executor import restored_executor as restored
        executor = restored(store, cls, row, epoch, mode, checkpoint.data)
    except (Exception, SystemExit) as exc:  # whatever the checkpoint or the module raised
        raise LoadError(stage, exc, class_path) from exc
    previous = ProcessState(row.process_state) if row.process_state else ProcessState.CREATED
    state = ProcessState.WAITING if executor.awaiting else previous
    if state is ProcessState.RUNNING and executor.cursor is None and executor.seq == 0:
        state = ProcessState.CREATED
    return Loaded(executor, state)
