"""The executor of a WorkChain: its lifecycle from the first step to its termination.

An :class:`_Executor` holds everything about one running WorkChain that its steps must not see
(store, lease epoch, cursor, pending outputs, reports and children), so that the WorkChain
instance keeps a small attribute namespace.  Its :meth:`_Executor.lifecycle` is a generator
driven by :mod:`miniengine.runtime.driver`; every step ends with one transaction that writes the
state, the checkpoint, the outputs and the reports of that step, fenced by the lease epoch.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from miniengine.core import codec
from miniengine.core.attribute_dict import AttributeDict, FrozenAttributeDict
from miniengine.core.awaitables import ContextAction
from miniengine.core.builder import ProcessBuilder
from miniengine.core.checkpoint import Checkpoint
from miniengine.core.data import Data
from miniengine.core.exit_code import ExitCode
from miniengine.core.links import LinkType
from miniengine.core.outline import (
    OutlineMismatch,
    Return,
    Step,
    first_step,
    instruction_at,
    next_step,
    non_bool_message,
)
from miniengine.core.ports import NAMESPACE_SEPARATOR, PortNamespace, unflatten_namespace
from miniengine.core.states import ProcessEvent, ProcessState, transition
from miniengine.exceptions import (
    CheckpointError,
    InvalidOperation,
    MiniengineError,
    OutputValidationError,
    ProcessKilledError,
)
from miniengine.runtime.driver import UNWRITABLE, Await, Body, Lifecycle, Write
from miniengine.runtime.lifecycle import ProcessExecutor, mark_stored
from miniengine.runtime.mode import Mode, ProcessTree
from miniengine.runtime.nodes import (
    ProcessNode,
    WorkChainNode,
    load_nodes,
)
from miniengine.runtime.workchain.inputs import bind_inputs, new_process_row
from miniengine.runtime.workchain.process import (
    EVICTED,
    WorkChain,
    check_importable,
    class_path,
    outline_of,
)
from miniengine.storage.interfaces.calcjobs import CALCJOB_TYPE
from miniengine.storage.interfaces.checkpoints import StepCommit, StepCommitted
from miniengine.storage.interfaces.provenance import NodeRow

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["ProcessTree"]  # (defined in miniengine.runtime.mode; launchers find it here too)


@dataclass
class _Child:
    """A child started by this process in run mode."""

    node: ProcessNode
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


# the executor ------------------------------------------------------------------------------


class _Executor(ProcessExecutor):
    """Everything about one running WorkChain that its steps must not see directly."""

    instance: WorkChain
    node: WorkChainNode

    def __init__(
        self,
        instance: WorkChain,
        store: Backend,
        inputs: dict[str, Any],
        node: WorkChainNode,
        epoch: int,
        mode: Mode,
    ) -> None:
        super().__init__(instance, store, node, epoch, mode, "workchain", replayable=True)
        cls = type(instance)
        self.spec = cls.spec()
        self.outline = outline_of(cls)
        self.raw_inputs = inputs
        self.inputs = FrozenAttributeDict(inputs)
        self.ctx = AttributeDict()
        self.cursor: tuple[int, ...] | None = None
        self.outputs: dict[str, Data] = {}
        self.new_outputs: list[tuple[str, Data]] = []
        self.warned_predicates: set[str] = set()
        self.awaiting: list[tuple[str, bool, ProcessNode]] = []
        self.children: dict[int, _Child] = {}
        self.new_children: list[tuple[Any, ProcessNode, Any]] = []
        self.step_name = ""
        self.in_step = False

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
        self.log("REPORT", f"[{self.pk}|{self.cls.__name__}|{self.step_name}]: {message}")

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
        from miniengine.runtime.calcjob.process import CalcJob

        if isinstance(process, type) and issubclass(process, CalcJob):
            if args:
                raise TypeError("self.submit() takes the inputs as keyword arguments")
            from miniengine.runtime.calcjob.launch import submit_child

            return submit_child(self, process, inputs)
        if not (isinstance(process, type) and issubclass(process, WorkChain)):
            raise InvalidOperation(
                f"self.submit() launches WorkChain and CalcJob classes, not {process!r}; call "
                "process "
                "functions directly inside the step"
            )
        if args:
            raise TypeError("self.submit() takes the inputs as keyword arguments")
        bound, metadata = bind_inputs(process, inputs)
        daemon = self.mode.children_via_daemon
        if daemon:
            check_importable(process)
        new = new_process_row(
            process, self.store, bound, metadata, self.process, ProcessState.CREATED, daemon
        )
        checkpoints = self.store.checkpoints
        memo = self.process.memo_key(checkpoints.fingerprint(new.process_type, new.inputs))
        self.process.call_count += 1
        pk, input_pks = checkpoints.create_workchain(new, class_path(process), bound, False, memo)
        mark_stored(new.inputs, input_pks, self.store)
        node = WorkChainNode(self.store, self.store.provenance.node(pk))
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
        try:
            return Checkpoint.encode_fields(
                class_path(self.cls),
                self.raw_inputs,
                self.cursor,
                self.step_name,
                self.seq,
                _plain_dicts(self.ctx),
                [(key, append, node.pk) for key, append, node in self.awaiting],  # type: ignore[misc]
                {label: data.pk for label, data in self.outputs.items() if data.pk is not None},
            )
        except (CheckpointError, RecursionError) as exc:
            # (a value nested thousands deep exhausts the recursion before the codec sees it)
            for key, value in self.ctx.items():
                codec.check_encodable(value, f"ctx.{key}")
            codec.check_encodable(self.raw_inputs, "inputs")
            if isinstance(exc, RecursionError):
                raise CheckpointError(
                    "cannot checkpoint the context: it is nested too deep"
                ) from exc
            raise

    def restore(self, checkpoint: Checkpoint | bytes) -> None:
        """Take the state of a checkpoint written by :meth:`checkpoint` (the class is already
        imported); a blob is decoded first, resolving its nodes in this executor's store."""
        if not isinstance(checkpoint, Checkpoint):
            from miniengine.runtime.workchain.load import decode_checkpoint

            checkpoint = decode_checkpoint(self.store, checkpoint)
        if checkpoint.class_path != class_path(self.cls):
            raise OutlineMismatch(
                f"the checkpoint belongs to {checkpoint.class_path}, not {self.cls}"
            )
        self.cursor = checkpoint.cursor
        if self.cursor is not None:
            instruction_at(self.outline, self.cursor)
            # (an empty name, as a checkpoint written while re-waiting once recorded, is unknown)
            if checkpoint.step_name and checkpoint.step_name != getattr(
                instruction_at(self.outline, self.cursor), "name", None
            ):
                raise OutlineMismatch("the step at the checkpoint's cursor was renamed")
        # kept, so that a checkpoint written again before any step runs (a process woken early
        # that goes back to waiting) still names the step at its cursor
        self.step_name = checkpoint.step_name or ""
        self.seq = checkpoint.seq
        self.raw_inputs = checkpoint.inputs
        self.inputs = FrozenAttributeDict(self.raw_inputs)
        self.ctx = AttributeDict(_attribute_dicts(checkpoint.ctx))
        # the children awaited and the outputs so far, in one query
        nodes = load_nodes(
            self.store, [*(pk for _, _, pk in checkpoint.awaiting), *checkpoint.outputs.values()]
        )
        self.awaiting = [(key, append, nodes[pk]) for key, append, pk in checkpoint.awaiting]
        self.outputs = {label: nodes[pk] for label, pk in checkpoint.outputs.items()}

    # the lifecycle ----------------------------------------------------------------------------

    def _evaluate(self, predicate: str) -> Any:
        value = getattr(self.instance, predicate)()
        message = non_bool_message(predicate, value)
        if message is not None and predicate not in self.warned_predicates:
            # the outline warns too; this line (once per predicate) is what a daemon user sees
            self.warned_predicates.add(predicate)
            self.log("WARNING", message)
        return value

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
        daemon = self.mode.children_via_daemon
        commit = StepCommit(
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
            task_pk=self.task_pk,
        )
        if daemon:
            self.new_children = []
        return Write(self.store.checkpoints.step_commit, commit)

    def _after_commit(self, committed: StepCommitted) -> None:
        output_pks, paused = committed
        if paused:
            self.pause_requested = True
        mark_stored(self.new_outputs, output_pks, self.store)
        self.new_outputs = []
        self.logs = []

    def _terminate(self, event: ProcessEvent, state: ProcessState, **fields: Any) -> Write:
        returned = [(label, data, LinkType.RETURN.value) for label, data in self.new_outputs]
        fields.setdefault("outputs", returned)
        return self._finish(self.store.provenance.finish_process, event, state, fields)

    def _start_children(self) -> None:
        from miniengine.runtime.workchain.launch import run_child  # (it imports this module)

        mode = self.mode
        if mode.children_via_daemon:
            return  # (enqueued by the step's commit)
        for child_cls, node, inputs in self.new_children:
            child = _Child(node)
            self.children[node.pk] = child  # type: ignore[index]
            build: Any = child_executor
            if node.node_type == CALCJOB_TYPE:
                from miniengine.runtime.calcjob.launch import child_executor as build
            mode.start_child(run_child, child, build, child_cls, inputs, self.store)
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
                if self.mode.evicts:
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
                self._stop_if_killed()
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
                if self.awaiting and self.mode.evicts:
                    # evicted to the checkpoint, holding no slot while children run
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
                self._stop_if_killed()
                if (yield from self._pause_or_hand_back()):
                    return EVICTED, self.node
                if following is False:
                    following = yield Body(self._advance, (), {}, False, self.process)
                self.cursor = following  # type: ignore[assignment]
            self._stop_if_killed()
            if exit_code.status == 0:
                problem = self._validate_outputs()
                if problem is not None:
                    exit_code = problem
        except GeneratorExit:
            raise  # the generator is being closed (never driven again): no write can happen
        except (KeyboardInterrupt, asyncio.CancelledError, ProcessKilledError) as exc:
            yield from self._end_killed(
                exc, state, cascade=f"Killed: its caller {self.pk} was killed"
            )
            raise
        except BaseException as exc:
            if isinstance(exc, UNWRITABLE) and self.mode.hands_back_lost_leases:
                # a stale run, rows or a file that stayed locked, or a server that stopped
                # answering: not the process's failure; the worker hands the task back, and the
                # step runs again from the checkpoint
                raise
            yield from self._stop_started()
            self.new_outputs = []
            yield self._excepted(exc, state, cascade=f"Killed: its caller {self.pk} excepted")
            raise
        if self.children or self.new_children:
            yield Await(self._wait_for_all_children)  # none may outlive its parent (run mode)
        output_pks = yield from self._write_finish(state, exit_code)
        mark_stored([(label, data) for label, data in self.new_outputs], output_pks, self.store)
        if getattr(self.instance, "on_terminated", None) is not None:
            yield from self._on_terminated()
        return unflatten_namespace(self.outputs), self.node

    def _on_terminated(self) -> Lifecycle[None]:
        """AiiDA's ``on_terminated`` hook, after a WorkChain finished (``BaseRestartWorkChain``
        cleans its CalcJobs' working folders there).  The process has ended: a failing hook is
        logged, never raised."""
        self.logs = []
        try:
            hook = self.instance.on_terminated  # type: ignore[attr-defined]
            yield Body(hook, (), {}, False, self.process)
        except Exception as exc:
            self.logs.append(("WARNING", f"on_terminated failed: {type(exc).__name__}: {exc}"))
        if self.logs:
            yield Write(self.store.provenance.add_logs, self.pk, list(self.logs))
            self.logs = []

    def _stop_started(self) -> Lifecycle[None]:
        """Kill the children it started (run mode), even those its failed step created."""
        if self.children or self.new_children:
            yield Await(self._kill_children)

    def _end_after_failed_finish(self, exc: BaseException, state: ProcessState) -> Write:
        self.new_outputs = []
        return super()._end_after_failed_finish(exc, state)

    def _interpret(self, result: Any) -> ExitCode | None:
        """The exit code that stops the outline, if the step's result is one.

        AiiDA's rule: a positive int or an exit code with a positive status stops; ``0``,
        ``ExitCode()`` (status 0) and negative values let the outline go on.
        """
        if isinstance(result, ExitCode):
            return result if result.status > 0 else None
        if isinstance(result, int) and not isinstance(result, bool):
            return ExitCode(result) if result > 0 else None
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


def child_executor(
    cls: type[WorkChain], store: Backend, node: Any, epoch: int, mode: Mode, inputs: Any
) -> _Executor:
    """A fresh WorkChain's executor in ``mode``, with its bound inputs (a new process)."""
    return _Executor(cls.__new__(cls), store, inputs, node, epoch, mode)


def restored_executor(
    store: Backend, cls: Any, row: NodeRow, epoch: int, mode: Mode, checkpoint: Any
) -> _Executor:
    """A WorkChain's executor in ``mode``, restored from ``checkpoint`` (a blob, a decoded
    :class:`~miniengine.core.checkpoint.Checkpoint`, or None for a process that has none yet:
    it starts from its first step with no inputs)."""
    executor = _Executor(cls.__new__(cls), store, {}, WorkChainNode(store, row), epoch, mode)
    if checkpoint is not None:
        executor.restore(checkpoint)
    return executor


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
