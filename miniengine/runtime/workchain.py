"""The WorkChain: a process whose steps follow an outline, checkpointed after every step.

A WorkChain class declares its ports, exit codes and outline in ``define(cls, spec)``; the spec is
built on first use.  Running one goes through a lifecycle generator (see
:mod:`miniengine.runtime.driver`) held by an :class:`_Executor`, so that the WorkChain instance
that steps see keeps a small attribute namespace: ``ctx``, ``inputs``, ``node``, ``out``,
``out_many``, ``report``, ``submit``, ``to_context``, ``exposed_inputs``, ``exposed_outputs``,
``exit_codes``.  Every step ends with one transaction that writes the state, the checkpoint, the
outputs and the reports of that step, fenced by the lease epoch.

In run mode, children started with ``self.submit`` run as tasks of the tree's task group; a parent
waiting on them is woken by their completion, never by polling.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from miniengine.core import codec
from miniengine.core.attribute_dict import AttributeDict, FrozenAttributeDict
from miniengine.core.awaitables import ContextAction
from miniengine.core.builder import ProcessBuilder
from miniengine.core.data import Data
from miniengine.core.exit_code import ExitCode, ExitCodesNamespace
from miniengine.core.function_spec import Metadata, parse_metadata
from miniengine.core.ids import new_uuid
from miniengine.core.links import LinkType
from miniengine.core.outline import (
    OutlineMismatch,
    Return,
    Step,
    first_step,
    instruction_at,
    next_step,
    step_names,
)
from miniengine.core.ports import NAMESPACE_SEPARATOR, PortNamespace, unflatten_namespace
from miniengine.core.spec import ProcessSpec
from miniengine.core.states import ProcessEvent, ProcessState, transition
from miniengine.exceptions import (
    CheckpointError,
    InputValidationError,
    InvalidOperation,
    MiniengineError,
    OutputValidationError,
    ProcessKilledError,
)
from miniengine.runtime import context
from miniengine.runtime.context import RunningProcess
from miniengine.runtime.driver import Await, Body, Lifecycle, Write, drive_async
from miniengine.runtime.nodes import (
    CalcFunctionNode,
    ProcessNode,
    WorkChainNode,
    WorkFunctionNode,
    load_nodes,
)
from miniengine.storage import broker_rows, checkpoint_rows, rows
from miniengine.storage.store import Store

__all__ = [
    "EVICTED",
    "NotImportableError",
    "WorkChain",
    "WorkChainDefinitionError",
    "check_importable",
    "class_path",
    "import_process_class",
]

#: Step names AiiDA reserves, plus ``step`` (AiiDA's silent pitfall).
RESERVED_STEP_NAMES = frozenset({"run", "on_run", "to_context", "on_exiting", "on_wait", "step"})

#: Engine methods a subclass is expected to override.
OVERRIDABLE = frozenset({"define"})


class NotImportableError(MiniengineError, ValueError):
    """A process class handed to the daemon cannot be imported by its module path."""


#: What a lifecycle returns instead of outputs when the process was evicted to its checkpoint.
EVICTED: Any = "evicted"


def check_importable(cls: type) -> None:
    """Refuse (before anything is stored) a class that a daemon worker could not import."""
    path = class_path(cls)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise NotImportableError(
            f"{cls.__qualname__} is defined in {'a function' if '<locals>' in path else '__main__'}"
            ", so a daemon worker cannot import it; put it in a module (a .py file on the "
            "Python path) and import it from there, or use run() instead of submit()"
        )
    try:
        found = import_process_class(path)
    except MiniengineError as exc:
        raise NotImportableError(f"{exc}; a daemon worker must be able to import it") from None
    if found is not cls:
        raise NotImportableError(
            f"importing {path} gives another class than the one submitted; a daemon worker "
            "would run that one"
        )


class WorkChainDefinitionError(MiniengineError, TypeError):
    """A WorkChain class is malformed: a reserved step name, an outline naming a missing method."""


def class_path(cls: type) -> str:
    """``module:qualname``, how a checkpoint names its process class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_process_class(path: str) -> type[WorkChain]:
    """Import the process class named by ``module:qualname``; a clear error if that fails."""
    module_name, _, qualname = path.partition(":")
    if "<locals>" in qualname:
        raise MiniengineError(
            f"the process class {path} was defined inside a function, so it cannot be imported "
            "again; define it at module level in an importable module"
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise MiniengineError(f"cannot import the process class {path}: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, WorkChain)):
        raise MiniengineError(f"{path} is not a WorkChain class")
    return obj


def import_by_process_type(process_type: str) -> Any:
    """The class or function named by a node's ``process_type`` (``module.qualname``)."""
    parts = process_type.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for part in parts[split:]:
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise MiniengineError(f"cannot import {process_type}: no importable module path")


class _ExitCodes:
    """``Proc.exit_codes`` on the class and on instances."""

    def __get__(self, instance: Any, owner: type[WorkChain]) -> ExitCodesNamespace:
        building: ProcessSpec | None = owner.__dict__.get("_me_spec_building")
        if building is not None:  # read inside define(): the codes declared so far, as AiiDA
            return ExitCodesNamespace(building.exit_codes)
        return ExitCodesNamespace(owner.spec().exit_codes)


class WorkChain:
    """Base class of workflows made of steps; subclass it and implement ``define``."""

    exit_codes = _ExitCodes()

    _me: _Executor

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.__dict__:
            if name in OVERRIDABLE or name.startswith("__"):
                continue
            if name in RESERVED_STEP_NAMES or name in _ENGINE_NAMES:
                raise WorkChainDefinitionError(
                    f"{cls.__qualname__} defines {name!r}, which is reserved by the WorkChain "
                    "engine; rename that method (any other name, e.g. 'setup', 'finalize', "
                    "'result', works)"
                )

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        """Declare ports, exit codes and the outline; call ``super().define(spec)`` first."""
        spec.exit_code(1, "ERROR_UNSPECIFIED", "The process has failed with an unspecified error.")
        spec.exit_code(
            10, "ERROR_INVALID_OUTPUT", "The process returned an invalid output: {message}"
        )
        spec.exit_code(
            11, "ERROR_MISSING_OUTPUT", "The process did not register a required output."
        )

    @classmethod
    def spec(cls) -> ProcessSpec:
        """The spec of this class, built on first use and kept."""
        spec: ProcessSpec | None = cls.__dict__.get("_me_spec")
        if spec is None:
            spec = ProcessSpec()
            type.__setattr__(cls, "_me_spec_building", spec)
            try:
                cls.define(spec)
            finally:
                type.__delattr__(cls, "_me_spec_building")
            outline = spec.get_outline()
            if outline is None:
                raise WorkChainDefinitionError(f"{cls.__qualname__}.define() set no outline")
            for name in sorted(step_names(outline)):
                if not callable(getattr(cls, name, None)):
                    raise WorkChainDefinitionError(
                        f"the outline of {cls.__qualname__} names {name!r}, which is not a "
                        "method of the class"
                    )
            type.__setattr__(cls, "_me_spec", spec)
        return spec

    @classmethod
    def get_builder(cls) -> ProcessBuilder:
        """A builder for this class's inputs: ``builder.x = Int(1); run(builder)``."""
        return ProcessBuilder(cls)

    # the API of steps ------------------------------------------------------------------------

    @property
    def ctx(self) -> AttributeDict:
        """The context: what steps keep for later steps (checkpointed after every step)."""
        return self._me.ctx

    @property
    def inputs(self) -> FrozenAttributeDict:
        """The inputs, read-only."""
        return self._me.inputs

    @property
    def node(self) -> WorkChainNode:
        return self._me.node

    def out(self, name: str, value: Any) -> None:
        """Attach an output (validated now; stored, if needed, when the step ends)."""
        self._me.add_output(name, value)

    def out_many(self, values: Mapping[str, Any]) -> None:
        """Attach several outputs."""
        for name, value in values.items():
            self._me.add_output(name, value)

    def report(self, message: str) -> None:
        """Log a message on this process (``process report``), written when the step ends."""
        self._me.report(str(message))

    def submit(self, process: Any, *args: Any, **inputs: Any) -> ProcessNode:
        """Launch a child process and return its node at once; wait for it with ToContext."""
        return self._me.submit(process, args, inputs)

    def to_context(self, **awaitables: Any) -> None:
        """Wait for these children at the end of the step and put their nodes in the context."""
        self._me.to_context(awaitables)

    def exposed_inputs(
        self, process_class: Any, namespace: str | None = None, agglomerate: bool = True
    ) -> AttributeDict:
        """The inputs of this process that were exposed from ``process_class``."""
        return self._me.exposed_inputs(process_class, namespace, agglomerate)

    def exposed_outputs(
        self,
        node: ProcessNode,
        process_class: Any,
        namespace: str | None = None,
        agglomerate: bool = True,
    ) -> AttributeDict:
        """The outputs of ``node`` (a finished ``process_class``) as exposed by this process."""
        return self._me.exposed_outputs(node, process_class, namespace, agglomerate)


_ENGINE_NAMES = frozenset(
    name for name in WorkChain.__dict__ if not name.startswith("__") and name not in OVERRIDABLE
) | {"ctx", "_me"}


# launching ---------------------------------------------------------------------------------


def _flatten_data(
    values: Mapping[str, Any], ports: PortNamespace | None, prefix: str = ""
) -> list[tuple[str, Data]]:
    """The Data inputs with their link labels (non-db ports such as ``metadata`` are skipped)."""
    flat: list[tuple[str, Data]] = []
    for key, value in values.items():
        port = ports.ports.get(key) if ports is not None else None
        if port is not None and port.non_db:
            continue
        label = f"{prefix}{NAMESPACE_SEPARATOR}{key}" if prefix else key
        if isinstance(value, Data):
            flat.append((label, value))
        elif isinstance(value, Mapping):
            sub = port if isinstance(port, PortNamespace) else None
            flat.extend(_flatten_data(value, sub, label))
    return flat


def bind_inputs(cls: type[WorkChain], raw: Mapping[str, Any]) -> tuple[dict[str, Any], Metadata]:
    """Fill defaults, run serializers, validate: ``InputValidationError`` names the port."""
    spec = cls.spec()
    if isinstance(raw, ProcessBuilder):
        raw = raw._inputs(prune=True)
    inputs = spec.inputs.pre_process(dict(raw))
    message = spec.inputs.validate(inputs)
    if message:
        raise InputValidationError(f"{cls.__qualname__}: {message}")
    metadata = parse_metadata(inputs.get("metadata"), cls.__qualname__)
    if not metadata.store_provenance:
        raise InvalidOperation(
            f"{cls.__qualname__}: a WorkChain must store its provenance (store_provenance=False "
            "is only for process functions), because its checkpoints refer to stored nodes"
        )
    return inputs, metadata


def process_type(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def new_process_row(
    cls: type[WorkChain],
    store: Store,
    inputs: dict[str, Any],
    metadata: Metadata,
    parent: RunningProcess | None,
    state: ProcessState,
    submitted: bool = False,
) -> rows.NewProcess:
    claimed = state is not ProcessState.CREATED
    _rebase_defaults(inputs, cls.spec().inputs, store)
    flat_inputs = _flatten_data(inputs, cls.spec().inputs)
    context.check_same_database(store, flat_inputs, cls.__name__)
    return rows.NewProcess(
        uuid=new_uuid(),
        node_type="process.workchain",
        process_type=process_type(cls),
        process_label=cls.__name__,
        process_state=state.value,
        label=metadata.label,
        description=metadata.description,
        inputs=flat_inputs,
        input_link_type=LinkType.INPUT_WORK.value,
        owner=store.owner if claimed else None,
        lease_expires=store.lease_expiry() if claimed else None,
        parent=parent.parent_fence if parent is not None else None,
        call_link_type=LinkType.CALL_WORK.value,
        call_link_label=metadata.call_link_label,
        submitted=submitted,
    )


def _rebase_defaults(inputs: dict[str, Any], ports: PortNamespace, store: Store) -> None:
    """A Data default is one node shared by every run, as in AiiDA -- within one database.  A
    default stored in another database file is replaced by a copy for this one."""
    for name, port in ports.ports.items():
        value = inputs.get(name)
        if isinstance(port, PortNamespace):
            if isinstance(value, dict):
                _rebase_defaults(value, port, store)
        elif value is not None and value is port.default and isinstance(value, Data):
            other = value._store
            if value.pk is not None and other is not None and other.path != store.path:
                inputs[name] = value.clone()


def _initial_checkpoint(cls: type[WorkChain], inputs: Any) -> bytes:
    state = {"p": class_path(cls), "c": None, "s": 0, "x": {}, "w": [], "i": inputs, "o": {}}
    return codec.encode(state)


def _with_refs(value: Any, pks: dict[int, int]) -> Any:
    """``value`` with the Data stored by this transaction replaced by references to their pks."""
    if isinstance(value, Data):
        pk = pks.get(id(value))
        return codec.NodeRef(pk) if pk is not None else value
    if isinstance(value, dict):
        return {key: _with_refs(item, pks) for key, item in value.items()}
    return value


def create_workchain_tx(
    connection: Any,
    cls: type[WorkChain],
    new: rows.NewProcess,
    inputs: dict[str, Any],
    enqueue: bool,
    memo: tuple[int, int, int, str] | None = None,
) -> tuple[int, list[int]]:
    """Create a WorkChain node (CREATED) with its inputs and its first checkpoint, and, for the
    daemon, its start task: all in one transaction.  With ``memo``, a child that a replayed step
    already created (and nothing started) is reused instead of duplicated."""
    if memo is None:
        pk, input_pks = rows.begin_process_tx(connection, new)
    else:
        pk, input_pks, outcome = checkpoint_rows.begin_memoised_tx(connection, new, memo)
        if outcome != "new":
            return pk, [data.pk for _, data in new.inputs]  # type: ignore[misc]
    fresh = {
        id(data): input_pk
        for (_, data), input_pk in zip(new.inputs, input_pks, strict=True)
        if data.pk is None
    }
    blob = _initial_checkpoint(cls, _with_refs(inputs, fresh))
    checkpoint_rows.write_checkpoint(connection, pk, 0, blob)
    if enqueue:
        broker_rows.enqueue(connection, pk, f"start:{pk}", time.time())
    return pk, input_pks


class ProcessTree:
    """The task group that runs the children of one launched process tree (run mode), and
    the executors and cancel scopes of its live processes, for control requests."""

    def __init__(self, task_group: anyio.abc.TaskGroup) -> None:
        self.task_group = task_group
        self.root_scope = anyio.CancelScope()
        self.executors: dict[int, _Executor] = {}
        self.scopes: dict[int, anyio.CancelScope] = {}

    def apply_control(self, pk: int, control: str) -> bool:
        """Act on a control request for one of this tree's processes; False if not ours."""
        executor = self.executors.get(pk)
        if executor is None:
            return False
        return executor.apply_control(control, self.scopes.get(pk))


@dataclass
class _Child:
    """A child started by this process in run mode."""

    node: ProcessNode
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


# checkpointed process nodes ----------------------------------------------------------------

_node_resolver: contextvars.ContextVar[Callable[[int], Any] | None] = contextvars.ContextVar(
    "miniengine_node_resolver", default=None
)


def _load_process_node(pk: int) -> Any:
    resolve = _node_resolver.get()
    if resolve is None:
        return codec.NodeRef(pk)
    return resolve(pk)


for _tag, _cls in enumerate((ProcessNode, CalcFunctionNode, WorkFunctionNode, WorkChainNode)):
    codec.register_engine_type(_cls, 16 + _tag, lambda node: node.pk, _load_process_node)


# the executor ------------------------------------------------------------------------------


class _Executor:
    """Everything about one running WorkChain that its steps must not see directly."""

    def __init__(
        self,
        instance: WorkChain,
        store: Store,
        tree: ProcessTree | None,
        inputs: dict[str, Any],
        node: WorkChainNode,
        epoch: int,
        *,
        task_pk: int | None = None,
        worker: Any = None,
    ) -> None:
        cls = type(instance)
        self.task_pk = task_pk
        self.worker = worker
        self.cls = cls
        self.instance = instance
        self.store = store
        self.tree = tree
        self.spec = cls.spec()
        outline = self.spec.get_outline()
        assert outline is not None
        self.outline = outline
        self.raw_inputs = inputs
        self.inputs = FrozenAttributeDict(inputs)
        self.node = node
        self.pk: int = node.pk  # type: ignore[assignment]
        self.epoch = epoch
        self.ctx = AttributeDict()
        self.seq = 0
        self.cursor: tuple[int, ...] | None = None
        self.outputs: dict[str, Data] = {}
        self.new_outputs: list[tuple[str, Data]] = []
        self.logs: list[tuple[str, str]] = []
        self.awaiting: list[tuple[str, bool, ProcessNode]] = []
        self.children: dict[int, _Child] = {}
        self.new_children: list[tuple[type[WorkChain], ProcessNode, dict[str, Any]]] = []
        self.step_name = ""
        self.in_step = False
        self.kill_message: str | None = None
        self.pause_requested = False
        if tree is not None:
            tree.executors[self.pk] = self
            tree.scopes.setdefault(self.pk, tree.root_scope)
        self.process = RunningProcess(
            store,
            self.pk,
            epoch,
            "workchain",
            cls.__name__,
            node=node,
            tree=tree,
            replayable=True,
        )
        instance._me = self

    def apply_control(self, control: str, scope: anyio.CancelScope | None) -> bool:
        """A control request from ``miniengine.control``: kill now, or pause at the next step."""
        if control.startswith("kill:"):
            self.kill_message = control[len("kill:") :] or "Killed"
            if scope is not None:
                scope.cancel()
            return True
        if control == "pause":
            self.pause_requested = True
            return True
        return False

    async def _wait_while_paused(self) -> None:
        """Run mode: hold the process at its step boundary until it is played (or killed)."""
        await self.store.write(_take_pause_request, self.pk)
        while True:
            row = self.store.read(rows.read_node_row, self.pk)
            if not row[10]:  # paused
                return
            await anyio.sleep(0.02)

    # step API ------------------------------------------------------------------------------

    def _check_in_step(self, what: str) -> None:
        if not self.in_step:
            raise InvalidOperation(f"{what} can only be called from a step of {self.cls.__name__}")

    def add_output(self, name: str, value: Any) -> None:
        if isinstance(value, Mapping) and not isinstance(value, Data):
            for key, item in value.items():
                self.add_output(f"{name}.{key}", item)
            return
        label = name.replace(".", NAMESPACE_SEPARATOR)
        port, dynamic = _output_port(self.spec.outputs, name)
        if port is None:
            if dynamic is None:
                raise OutputValidationError(
                    f"{self.cls.__name__}: the output '{name}' is not declared in the spec "
                    "(declare it with spec.output, or make its namespace dynamic)"
                )
            if dynamic.valid_type is not None and not isinstance(value, dynamic.valid_type):
                raise OutputValidationError(
                    f"{self.cls.__name__}: invalid type for output '{name}': got "
                    f"{type(value).__name__}"
                )
        else:
            message = port.validate(value, name)
            if message:
                raise OutputValidationError(f"{self.cls.__name__}: {message}")
        if not isinstance(value, Data):
            raise OutputValidationError(
                f"{self.cls.__name__}: the output '{name}' must be Data, not {type(value).__name__}"
            )
        if label in self.outputs:
            raise OutputValidationError(f"{self.cls.__name__}: the output '{name}' is already set")
        self.outputs[label] = value
        self.new_outputs.append((label, value))

    def report(self, message: str) -> None:
        self.logs.append(("REPORT", f"[{self.pk}|{self.cls.__name__}|{self.step_name}]: {message}"))

    def to_context(self, awaitables: Mapping[str, Any]) -> None:
        for key, value in awaitables.items():
            append = isinstance(value, ContextAction) and value.append
            target = value.target if isinstance(value, ContextAction) else value
            if not isinstance(target, ProcessNode):
                raise InvalidOperation(
                    f"ToContext({key}=...) needs the node of a launched process "
                    f"(from self.submit), got {type(target).__name__}"
                )
            self.awaiting.append((key, append, target))

    def submit(self, process: Any, args: tuple[Any, ...], inputs: dict[str, Any]) -> ProcessNode:
        self._check_in_step("self.submit()")
        if isinstance(process, ProcessBuilder):
            inputs = {**process._inputs(prune=True), **inputs}
            process = process.process_class
        if not (isinstance(process, type) and issubclass(process, WorkChain)):
            raise InvalidOperation(
                f"self.submit() launches WorkChain classes, not {process!r}; call process "
                "functions directly inside the step"
            )
        if args:
            raise TypeError("self.submit() takes the inputs as keyword arguments")
        bound, metadata = bind_inputs(process, inputs)
        daemon = self.tree is None
        if daemon:
            check_importable(process)
        new = new_process_row(
            process, self.store, bound, metadata, self.process, ProcessState.CREATED, daemon
        )
        memo = self.process.memo_key(checkpoint_rows.fingerprint(new.process_type, new.inputs))
        self.process.call_count += 1
        pk, input_pks = self.store.write_sync(create_workchain_tx, process, new, bound, False, memo)
        _mark_stored(new.inputs, input_pks, self.store)
        node = WorkChainNode(self.store, self.store.read(rows.read_node_row, pk))
        self.new_children.append((process, node, bound))
        return node

    def exposed_inputs(
        self, process_class: Any, namespace: str | None, agglomerate: bool
    ) -> AttributeDict:
        namespaces = _namespaces(namespace, agglomerate)
        result = AttributeDict()
        for space in namespaces:
            names = self.spec.exposed_inputs.get(space, {}).get(process_class)
            if names is None:
                continue
            values: Any = self.raw_inputs
            for part in (space or "").split(".") if space else []:
                values = values.get(part, {}) if isinstance(values, Mapping) else {}
            for name in names:
                if isinstance(values, Mapping) and name in values:
                    result[name] = values[name]
        return result

    def exposed_outputs(
        self, node: ProcessNode, process_class: Any, namespace: str | None, agglomerate: bool
    ) -> AttributeDict:
        namespaces = _namespaces(namespace, agglomerate)
        outputs = node.outputs
        where: dict[str, str | None] = {}  # each output goes to the most specific namespace
        for space in namespaces:
            for name in self.spec.exposed_outputs.get(space, {}).get(process_class, ()):
                where[name] = space
        result = AttributeDict()
        for name, space in where.items():
            if name in outputs:
                value = outputs[name]
                if hasattr(value, "_as_dict"):
                    value = value._as_dict()
                result[f"{space}.{name}" if space else name] = value
        return result

    # checkpoints ---------------------------------------------------------------------------

    def checkpoint(self) -> bytes:
        """Encode the state; a ctx value that cannot be checkpointed is reported by its key."""
        state = {
            "p": class_path(self.cls),
            "c": list(self.cursor) if self.cursor is not None else None,
            "n": self.step_name,
            "s": self.seq,
            "x": _plain_dicts(self.ctx),
            "w": [(key, append, node.pk) for key, append, node in self.awaiting],
            "i": self.raw_inputs,
            "o": {label: data.pk for label, data in self.outputs.items() if data.is_stored},
        }
        try:
            return codec.encode(state)
        except CheckpointError:
            for key, value in self.ctx.items():
                codec.check_encodable(value, f"ctx.{key}")
            codec.check_encodable(self.raw_inputs, "inputs")
            raise

    def restore(self, blob: bytes) -> None:
        """Load a checkpoint written by :meth:`checkpoint` (the class is already imported)."""

        def resolve(pk: int) -> Any:
            return load_nodes(self.store, [pk])[pk]

        token = _node_resolver.set(resolve)
        try:
            state = codec.decode(blob, resolve_pk=resolve)
        finally:
            _node_resolver.reset(token)
        if state.get("p") != class_path(self.cls):
            raise OutlineMismatch(f"the checkpoint belongs to {state.get('p')}, not {self.cls}")
        self.cursor = tuple(state["c"]) if state["c"] is not None else None
        if self.cursor is not None:
            instruction_at(self.outline, self.cursor)
            if state.get("n") not in (
                None,
                getattr(instruction_at(self.outline, self.cursor), "name", None),
            ):
                raise OutlineMismatch("the step at the checkpoint's cursor was renamed")
        self.seq = state["s"]
        self.raw_inputs = state["i"]
        self.inputs = FrozenAttributeDict(self.raw_inputs)
        self.ctx = AttributeDict(_attribute_dicts(state["x"]))
        pks = [pk for _, _, pk in state["w"]]
        nodes = load_nodes(self.store, pks)
        self.awaiting = [(key, append, nodes[pk]) for key, append, pk in state["w"]]
        stored = load_nodes(self.store, list(state["o"].values()))
        self.outputs = {label: stored[pk] for label, pk in state["o"].items()}

    # the lifecycle ----------------------------------------------------------------------------

    def _evaluate(self, predicate: str) -> Any:
        return getattr(self.instance, predicate)()

    def _advance(self) -> tuple[int, ...] | None:
        if self.cursor is None:
            return first_step(self.outline, self._evaluate)
        return next_step(self.outline, self.cursor, self._evaluate)

    def _begin_step(self, name: str) -> None:
        self.step_name = name
        self.in_step = True
        self.process.seq = self.seq
        self.process.call_count = 0

    def _run_step(self, name: str) -> Any:
        self._begin_step(name)
        try:
            return getattr(self.instance, name)()
        finally:
            self.in_step = False

    async def _run_step_async(self, name: str) -> Any:
        self._begin_step(name)
        try:
            return await getattr(self.instance, name)()
        finally:
            self.in_step = False

    def _commit(self, state: ProcessState, status: str | None, evict: bool = False) -> Write:
        daemon = self.tree is None
        commit = checkpoint_rows.StepCommit(
            pk=self.pk,
            owner=self.store.owner,
            epoch=self.epoch,
            process_state=state.value,
            process_status=status,
            seq=self.seq,
            checkpoint=self.checkpoint(),
            outputs=self.new_outputs,
            logs=self.logs,
            start_children=[_pk(node) for _, node, _ in self.new_children] if daemon else (),
            wait_for=[_pk(node) for _, _, node in self.awaiting] if evict else None,
            task_pk=self.task_pk if evict else None,
        )
        if daemon:
            self.new_children = []
        return Write(self.store, checkpoint_rows.step_commit_tx, commit)

    def _release(self) -> Write:
        """Hand the process back to the queue at its checkpoint (pause, worker shutdown)."""
        return Write(
            self.store,
            checkpoint_rows.release_process_tx,
            self.pk,
            self.store.owner,
            self.epoch,
            self.task_pk,
        )

    def _after_commit(self, committed: tuple[list[int], bool]) -> None:
        output_pks, paused = committed
        if paused:
            self.pause_requested = True
        _mark_stored(self.new_outputs, output_pks, self.store)
        self.new_outputs = []
        self.logs = []

    def _terminate(self, event: ProcessEvent, state: ProcessState, **fields: Any) -> Write:
        finish = rows.FinishProcess(
            pk=self.pk,
            owner=self.store.owner,
            epoch=self.epoch,
            process_state=transition(state, event).value,
            outputs=[(label, data, LinkType.RETURN.value) for label, data in self.new_outputs],
            logs=list(self.logs),
            task_pk=self.task_pk,
        )
        for name, value in fields.items():
            setattr(finish, name, value)
        return Write(self.store, rows.finish_process_tx, finish)

    def _start_children(self) -> None:
        if self.tree is None:
            return
        for child_cls, node, inputs in self.new_children:
            child = _Child(node)
            self.children[node.pk] = child  # type: ignore[index]
            self.tree.task_group.start_soon(
                _run_child, child, child_cls, inputs, self.store, self.tree
            )
        self.new_children = []

    async def _wait_for_children(self) -> None:
        self._start_children()
        for _, _, node in self.awaiting:
            child = self.children.get(node.pk)  # type: ignore[arg-type]
            if child is not None:
                await child.done.wait()
            elif not node.is_terminated:
                raise MiniengineError(
                    f"child process {node.pk} is not running here and has not terminated; "
                    "resume it first"
                )

    async def _start_children_async(self) -> None:
        self._start_children()

    async def _wait_for_all_children(self) -> None:
        self._start_children()
        for child in list(self.children.values()):
            await child.done.wait()

    def _status(self) -> str:
        pks = ", ".join(str(node.pk) for _, _, node in self.awaiting)
        return f"Waiting for child processes: {pks}"

    async def _kill_children(self) -> None:
        with anyio.CancelScope(shield=True):
            self._start_children()  # children created by the failed step must not be orphans
            for child in self.children.values():
                if not child.done.is_set():
                    child.scope.cancel()
            for child in self.children.values():
                await child.done.wait()

    def _resolve_awaited(self) -> None:
        for key, append, node in self.awaiting:
            _set_context(self.ctx, key, node, append)
        self.awaiting = []

    def lifecycle(self, state: ProcessState) -> Lifecycle[tuple[dict[str, Any], WorkChainNode]]:
        """Run the outline from wherever the executor stands (fresh or restored)."""
        exit_code = ExitCode(0)
        try:
            if self.awaiting:
                state = ProcessState.WAITING
                if self.tree is None:
                    if any(not node.is_terminated for _, _, node in self.awaiting):
                        # woken early (e.g. by recovery): go back to waiting
                        self._after_commit((yield self._commit(state, self._status(), True)))
                        return EVICTED, self.node
                else:
                    yield Await(self._wait_for_children)
                self._resolve_awaited()
            state = transition(
                state, ProcessEvent.RESUME if state is ProcessState.WAITING else ProcessEvent.START
            )
            self.cursor = yield Body(self._advance, (), {}, False, self.process)
            while self.cursor is not None:
                instruction = instruction_at(self.outline, self.cursor)
                if isinstance(instruction, Return):
                    exit_code = _as_exit_code(instruction.exit_code) or ExitCode(0)
                    break
                assert isinstance(instruction, Step)
                self.seq += 1
                method = getattr(self.instance, instruction.name)
                if inspect.iscoroutinefunction(method):
                    result = yield Body(
                        self._run_step_async, (instruction.name,), {}, True, self.process
                    )
                else:
                    result = yield Body(
                        self._run_step, (instruction.name,), {}, False, self.process
                    )
                stop = self._interpret(result)
                if stop is not None:
                    exit_code = stop
                    break
                if self.awaiting and self.tree is None:
                    # daemon: evicted to the checkpoint, holding no slot while children run
                    waiting = transition(state, ProcessEvent.WAIT)
                    self._after_commit((yield self._commit(waiting, self._status(), True)))
                    return EVICTED, self.node
                following: tuple[int, ...] | bool | None = False  # False: not evaluated yet
                if self.awaiting:
                    waiting = transition(state, ProcessEvent.WAIT)
                    self._after_commit((yield self._commit(waiting, self._status())))
                    state = waiting
                    yield Await(self._wait_for_children)
                    self._resolve_awaited()
                    state = transition(state, ProcessEvent.RESUME)
                else:
                    following = yield Body(self._advance, (), {}, False, self.process)
                    if following is None and not self.new_children and not self.pause_requested:
                        # the last step: its outputs and reports go with the terminal commit,
                        # one transaction instead of two
                        self.cursor = None
                        continue
                    self._after_commit((yield self._commit(state, None)))
                    if self.new_children:  # run mode: submitted but not awaited
                        yield Await(self._start_children_async)
                if self.pause_requested:
                    self.pause_requested = False
                    if self.tree is None:  # daemon: evicted; play() enqueues it again
                        yield self._release()
                        return EVICTED, self.node
                    yield Await(self._wait_while_paused)
                if self.worker is not None and self.worker.stopping:
                    yield self._release()
                    return EVICTED, self.node
                if following is False:
                    following = yield Body(self._advance, (), {}, False, self.process)
                self.cursor = following  # type: ignore[assignment]
            if exit_code.status == 0:
                problem = self._validate_outputs()
                if problem is not None:
                    exit_code = problem
        except (KeyboardInterrupt, asyncio.CancelledError, ProcessKilledError) as exc:
            if self.worker is not None and self.worker.stopping:
                # the worker is shutting down, not killing: hand the process back to the queue
                yield self._release()
                raise
            if self.children or self.new_children:
                yield Await(self._kill_children)
            message = self.kill_message or (
                "Killed by Ctrl-C (KeyboardInterrupt)"
                if isinstance(exc, KeyboardInterrupt)
                else f"Killed: {exc}"
                if isinstance(exc, ProcessKilledError) and str(exc)
                else "Killed: the task running it was cancelled"
            )
            self.logs.append(("REPORT", message))
            yield self._terminate(
                ProcessEvent.KILL,
                state,
                process_status=message,
                cascade=f"Killed: its caller {self.pk} was killed",
            )
            raise
        except BaseException as exc:
            if self.children or self.new_children:
                yield Await(self._kill_children)
            formatted = "".join(traceback.format_exception(exc))
            self.logs.append(("ERROR", formatted))
            self.new_outputs = []
            yield self._terminate(
                ProcessEvent.EXCEPT,
                state,
                exception=formatted,
                cascade=f"Killed: its caller {self.pk} excepted",
            )
            raise
        if self.children or self.new_children:
            yield Await(self._wait_for_all_children)  # none may outlive its parent (run mode)
        output_pks = yield self._terminate(
            ProcessEvent.FINISH,
            state,
            exit_status=exit_code.status,
            exit_message=exit_code.message,
        )
        _mark_stored([(label, data) for label, data in self.new_outputs], output_pks, self.store)
        return unflatten_namespace(self.outputs), self.node

    def _interpret(self, result: Any) -> ExitCode | None:
        if isinstance(result, ExitCode):
            return result
        if isinstance(result, int) and not isinstance(result, bool):
            return ExitCode(result) if result != 0 else None
        if isinstance(result, Mapping):
            self.to_context(result)
        return None

    def _validate_outputs(self) -> ExitCode | None:
        nested = unflatten_namespace(self.outputs)
        codes = self.spec.exit_codes
        for name, port in self.spec.outputs.ports.items():
            if (
                port.required
                and name not in nested
                and not (
                    isinstance(port, PortNamespace)
                    and not any(p.required for p in port.ports.values())
                )
            ):
                return codes["ERROR_MISSING_OUTPUT"].format()
        message = self.spec.outputs.validate(nested)
        if message:
            if "required value was not provided" in message:
                return codes["ERROR_MISSING_OUTPUT"]
            return codes["ERROR_INVALID_OUTPUT"].format(message=message)
        return None


def _namespaces(namespace: str | None, agglomerate: bool) -> list[str | None]:
    """The namespace, and with ``agglomerate`` every enclosing one, outermost first."""
    if not (agglomerate and namespace):
        return [namespace]
    parts = namespace.split(".")
    return [None, *(".".join(parts[: i + 1]) for i in range(len(parts)))]


def _output_port(outputs: PortNamespace, name: str) -> tuple[Any, PortNamespace | None]:
    """The declared port for a dotted output name, or else the dynamic namespace that accepts
    it (any depth below a dynamic namespace is accepted), or ``(None, None)``."""
    namespace = outputs
    parts = name.split(".")
    for index, part in enumerate(parts):
        port = namespace.ports.get(part)
        if port is None:
            return None, namespace if namespace.dynamic else None
        if index == len(parts) - 1:
            if isinstance(port, PortNamespace):
                return None, port if port.dynamic else None
            return port, None
        if not isinstance(port, PortNamespace):
            return None, None
        namespace = port
    return None, None


def _take_pause_request(connection: Any, pk: int) -> None:
    connection.execute("UPDATE nodes SET control = NULL WHERE pk = ? AND control = 'pause'", (pk,))


def _pk(node: ProcessNode) -> int:
    assert node.pk is not None
    return node.pk


def _as_exit_code(value: ExitCode | int | None) -> ExitCode | None:
    if value is None:
        return None
    if isinstance(value, ExitCode):
        return value
    return ExitCode(int(value))


def _plain_dicts(value: Any) -> Any:
    """The context with every (attribute) dict made a plain dict, as the codec wants."""
    if isinstance(value, dict):
        return {k: _plain_dicts(v) for k, v in value.items()}
    if type(value) is list:
        return [_plain_dicts(v) for v in value]
    return value


def _attribute_dicts(value: Any) -> Any:
    if isinstance(value, dict):
        return AttributeDict({k: _attribute_dicts(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_attribute_dicts(v) for v in value]
    return value


def _set_context(ctx: AttributeDict, key: str, node: ProcessNode, append: bool) -> None:
    parts = key.split(".")
    target: Any = ctx
    for index, part in enumerate(parts[:-1]):
        existing = target.get(part)
        if existing is None:
            existing = target[part] = AttributeDict()
        elif not isinstance(existing, dict):
            raise InvalidOperation(
                f"cannot put a node in the context at '{key}': '{'.'.join(parts[: index + 1])}' "
                f"holds a {type(existing).__name__}, not a namespace"
            )
        target = existing
    last = parts[-1]
    if append:
        existing = target.get(last)
        if existing is None:
            target[last] = [node]
        elif isinstance(existing, list):
            existing.append(node)
        else:
            raise InvalidOperation(
                f"cannot append to the context key '{key}': it holds a {type(existing).__name__}"
            )
    else:
        target[last] = node


def _mark_stored(items: Any, pks: list[int], store: Store) -> None:
    for (_, data), pk in zip(items, pks, strict=True):
        if data.pk is None:
            data._set_stored(pk, data.uuid, store)


async def _run_child(
    child: _Child, cls: type[WorkChain], inputs: dict[str, Any], store: Store, tree: ProcessTree
) -> None:
    """Run a submitted child to its end; its fate is recorded on its node, not raised here."""
    node = child.node
    assert node.pk is not None
    started = False
    try:
        with child.scope:
            await anyio.lowlevel.checkpoint()  # killed before it could start?
            started = True
            epoch = await store.write(
                checkpoint_rows.claim_process_tx,
                node.pk,
                store.owner,
                store.lease_expiry(),
                ProcessState.RUNNING.value,
            )
            instance = cls.__new__(cls)
            tree.scopes[node.pk] = child.scope
            executor = _Executor(instance, store, tree, inputs, node, epoch)  # type: ignore[arg-type]
            store.leases_taken()
            try:
                await drive_async(executor.lifecycle(ProcessState.CREATED))
            except Exception:
                pass  # the child's node is EXCEPTED; its parent decides what that means
            finally:
                store.leases_released()
        if not started:
            with anyio.CancelScope(shield=True):
                await _kill_unstarted(store, node.pk, "Killed: its parent failed before it started")
    finally:
        child.done.set()


async def _kill_unstarted(store: Store, pk: int, message: str) -> None:
    """Record that a CREATED process was killed before anything ran it."""
    await store.write(_kill_unstarted_tx, pk, message)


def _kill_unstarted_tx(connection: Any, pk: int, message: str) -> None:
    broker_rows.terminate_unowned(connection, pk, "killed", message, time.time())


def root_lifecycle(
    cls: type[WorkChain],
    store: Store,
    tree: ProcessTree,
    inputs: dict[str, Any],
    metadata: Metadata,
    parent: RunningProcess | None,
) -> Lifecycle[tuple[dict[str, Any], WorkChainNode]]:
    """Create the node (running, with its lease) and run the outline."""
    new = new_process_row(cls, store, inputs, metadata, parent, ProcessState.RUNNING)
    memo = None
    if parent is not None:
        memo = parent.memo_key(checkpoint_rows.fingerprint(new.process_type, new.inputs))
    pk, input_pks = yield Write(store, create_workchain_tx, cls, new, inputs, False, memo)
    _mark_stored(new.inputs, input_pks, store)
    if parent is not None:
        parent.call_count += 1
    node = WorkChainNode(store, store.read(rows.read_node_row, pk))
    instance = cls.__new__(cls)
    executor = _Executor(instance, store, tree, inputs, node, 1)
    store.leases_taken()
    try:
        return (yield from executor.lifecycle(ProcessState.CREATED))
    finally:
        store.leases_released()


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
    store = parent.store if parent is not None else context.store_for(db)
    result: tuple[dict[str, Any], WorkChainNode] = await _in_tree(
        lambda tree: root_lifecycle(cls, store, tree, inputs, metadata, parent), store
    )
    return result


async def _in_tree(make: Callable[[ProcessTree], Lifecycle[Any]], store: Store) -> Any:
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
                raise ProcessKilledError("the process was killed")
        except BaseException as exc:
            error = exc
            task_group.cancel_scope.cancel()
        watcher.cancel()
    if error is not None:
        raise error
    return result


async def _watch_controls(tree: ProcessTree, store: Store) -> None:
    from miniengine.storage import control_rows

    version = -1
    handled: set[tuple[int, str]] = set()
    while True:
        current = int(store.reader().execute("PRAGMA data_version").fetchone()[0])
        if current != version:
            version = current
            requests = store.read(control_rows.pending_controls, store.owner)
            handled &= set(requests)
            for pk, control in requests:
                if (pk, control) not in handled and tree.apply_control(pk, control):
                    handled.add((pk, control))
        await anyio.sleep(0.02)


async def resume(
    pk: int, *, db: Any = None, timeout: float | None = None
) -> tuple[dict[str, Any], WorkChainNode]:
    """Continue a WorkChain from its last checkpoint, once its previous owner's lease expired."""
    store = context.store_for(db)
    node = load_nodes(store, [pk]).get(pk)
    if not isinstance(node, WorkChainNode):
        raise MiniengineError(f"node {pk} is not a WorkChain process")
    if node.is_terminated:
        return unflatten_namespace(_output_map(node)), node
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        owner, _, expires = node.lease
        now = time.time()
        if owner is None or owner == store.owner or expires is None or expires < now:
            break
        wait = expires - now + 0.01
        if deadline is not None and time.monotonic() + wait > deadline:
            raise MiniengineError(
                f"process {pk} is still owned by {owner} (lease expires in {expires - now:.1f} s)"
            )
        await anyio.sleep(wait)
    checkpoint = store.read(checkpoint_rows.read_checkpoint, pk)
    try:
        cls = import_process_class(_class_path_of(node, checkpoint))
        epoch = await store.write(
            checkpoint_rows.claim_process_tx,
            pk,
            store.owner,
            store.lease_expiry(),
            ProcessState.RUNNING.value,
        )
    except MiniengineError as exc:
        await _except_unowned(store, pk, f"cannot resume: {exc}")
        raise

    def make(tree: ProcessTree) -> Lifecycle[Any]:
        instance = cls.__new__(cls)
        inputs = _inputs_from_checkpoint(store, checkpoint) if checkpoint else None
        executor = _Executor(instance, store, tree, inputs or {}, node, epoch)
        if checkpoint is not None:
            executor.restore(checkpoint[1])
            executor.raw_inputs = inputs or {}
            executor.inputs = FrozenAttributeDict(executor.raw_inputs)
        return _resumed(executor, store)

    try:
        result: tuple[dict[str, Any], WorkChainNode] = await _in_tree(make, store)
        return result
    except (CheckpointError, OutlineMismatch) as exc:
        await _except_owned(store, pk, epoch, f"cannot resume from the checkpoint: {exc}")
        raise


def _resumed(executor: _Executor, store: Store) -> Lifecycle[Any]:
    store.leases_taken()
    try:
        assert executor.tree is not None
        for _, _, child in executor.awaiting:
            if not child.is_terminated and child.pk is not None:
                executor.children[child.pk] = _Child(child)
                executor.tree.task_group.start_soon(
                    _resume_child, executor.children[child.pk], store
                )
        return (yield from executor.lifecycle(ProcessState.RUNNING))
    finally:
        store.leases_released()


async def _resume_child(child: _Child, store: Store) -> None:
    try:
        with child.scope:
            try:
                await resume(child.node.pk, db=store)  # type: ignore[arg-type]
            except Exception:
                pass
    finally:
        child.done.set()


def _class_path_of(node: WorkChainNode, checkpoint: tuple[int, bytes] | None) -> str:
    if checkpoint is None:
        module, _, name = node.process_type.rpartition(".")
        return f"{module}:{name}"
    state = codec.decode(checkpoint[1])
    return str(state["p"])


def _inputs_from_checkpoint(store: Store, checkpoint: tuple[int, bytes]) -> dict[str, Any]:
    def resolve(pk: int) -> Any:
        return load_nodes(store, [pk])[pk]

    token = _node_resolver.set(resolve)
    try:
        state = codec.decode(checkpoint[1], resolve_pk=resolve)
    finally:
        _node_resolver.reset(token)
    return state["i"]  # type: ignore[no-any-return]


def _output_map(node: ProcessNode) -> dict[str, Any]:
    store = node.store
    assert store is not None and node.pk is not None
    links = store.read(rows.read_links, node.pk, False, ["return", "create"])
    nodes = load_nodes(store, [link[0] for link in links])
    return {label: nodes[pk] for pk, _, label in links}


async def _except_unowned(store: Store, pk: int, message: str) -> None:
    """Mark a process whose lease we could take as EXCEPTED with ``message``."""
    try:
        epoch = await store.write(
            checkpoint_rows.claim_process_tx,
            pk,
            store.owner,
            store.lease_expiry(),
            ProcessState.RUNNING.value,
        )
    except MiniengineError:
        return
    await _except_owned(store, pk, epoch, message)


async def _except_owned(
    store: Store, pk: int, epoch: int, message: str, task_pk: int | None = None
) -> None:
    await store.write(
        rows.finish_process_tx,
        rows.FinishProcess(
            pk=pk,
            owner=store.owner,
            epoch=epoch,
            process_state=ProcessState.EXCEPTED.value,
            exception=message,
            log=("ERROR", message),
            task_pk=task_pk,
        ),
    )
