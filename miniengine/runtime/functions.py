"""``@calcfunction`` and ``@workfunction``: plain functions that run as recorded processes.

A calcfunction creates data (CREATE links) and may not call other processes; a workfunction
returns data that already exists (RETURN links) and may call calcfunctions and workfunctions.
Calling one synchronously runs its body in the calling thread; ``await f.arun(...)`` runs it on
the event loop (a ``def`` body in a worker thread).  The lifecycle -- create and start in one
transaction, run the body, terminate in a second transaction -- is written once, in
:func:`_lifecycle`, and driven by :mod:`miniengine.runtime.driver`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from miniengine.core.data import Data
from miniengine.core.exit_code import ExitCode
from miniengine.core.function_spec import FunctionSpec, Metadata
from miniengine.core.ids import new_uuid
from miniengine.core.links import LinkType
from miniengine.core.ports import NAMESPACE_SEPARATOR
from miniengine.core.states import ProcessEvent, ProcessState, transition
from miniengine.exceptions import (
    DatabaseLockedError,
    EventLoopError,
    InvalidOperation,
    LeaseLostError,
    OutputValidationError,
    ProcessKilledError,
)
from miniengine.runtime import caching, context
from miniengine.runtime.context import RunningProcess
from miniengine.runtime.driver import Body, Lifecycle, Write, drive_async, drive_sync
from miniengine.runtime.nodes import CalcFunctionNode, ProcessNode, WorkFunctionNode
from miniengine.storage.interfaces.provenance import (
    FinishProcess,
    NewProcess,
    NodeRow,
)

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["ProcessFunction", "calcfunction", "workfunction"]

_KINDS = {
    "calcfunction": (
        CalcFunctionNode,
        LinkType.INPUT_CALC,
        LinkType.CREATE,
        LinkType.CALL_CALC,
    ),
    "workfunction": (
        WorkFunctionNode,
        LinkType.INPUT_WORK,
        LinkType.RETURN,
        LinkType.CALL_WORK,
    ),
}

#: a launch that neither looks the cache up nor stores a hash
_NO_CACHE = caching.LaunchHash(None, False)
#: the state a process function is created in (the same for every launch: looked up once)
_STARTED = transition(ProcessState.CREATED, ProcessEvent.START)
_STARTED_VALUE: str = _STARTED.value


def _loop_running() -> bool:
    """Whether this thread runs an event loop (asked by every synchronous launch: without the
    ``RuntimeError`` that ``asyncio.get_running_loop`` raises and this would catch)."""
    return asyncio._get_running_loop() is not None


class ProcessFunction:
    """A function decorated with ``@calcfunction`` or ``@workfunction``."""

    is_process_function = True

    def __init__(self, func: Callable[..., Any], kind: str) -> None:
        if kind not in _KINDS:
            raise ValueError(f"unknown process function kind {kind!r}")
        functools.update_wrapper(self, func)
        self.func = func
        self.kind = kind
        self.is_async = inspect.iscoroutinefunction(func)
        self.process_label: str = func.__name__
        self.process_type = f"{func.__module__}.{func.__qualname__}"
        self.node_class, self._input_link, self._output_link, self.call_link_type = _KINDS[kind]
        # the link types' values, read once (an enum's ``.value`` is two Python calls per launch)
        self._input_type: str = self._input_link.value
        self._output_type: str = self._output_link.value
        self._call_type: str = self.call_link_type.value
        self._spec: FunctionSpec | None = None

    def spec(self) -> FunctionSpec:
        """The inputs and outputs of this function (built on first use)."""
        if self._spec is None:
            self._spec = FunctionSpec(self.func, self.process_label)
        return self._spec

    def __repr__(self) -> str:
        return f"<{self.kind} {self.process_type}>"

    # launching -------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function and return its ``result`` (or the mapping of its outputs)."""
        # Calls drive_sync itself rather than run_get_node: nested calls recurse through here,
        # and every frame saved per level is depth gained before Python's recursion limit.
        if _loop_running():
            raise self._loop_error()
        return drive_sync(self._start(args, kwargs, db=None))[0]

    def _loop_error(self) -> EventLoopError:
        call = f"{self.process_label}.arun(...)"
        return EventLoopError(
            f"{self.process_label}() was called synchronously in a thread that runs an event "
            f"loop, which would block the loop; use `await {call}` there instead"
        )

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.run_get_node(*args, **kwargs)[0]

    def run_get_pk(self, *args: Any, **kwargs: Any) -> tuple[Any, int | None]:
        result, node = self.run_get_node(*args, **kwargs)
        return result, node.pk

    def run_get_node(self, *args: Any, **kwargs: Any) -> tuple[Any, ProcessNode]:
        if _loop_running():
            raise self._loop_error()
        result: tuple[Any, ProcessNode] = drive_sync(self._start(args, kwargs, db=None))
        return result

    async def arun(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function on the running event loop and return its result."""
        return (await self.arun_get_node(*args, **kwargs))[0]

    async def arun_get_node(self, *args: Any, **kwargs: Any) -> tuple[Any, ProcessNode]:
        return await drive_async(self._start(args, kwargs, db=None))

    def _start(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], db: Any
    ) -> Lifecycle[tuple[Any, ProcessNode]]:
        """Validate everything (raising before any write), then return the lifecycle to drive."""
        parent = context.current_process()
        if parent is not None and parent.kind == "calcfunction":
            raise InvalidOperation(
                f"the calcfunction {parent.label} tried to call {self.process_label}: a "
                "calcfunction creates data and cannot call other processes; use a workfunction"
            )
        inputs, metadata = self.spec().bind(args, kwargs)
        store = parent.store if parent is not None else context.store_for(db)
        for name, port in self.spec().inputs.ports.items():
            value = inputs.get(name)
            if value is not None and value is port.default and isinstance(value, Data):
                other = value._store
                if value.pk is not None and other is not None and other.location != store.location:
                    inputs[name] = value.clone()  # a default node belongs to one database
        context.check_same_database(store, _flatten(inputs), self.process_label)
        return self._lifecycle(store, parent, inputs, metadata)

    # the lifecycle ---------------------------------------------------------------------------

    def _lifecycle(
        self,
        store: Backend,
        parent: RunningProcess | None,
        inputs: dict[str, Data],
        metadata: Metadata,
    ) -> Lifecycle[tuple[Any, ProcessNode]]:
        state = _STARTED
        node_uuid = new_uuid()
        stored = metadata.store_provenance
        flat_inputs = [(label, data) for label, data in _flatten(inputs)]
        pk: int | None = None
        epoch = 0
        if stored:
            # caching off (the default) costs this one check: no settings walk, no hash
            cache = _NO_CACHE if caching.off_for(store) else self._cache_hash(flat_inputs, store)
            new = NewProcess(
                uuid=node_uuid,
                node_type=f"process.{self.kind}",
                process_type=self.process_type,
                process_label=self.process_label,
                process_state=_STARTED_VALUE,
                label=metadata.label,
                description=metadata.description,
                inputs=flat_inputs,
                input_link_type=self._input_type,
                owner=store.owner,
                lease_expires=store.lease_expiry(),
                parent=parent.parent_fence if parent is not None else None,
                call_link_type=self._call_type,
                call_link_label=metadata.call_link_label,
                node_hash=cache.node_hash,
            )
            memo = None
            if parent is not None:
                if parent.replayable:  # only a WorkChain's steps are replayed
                    memo = parent.memo_key(
                        store.checkpoints.fingerprint(self.process_type, flat_inputs)
                    )
                parent.call_count += 1
            if cache.lookup:
                begun = yield Write(store.caching.begin_cached, new, memo)
                if begun.outcome == "finished":  # a replayed step: this call already finished
                    return _reused(store, begun.pk, self.node_class)
                pk, input_pks = begun.pk, begun.input_pks
                if begun.source_uuid is not None:  # finished at once, as a copy of an equal call
                    _mark_stored(flat_inputs, input_pks, store)
                    node, outputs = caching.copied_node(store, self.node_class, begun)
                    if len(outputs) == 1 and "result" in outputs:
                        return outputs["result"], node
                    return outputs, node
            elif memo is None:
                pk, input_pks = yield Write(store.provenance.begin_process, new)
            else:
                pk, input_pks, outcome = yield Write(store.provenance.begin_memoised, new, memo)
                if outcome == "finished":  # a replayed step: this call already finished
                    return _reused(store, pk, self.node_class)
            epoch = 1
            _mark_stored(flat_inputs, input_pks, store)
        row = _memory_row(pk, node_uuid, self, state, metadata)
        node = self.node_class(store if stored else None, row)
        running = RunningProcess(store, pk, epoch, self.kind, self.process_label, node=node)

        def terminate(event: ProcessEvent, **fields: Any) -> Write:
            assert pk is not None
            finish = FinishProcess(
                pk=pk,
                owner=store.owner,
                epoch=epoch,
                process_state=transition(state, event).value,
                resumable=False,
            )
            for name, value in fields.items():
                setattr(finish, name, value)
            return Write(store.provenance.finish_process, finish)

        if stored:
            store.leases_taken()
        try:
            call_args, call_kwargs = self.spec().call_arguments(inputs)
            returned = yield Body(self.func, call_args, call_kwargs, self.is_async, running)
            outputs, exit_code = self._collect_outputs(returned)
        except GeneratorExit:
            raise  # the generator is being closed (never driven again): no write can happen
        except (KeyboardInterrupt, asyncio.CancelledError, ProcessKilledError) as exc:
            if stored:
                message = _kill_message(exc)
                yield terminate(ProcessEvent.KILL, process_status=message, log=("REPORT", message))
            raise
        except BaseException as exc:
            if stored:
                formatted = "".join(traceback.format_exception(exc))
                yield terminate(ProcessEvent.EXCEPT, exception=formatted, log=("ERROR", formatted))
            raise
        finally:
            if stored:
                store.leases_released()
        final_state = transition(state, ProcessEvent.FINISH)
        link_type = self._output_type
        flat_outputs = [(label, data, link_type) for label, data in _flatten(outputs)]
        if stored:
            try:
                output_pks = yield terminate(
                    ProcessEvent.FINISH,
                    exit_status=exit_code.status,
                    exit_message=exit_code.message,
                    outputs=flat_outputs,
                )
            except (LeaseLostError, DatabaseLockedError):
                raise  # not ours to write any more, or the file is unusable: nothing to record
            except (KeyboardInterrupt, asyncio.CancelledError) as exc:
                # Ctrl-C while the terminal transaction ran: it rolled back whole, so the
                # process would stay RUNNING; it is killed, as at any other point of its run.
                message = _kill_message(exc)
                yield terminate(ProcessEvent.KILL, process_status=message, log=("REPORT", message))
                raise
            except Exception as exc:
                # The outputs could not be stored (e.g. a user Data type whose content msgpack
                # cannot encode): the process must not stay RUNNING, so it is EXCEPTED.
                formatted = "".join(traceback.format_exception(exc))
                yield terminate(ProcessEvent.EXCEPT, exception=formatted, log=("ERROR", formatted))
                raise
            for (_, data, _), output_pk in zip(flat_outputs, output_pks, strict=True):
                if data.pk is None:
                    data._set_stored(output_pk, data.uuid, store)
        else:
            node._row = _memory_row(None, node_uuid, self, final_state, metadata, exit_code)
            node._memory_inputs = dict(flat_inputs)
            node._memory_outputs = {label: data for label, data, _ in flat_outputs}
        if len(outputs) == 1 and "result" in outputs:
            return outputs["result"], node
        return outputs, node

    def _cache_hash(self, inputs: list[tuple[str, Data]], store: Backend) -> caching.LaunchHash:
        """The hash of this call and whether to look it up (a workfunction is never cached: it
        returns data, it does not compute it)."""
        if self.kind != "calcfunction":
            return _NO_CACHE
        return caching.launch_hash(self, self.process_type, inputs, store)

    def _collect_outputs(self, returned: Any) -> tuple[dict[str, Any], ExitCode]:
        """Check what the body returned and turn it into outputs and an exit code."""
        if returned is None:
            return {}, ExitCode(0)
        if isinstance(returned, ExitCode):
            return {}, returned
        if isinstance(returned, Data):
            outputs: dict[str, Any] = {"result": returned}
        elif isinstance(returned, Mapping):
            outputs = _nest_dotted(returned)
        else:
            raise OutputValidationError(
                f"{self.process_label} returned a {type(returned).__name__}; a process function "
                "must return a Data node, a dict of Data nodes, an ExitCode or None"
            )
        created: dict[int, str] = {}
        for label, data in _flatten(outputs):
            if not isinstance(data, Data):
                raise OutputValidationError(
                    f"{self.process_label} returned the output '{label}' of type "
                    f"{type(data).__name__}, which is not Data"
                )
            if self.kind == "calcfunction" and data.is_stored:
                raise OutputValidationError(
                    f"the calcfunction {self.process_label} returned the already stored node "
                    f"{data.pk} as '{label}': a calcfunction must create its outputs; return a "
                    "new node (e.g. a copy made with .clone())"
                )
            if self.kind == "calcfunction":
                first = created.setdefault(id(data), label)
                if first != label:
                    raise OutputValidationError(
                        f"the calcfunction {self.process_label} returned the same new node as "
                        f"'{first}' and '{label}': a node is created once, by one CREATE link; "
                        "return a copy (.clone()) for the second output"
                    )
            if self.kind == "workfunction" and not data.is_stored:
                raise OutputValidationError(
                    f"the workfunction {self.process_label} returned the unstored node '{label}': "
                    "a workfunction cannot create data; create it in a calcfunction and return "
                    "that calcfunction's output"
                )
        return outputs, ExitCode(0)


def _mark_stored(inputs: list[tuple[str, Data]], pks: list[int], store: Backend) -> None:
    for (_, data), input_pk in zip(inputs, pks, strict=True):
        if data.pk is None:
            data._set_stored(input_pk, data.uuid, store)


def _reused(store: Backend, pk: int, node_class: type[ProcessNode]) -> tuple[Any, ProcessNode]:
    """The result of a finished call, read back instead of running it again."""
    node = node_class(store, store.provenance.node(pk))
    outputs = node.outputs._as_dict()
    if len(outputs) == 1 and "result" in outputs:
        return outputs["result"], node
    return outputs, node


def _kill_message(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "Killed by Ctrl-C (KeyboardInterrupt)"
    if isinstance(exc, ProcessKilledError) and str(exc):
        return f"Killed: {exc}"
    return "Killed: the task running it was cancelled"


def _memory_row(
    pk: int | None,
    node_uuid: str,
    function: ProcessFunction,
    state: ProcessState,
    metadata: Metadata,
    exit_code: ExitCode | None = None,
) -> NodeRow:
    """A node row for a process that has not been (or will not be) read back from the store
    (its pk is ``None`` when its provenance is not stored)."""
    import time

    now = time.time()
    return NodeRow._make(
        (
            pk,
            node_uuid,
            f"process.{function.kind}",
            function.process_type,
            function.process_label,
            state.value,
            None,
            exit_code.status if exit_code else None,
            exit_code.message if exit_code else None,
            None,
            0,
            metadata.label,
            metadata.description,
            None,
            None,
            1,
            None,
            now,
            now,
        )
    )


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    flat: list[tuple[str, Any]] = []
    for key, value in values.items():
        label = f"{prefix}{NAMESPACE_SEPARATOR}{key}" if prefix else key
        # (Data first: the common case, which then costs no ABC check)
        if not isinstance(value, Data) and isinstance(value, Mapping):
            flat.extend(_flatten(value, label))
        else:
            flat.append((label, value))
    return flat


def _nest_dotted(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{'a.b': x, 'c': {'d': y}}`` -> ``{'a': {'b': x}, 'c': {'d': y}}``."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise OutputValidationError(f"output labels must be strings, not {key!r}")
        if isinstance(value, Mapping) and not isinstance(value, Data):
            value = _nest_dotted(value)
        parts = key.split(".")
        target = nested
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return nested


def calcfunction(func: Callable[..., Any]) -> ProcessFunction:
    """Make ``func`` a calculation: its call is recorded, it creates its outputs."""
    return ProcessFunction(func, "calcfunction")


def workfunction(func: Callable[..., Any]) -> ProcessFunction:
    """Make ``func`` a workflow: its call is recorded; it returns data made by its calls."""
    return ProcessFunction(func, "workfunction")
