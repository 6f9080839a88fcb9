"""``BaseRestartWorkChain``: run a process again until it succeeds, with handlers that fix inputs.

A port of AiiDA's restart machinery (``aiida.engine.BaseRestartWorkChain``, ``process_handler``
and ``ProcessHandlerReport``) with AiiDA's names, exit codes, report wording and rules, so that a
plugin's restart work chain ports by changing its imports.  A subclass sets ``_process_class``
(a WorkChain, a process function, later a CalcJob), fills ``self.ctx.inputs`` in its first step,
and decorates ``(self, node)`` methods with :func:`process_handler`; the outline is usually::

    spec.outline(
        cls.setup,
        while_(cls.should_run_process)(cls.run_process, cls.inspect_process),
        cls.results,
    )

Everything the loop needs between steps lives in the context (``iteration``, ``children``,
``is_finished``, ``unhandled_failure``, ``inputs``, ``handler_overrides``), so the loop survives
a worker crash like any WorkChain: each step ends with a checkpoint, and a step cut off by a crash
is replayed with its child reused, never launched twice.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar, overload

from miniengine.core.attribute_dict import AttributeDict
from miniengine.core.awaitables import ToContext, append_
from miniengine.core.data import Bool, Dict, Int, to_data
from miniengine.core.exit_code import ExitCode
from miniengine.core.links import LinkType
from miniengine.core.ports import NAMESPACE_SEPARATOR, Port, PortNamespace
from miniengine.core.spec import ProcessSpec
from miniengine.exceptions import (
    MiniengineError,
    ProcessKilledError,
)
from miniengine.runtime.driver import UNWRITABLE
from miniengine.runtime.nodes import ProcessNode
from miniengine.runtime.workchain import WorkChain

__all__ = [
    "BaseRestartWorkChain",
    "InvalidProcessClassError",
    "MissingProcessInputsError",
    "ProcessHandlerDefinitionError",
    "ProcessHandlerReport",
    "ProcessHandlerReturnError",
    "process_handler",
    "validate_handler_overrides",
]


class ProcessHandlerDefinitionError(MiniengineError, TypeError):
    """``@process_handler`` was given a wrong argument or a method with the wrong signature
    (a ``TypeError``, as in AiiDA); raised when the class body is executed."""


class ProcessHandlerReturnError(MiniengineError, RuntimeError):
    """A process handler returned something that is not a ``ProcessHandlerReport`` or None
    (a ``RuntimeError``, as in AiiDA); the work chain excepts, naming the handler."""


class InvalidProcessClassError(MiniengineError, ValueError):
    """``_process_class`` is not set to a process class or process function (a ``ValueError``,
    as in AiiDA)."""


class MissingProcessInputsError(MiniengineError, AttributeError):
    """``run_process`` found no ``self.ctx.inputs`` to launch the process with (an
    ``AttributeError``, as in AiiDA)."""


class ProcessHandlerReport(NamedTuple):
    """What a process handler returns when its condition was met.

    ``do_break=True`` stops the remaining (lower priority) handlers; an ``exit_code`` with a
    non-zero status aborts the work chain with that exit code.  The default report means "I dealt
    with it, run the process again".
    """

    do_break: bool = False
    exit_code: ExitCode = ExitCode()


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


@overload
def process_handler(
    wrapped: _Handler,
    *,
    priority: int = 0,
    exit_codes: ExitCode | list[ExitCode] | None = None,
    enabled: bool = True,
) -> _Handler: ...


@overload
def process_handler(
    wrapped: None = None,
    *,
    priority: int = 0,
    exit_codes: ExitCode | list[ExitCode] | None = None,
    enabled: bool = True,
) -> Callable[[_Handler], _Handler]: ...


def process_handler(
    wrapped: Any = None,
    *,
    priority: int = 0,
    exit_codes: ExitCode | list[ExitCode] | None = None,
    enabled: bool = True,
) -> Any:
    """Register a ``(self, node)`` method of a :class:`BaseRestartWorkChain` as a process handler.

    ``inspect_process`` calls the handlers with the node of the process that just terminated,
    highest ``priority`` first.  With ``exit_codes`` the handler is only called when the node's
    exit status is one of them (otherwise it counts as having returned None).  A handler with
    ``enabled=False`` is skipped unless the ``handler_overrides`` input enables it.  Usable bare
    (``@process_handler``) or with keywords (``@process_handler(priority=500)``).
    """
    if wrapped is None:
        return functools.partial(
            process_handler, priority=priority, exit_codes=exit_codes, enabled=enabled
        )
    if not inspect.isfunction(wrapped):
        raise ProcessHandlerDefinitionError(
            "first argument can only be an instance method, use keywords for decorator arguments."
        )
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ProcessHandlerDefinitionError("the `priority` keyword should be an integer.")
    codes: list[ExitCode] | None
    if exit_codes is None:
        codes = None
    elif isinstance(exit_codes, list):
        codes = exit_codes
    else:
        codes = [exit_codes]
    if codes and any(not isinstance(code, ExitCode) for code in codes):
        raise ProcessHandlerDefinitionError(
            "`exit_codes` keyword should be an instance of `ExitCode` or list thereof."
        )
    if not isinstance(enabled, bool):
        raise ProcessHandlerDefinitionError("the `enabled` keyword should be a boolean.")
    parameters = [
        parameter
        for parameter in inspect.signature(wrapped).parameters.values()
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(parameters) != 2:
        raise ProcessHandlerDefinitionError(
            f"process handler `{wrapped.__name__}` has invalid signature: should be (self, node)"
        )
    statuses = None if codes is None else frozenset(code.status for code in codes)

    @functools.wraps(wrapped)
    def handler(self: BaseRestartWorkChain, node: ProcessNode) -> Any:
        if statuses is not None and node.exit_status not in statuses:
            result = None
        else:
            result = wrapped(self, node)
        self._record_considered_handler(wrapped.__name__, result)
        return result

    handler.decorator = process_handler  # type: ignore[attr-defined]
    handler.priority = priority  # type: ignore[attr-defined]
    handler.enabled = enabled  # type: ignore[attr-defined]
    handler.exit_codes = codes  # type: ignore[attr-defined]
    return handler


def validate_handler_overrides(
    process_class: type[BaseRestartWorkChain], handler_overrides: Any, _port: Port | None
) -> str | None:
    """Validator of the ``handler_overrides`` input: ``{handler name: {'enabled': bool,
    'priority': int}}`` where every name is a process handler of ``process_class``.

    Bound to the class with ``functools.partial`` in ``define``, as AiiDA does, so that a bad
    name is refused at launch, before anything is stored.  A bare boolean as the value still
    works (AiiDA's deprecated form) with a ``DeprecationWarning``.
    """
    if not handler_overrides:
        return None
    overrides = (
        handler_overrides.get_dict() if isinstance(handler_overrides, Dict) else handler_overrides
    )
    for handler, override in overrides.items():
        if not isinstance(handler, str):
            return f"The key `{handler}` is not a string."
        if not process_class.is_process_handler(handler):
            return f"The key `{handler}` is not a process handler of {process_class}"
        if not isinstance(override, bool | dict):
            return f"The value of key `{handler}` is not a boolean or dictionary."
        if isinstance(override, bool):
            warnings.warn(
                "Setting a boolean as value for `handler_overrides` is deprecated. Use "
                f"`{{'handler_name': {{'enabled': {override}}}}}` instead.",
                DeprecationWarning,
                stacklevel=2,
            )
            continue
        for key, value in override.items():
            if key not in ("enabled", "priority"):
                return f"The value of key `{handler}` contain keys `{key}` which is not supported."
            if key == "enabled" and not isinstance(value, bool):
                return f"The `enabled` override of `{handler}` should be a boolean, got {value!r}."
            if key == "priority" and (not isinstance(value, int) or isinstance(value, bool)):
                return (
                    f"The `priority` override of `{handler}` should be an integer, got {value!r}."
                )
    return None


def _is_process_function(process: Any) -> bool:
    return bool(getattr(process, "is_process_function", False))


class BaseRestartWorkChain(WorkChain):
    """Run ``_process_class`` until it finishes successfully, at most ``max_iterations`` times.

    After each run ``inspect_process`` calls the process handlers (methods decorated with
    :func:`process_handler`) with the node of that run, highest priority first.  A handler that
    dealt with a problem (typically by changing ``self.ctx.inputs``) returns a
    :class:`ProcessHandlerReport`, and the process runs again; a report with a non-zero exit code
    aborts the work chain with it.  A failure no handler dealt with is retried once; a second one
    in a row ends the work chain with ``ERROR_SECOND_CONSECUTIVE_UNHANDLED_FAILURE``.  An excepted
    or killed run ends it with ``ERROR_SUB_PROCESS_EXCEPTED`` / ``ERROR_SUB_PROCESS_KILLED``.

    ``results`` attaches the outputs of the last run that the spec exposes
    (``spec.expose_outputs(process_class)``); override :meth:`get_outputs` to change them.
    """

    _process_class: Any = None
    _considered_handlers_extra = "considered_handlers"

    @property
    def process_class(self) -> Any:
        """The process class (or process function) run in the loop."""
        process = type(self)._process_class
        valid = (isinstance(process, type) and hasattr(process, "spec")) or _is_process_function(
            process
        )
        if not valid:
            raise InvalidProcessClassError(
                "no valid Process class defined for `_process_class` attribute"
            )
        return process

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        """The inputs and exit codes every restart work chain has; subclasses add the outline."""
        super().define(spec)
        spec.input(
            "max_iterations",
            valid_type=Int,
            default=lambda: Int(5),
            help="Maximum number of iterations the work chain will restart the process to finish "
            "successfully.",
        )
        spec.input(
            "clean_workdir",
            valid_type=Bool,
            default=lambda: Bool(False),
            help="If `True`, work directories of all called calculation jobs will be cleaned at "
            "the end of execution.",
        )
        spec.input(
            "handler_overrides",
            valid_type=Dict,
            required=False,
            validator=functools.partial(validate_handler_overrides, cls),
            serializer=to_data,
            help="Mapping where keys are process handler names and the values are a dictionary, "
            "where each dictionary can define the ``enabled`` and ``priority`` key, which can be "
            "used to toggle the values set on the original process handler declaration.",
        )
        spec.exit_code(301, "ERROR_SUB_PROCESS_EXCEPTED", message="The sub process excepted.")
        spec.exit_code(302, "ERROR_SUB_PROCESS_KILLED", message="The sub process was killed.")
        spec.exit_code(
            401,
            "ERROR_MAXIMUM_ITERATIONS_EXCEEDED",
            message="The maximum number of iterations was exceeded.",
        )
        spec.exit_code(
            402,
            "ERROR_SECOND_CONSECUTIVE_UNHANDLED_FAILURE",
            message="The process failed for an unknown reason, twice in a row.",
        )

    # the outline steps -----------------------------------------------------------------------

    def setup(self) -> None:
        """Initialise the context variables the loop uses."""
        overrides = self.inputs.get("handler_overrides")
        self.ctx.handler_overrides = overrides.get_dict() if overrides is not None else {}
        self.ctx.process_name = _process_name(self.process_class)
        self.ctx.unhandled_failure = False
        self.ctx.is_finished = False
        self.ctx.iteration = 0

    def should_run_process(self) -> bool:
        """Whether to run the process (again): the last run did not finish the work and the
        maximum number of iterations is not reached."""
        max_iterations: int = self.inputs.max_iterations.value
        return not self.ctx.is_finished and self.ctx.iteration < max_iterations

    def run_process(self) -> ToContext | None:
        """Launch the process with the inputs in ``self.ctx.inputs``, labelled
        ``iteration_NN``, and add its node to ``self.ctx.children``.

        A WorkChain (or CalcJob) is submitted and awaited through the context; a process
        function runs inline, in this step, since it cannot be submitted.
        """
        self.ctx.iteration += 1
        try:
            unwrapped_inputs = self.ctx.inputs
        except AttributeError:
            raise MissingProcessInputsError(
                "no process input dictionary was defined in `self.ctx.inputs`"
            ) from None
        label = f"iteration_{self.ctx.iteration:02d}"
        unwrapped_inputs.setdefault("metadata", {})["call_link_label"] = label
        process = self.process_class
        inputs = self._wrap_bare_dict_inputs(process.spec().inputs, unwrapped_inputs)
        self._start_considered_handlers()
        if _is_process_function(process):
            node = self._run_process_function(process, inputs, label)
            self.ctx.children = [*self.ctx.get("children", []), node]
        else:
            node = self.submit(process, **inputs)
        name, iteration = self.ctx.process_name, self.ctx.iteration
        self.report(f"launching {name}<{node.pk}> iteration #{iteration}")
        return None if _is_process_function(process) else ToContext(children=append_(node))

    def inspect_process(self) -> ExitCode | None:
        """Analyse the last run and call the handlers.

        An excepted or killed run aborts the work chain.  Otherwise the enabled handlers run by
        descending priority (``do_break`` stops the rest).  A failed run that no handler reported
        on is an unhandled failure: retried once, aborted the second time in a row.  When a
        handler reported, the work chain restarts (report exit status 0) or aborts with the
        report's exit code, whether the run finished successfully or failed.  A successful run
        that no handler reported on ends the loop.
        """
        node: ProcessNode = self.ctx.children[self.ctx.iteration - 1]

        if node.is_excepted:
            return self.exit_codes.ERROR_SUB_PROCESS_EXCEPTED
        if node.is_killed:
            return self.exit_codes.ERROR_SUB_PROCESS_KILLED

        last_report: ProcessHandlerReport | None = None
        handlers = sorted(self.get_process_handlers_by_priority(), key=lambda e: e[0], reverse=True)
        for _, handler in handlers:
            report = handler(self, node)
            if report is not None and not isinstance(report, ProcessHandlerReport):
                raise ProcessHandlerReturnError(
                    f"handler `{handler.__name__}` returned a value that is not a "
                    "ProcessHandlerReport"
                )
            if report:
                last_report = report
            if report and report.do_break:
                break

        name, pk = self.ctx.process_name, node.pk
        if node.is_failed and not last_report:
            if self.ctx.unhandled_failure:
                self.report(
                    f"{name}<{pk}> failed and error was not handled for the second consecutive "
                    "time, aborting"
                )
                return self.exit_codes.ERROR_SECOND_CONSECUTIVE_UNHANDLED_FAILURE
            self.ctx.unhandled_failure = True
            self.report(f"{name}<{pk}> failed and error was not handled, restarting once more")
            return None

        # the run succeeded or a handler dealt with it: no longer an unhandled failure
        self.ctx.unhandled_failure = False

        if last_report:
            succeeded = node.is_finished_ok
            if last_report.exit_code.status == 0:
                outcome = (
                    "finished successfully but a handler was triggered, restarting"
                    if succeeded
                    else "failed but a handler dealt with the problem, restarting"
                )
            else:
                outcome = (
                    "finished successfully but a handler detected an unrecoverable problem, "
                    "aborting"
                    if succeeded
                    else "failed but a handler detected an unrecoverable problem, aborting"
                )
            self.report(f"{name}<{pk}> {outcome}")
            return last_report.exit_code

        self.ctx.is_finished = True
        return None

    def results(self) -> ExitCode | None:
        """Attach the outputs of the last run, or end with ``ERROR_MAXIMUM_ITERATIONS_EXCEEDED``
        when the loop stopped at ``max_iterations`` without the work being finished."""
        node: ProcessNode = self.ctx.children[self.ctx.iteration - 1]
        # is_finished rather than the node's success: a handler may have accepted a failed run
        max_iterations: int = self.inputs.max_iterations.value
        if not self.ctx.is_finished and self.ctx.iteration >= max_iterations:
            self.report(
                f"reached the maximum number of iterations {max_iterations}: "
                f"last ran {self.ctx.process_name}<{node.pk}>"
            )
            return self.exit_codes.ERROR_MAXIMUM_ITERATIONS_EXCEEDED
        self.report(f"work chain completed after {self.ctx.iteration} iterations")
        self._attach_outputs(node)
        return None

    def on_terminated(self) -> None:
        """Clean the remote working folders of the calculation jobs this work chain called, when
        the ``clean_workdir`` input is True.

        The engine calls it once the work chain has finished (not when it was killed).
        """
        parent_hook = getattr(super(), "on_terminated", None)
        if parent_hook is not None:
            parent_hook()
        if not self.inputs.clean_workdir.value:
            self.report("remote folders will not be cleaned")
            return
        cleaned: list[str] = []
        for child in self.node.called:
            remote = child.outputs.get("remote_folder") if hasattr(child.outputs, "get") else None
            clean = getattr(remote, "_clean", None)
            if clean is None:
                continue
            try:
                clean()
            except (OSError, KeyError):
                continue
            cleaned.append(str(child.pk))
        if cleaned:
            self.report(f"cleaned remote folders of calculations: {' '.join(cleaned)}")

    # outputs ---------------------------------------------------------------------------------

    def get_outputs(self, node: ProcessNode) -> Mapping[str, Any]:
        """The outputs to attach to the work chain: by default those of the last run that the
        spec exposes.  Override to change them (through a calcfunction, to keep provenance)."""
        return self.exposed_outputs(node, self.process_class)

    def _attach_outputs(self, node: ProcessNode) -> Mapping[str, Any]:
        """Attach each output port's value from :meth:`get_outputs`; report the required ones
        missing, skip the ones a step already attached."""
        outputs = self.get_outputs(node)
        attached = self._attached_output_names()
        for name, port in self.spec().outputs.ports.items():
            if name not in outputs:
                if port.required:
                    self.report(
                        f"required output `{name}` was not an output of "
                        f"{self.ctx.process_name}<{node.pk}> (or an incorrect class/output is "
                        "being exposed)."
                    )
                continue
            if name in attached:
                self.logger.info(f"output `{name}` was already attached, skipping.")
                continue
            self.out(name, outputs[name])
        return outputs

    def _attached_output_names(self) -> set[str]:
        """Top-level names of the outputs attached so far, by earlier steps or this one."""
        labels = set(self._me.outputs)
        stored = self.node.base.links.get_outgoing(link_type=LinkType.RETURN).all_link_labels()
        labels.update(stored)
        return {label.split(NAMESPACE_SEPARATOR, 1)[0] for label in labels}

    # handlers --------------------------------------------------------------------------------

    @classmethod
    def is_process_handler(cls, process_handler_name: str | Callable[..., Any]) -> bool:
        """Whether the name (or function) is a process handler of this class."""
        if isinstance(process_handler_name, str):
            handler = getattr(cls, process_handler_name, None)
        else:
            handler = process_handler_name
        return getattr(handler, "decorator", None) is process_handler

    @classmethod
    def get_process_handlers(cls) -> list[Callable[..., Any]]:
        """The process handlers of this class (inherited ones too, overrides winning), by name.

        Read from the class dictionaries rather than with ``inspect.getmembers``, which would
        evaluate every descriptor of the class (``exit_codes`` builds the spec).
        """
        found: dict[str, Any] = {}
        for klass in cls.__mro__:
            for name, value in vars(klass).items():
                found.setdefault(name, value)
        return [value for _, value in sorted(found.items()) if cls.is_process_handler(value)]

    def get_process_handlers_by_priority(self) -> list[tuple[int, Callable[..., Any]]]:
        """``(priority, handler)`` of the enabled handlers, with ``handler_overrides`` applied."""
        handlers: list[tuple[int, Callable[..., Any]]] = []
        overrides_by_name: dict[str, Any] = self.ctx.get("handler_overrides", {})
        for handler in self.get_process_handlers():
            overrides = overrides_by_name.get(handler.__name__, {})
            enabled: bool | None
            priority: int | None = None
            if isinstance(overrides, bool):
                enabled = overrides
            else:
                enabled = overrides.get("enabled")
                priority = overrides.get("priority")
            if enabled is False or (enabled is None and not handler.enabled):  # type: ignore[attr-defined]
                continue
            chosen = priority if priority is not None else handler.priority  # type: ignore[attr-defined]
            handlers.append((chosen, handler))
        return handlers

    def _start_considered_handlers(self) -> None:
        """Open the list of handlers considered for the run being launched, in the node's
        ``considered_handlers`` extra (AiiDA's record), where the node has extras."""
        extras = getattr(self.node.base, "extras", None)
        if extras is None:
            return
        considered = extras.get(self._considered_handlers_extra, [])
        considered.append([])
        extras.set(self._considered_handlers_extra, considered)

    def _record_considered_handler(self, name: str, result: Any) -> None:
        """Add a handler's name and result to the last list of the ``considered_handlers``
        extra, where the node has extras."""
        extras = getattr(self.node.base, "extras", None)
        if extras is None:
            return
        considered = extras.get(self._considered_handlers_extra, [])
        if not considered:
            return
        serialized = result
        if isinstance(result, ProcessHandlerReport):
            serialized = {"do_break": result.do_break, "exit_status": result.exit_code.status}
        considered[-1].append((name, serialized))
        extras.set(self._considered_handlers_extra, considered)

    # launching -------------------------------------------------------------------------------

    def _run_process_function(
        self, process: Any, inputs: Mapping[str, Any], label: str
    ) -> ProcessNode:
        """Run a process function inline and return its node, also when it raised (EXCEPTED)."""
        before = {triple.node.pk for triple in self._called_links(label)}
        try:
            _, node = process.run_get_node(**inputs)
        except ProcessKilledError:
            raise  # this work chain is being killed
        except UNWRITABLE:
            raise  # not ours to write any more, or the database is unusable
        except Exception:
            excepted = [t.node for t in self._called_links(label) if t.node.pk not in before]
            if not excepted:
                raise  # it failed before it was created (e.g. bad inputs): ours to report
            return max(excepted, key=lambda found: found.pk)  # type: ignore[no-any-return]
        return node  # type: ignore[no-any-return]

    def _called_links(self, label: str) -> list[Any]:
        links = self.node.base.links.get_outgoing(
            link_type=(LinkType.CALL_CALC, LinkType.CALL_WORK)
        )
        return [triple for triple in links.all() if triple.link_label == label]

    def _wrap_bare_dict_inputs(
        self, port_namespace: PortNamespace, inputs: Mapping[str, Any]
    ) -> AttributeDict:
        """The inputs with each bare dict wrapped in a ``Dict`` where its port takes a ``Dict``
        (and recursing into namespaces), so ``self.ctx.inputs`` may hold plain dicts."""
        wrapped = AttributeDict()
        for key, value in inputs.items():
            port = port_namespace.ports.get(key)
            if port is None:
                wrapped[key] = value
                continue
            valid_type = port.valid_type
            valid_types = valid_type if isinstance(valid_type, tuple) else (valid_type,)
            if isinstance(port, PortNamespace) and isinstance(value, Mapping):
                wrapped[key] = self._wrap_bare_dict_inputs(port, value)
            elif Dict in valid_types and isinstance(value, dict):
                wrapped[key] = Dict(value)
            else:
                wrapped[key] = value
        return wrapped


def _process_name(process: Any) -> str:
    """The name AiiDA reports a process by: its class name, or a process function's name."""
    return str(getattr(process, "process_label", None) or process.__name__)
