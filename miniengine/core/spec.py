"""The spec of a process class: its input and output ports, exit codes and outline.

``WorkChain.define(spec)`` fills one :class:`ProcessSpec`; it is built lazily, the first time the
class is used, and kept per class.  Everything here is pure: no database is needed to define or
inspect a process class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from miniengine.core.data import Data
from miniengine.core.exit_code import ExitCode
from miniengine.core.function_spec import metadata_namespace
from miniengine.core.outline import Block, build_outline
from miniengine.core.ports import (
    UNSPECIFIED,
    InputPort,
    OutputPort,
    Port,
    PortNamespace,
    copy_port,
)

__all__ = ["ProcessSpec"]


class ProcessSpec:
    """Ports, exit codes and (for WorkChains) the outline of a process class."""

    def __init__(self) -> None:
        self.inputs = PortNamespace("inputs", valid_type=None)
        self.inputs.add_port(metadata_namespace())
        self.outputs = PortNamespace("outputs")
        self.exit_codes: dict[str, ExitCode] = {}
        self._outline: Block | None = None
        #: namespace -> {exposed class qualified name: names of the exposed ports}
        self.exposed_inputs: dict[str | None, dict[type, list[str]]] = {}
        self.exposed_outputs: dict[str | None, dict[type, list[str]]] = {}
        self.sealed = False

    # ports -----------------------------------------------------------------------------------

    def _add(
        self, namespace: PortNamespace, name: str, port_factory: Callable[[str], Port]
    ) -> Port:
        head, _, last = name.rpartition(".")
        target = namespace.create_namespace(head) if head else namespace
        return target.add_port(port_factory(last))

    def input(
        self,
        name: str,
        valid_type: type | tuple[type, ...] | None = None,
        required: bool = True,
        default: Any = UNSPECIFIED,
        validator: Callable[[Any, Port], str | None] | None = None,
        help: str | None = None,
        serializer: Callable[[Any], Any] | None = None,
        non_db: bool = False,
    ) -> None:
        """Declare an input port; a dotted ``name`` creates the namespaces on the way."""
        if valid_type is None and not non_db:
            valid_type = Data
        self._add(
            self.inputs,
            name,
            lambda port_name: InputPort(
                port_name,
                valid_type=valid_type,
                required=required if default is UNSPECIFIED else False,
                default=default,
                validator=validator,
                help=help,
                serializer=serializer,
                non_db=non_db,
            ),
        )

    def output(
        self,
        name: str,
        valid_type: type | tuple[type, ...] | None = None,
        required: bool = True,
        validator: Callable[[Any, Port], str | None] | None = None,
        help: str | None = None,
    ) -> None:
        """Declare an output port; a dotted ``name`` creates the namespaces on the way."""
        self._add(
            self.outputs,
            name,
            lambda port_name: OutputPort(
                port_name,
                valid_type=valid_type or Data,
                required=required,
                validator=validator,
                help=help,
            ),
        )

    def input_namespace(self, name: str, **kwargs: Any) -> PortNamespace:
        """Declare a (possibly dynamic) input namespace."""
        return self.inputs.create_namespace(name, **kwargs)

    def output_namespace(self, name: str, **kwargs: Any) -> PortNamespace:
        """Declare a (possibly dynamic) output namespace."""
        return self.outputs.create_namespace(name, **kwargs)

    # exit codes and outline ------------------------------------------------------------------

    def exit_code(
        self, status: int, label: str, message: str, invalidates_cache: bool = False
    ) -> None:
        """Declare an exit code the process can return: ``self.exit_codes.<label>``."""
        if not isinstance(status, int) or isinstance(status, bool):
            raise TypeError(f"exit code status must be an int, got {status!r}")
        if status < 0:
            raise ValueError(f"exit code status must be a non-negative int, got {status}")
        if not isinstance(label, str) or not label.isidentifier():
            raise TypeError(f"exit code label must be an identifier string, got {label!r}")
        if not isinstance(message, str):
            raise TypeError(f"exit code message must be a string, got {message!r}")
        if not isinstance(invalidates_cache, bool):
            raise TypeError(f"invalidates_cache must be a bool, got {invalidates_cache!r}")
        self.exit_codes[label] = ExitCode(status, message, invalidates_cache)

    def outline(self, *instructions: Any) -> None:
        """Set the outline (steps, ``if_``, ``while_``, ``return_``)."""
        self._outline = build_outline(*instructions)

    def get_outline(self) -> Block | None:
        return self._outline

    # exposing another process's ports --------------------------------------------------------

    def expose_inputs(
        self,
        process_class: Any,
        namespace: str | None = None,
        exclude: Sequence[str] | None = None,
        include: Sequence[str] | None = None,
        namespace_options: dict[str, Any] | None = None,
    ) -> None:
        """Copy the inputs of ``process_class`` into ``namespace`` (or the top level)."""
        self._expose(
            self.inputs,
            self.exposed_inputs,
            process_class.spec().inputs,
            process_class,
            namespace,
            exclude,
            include,
            namespace_options,
            skip=("metadata",),
        )

    def expose_outputs(
        self,
        process_class: Any,
        namespace: str | None = None,
        exclude: Sequence[str] | None = None,
        include: Sequence[str] | None = None,
        namespace_options: dict[str, Any] | None = None,
    ) -> None:
        """Copy the outputs of ``process_class`` into ``namespace`` (or the top level)."""
        self._expose(
            self.outputs,
            self.exposed_outputs,
            process_class.spec().outputs,
            process_class,
            namespace,
            exclude,
            include,
            namespace_options,
            skip=(),
        )

    def _expose(
        self,
        target_root: PortNamespace,
        registry: dict[str | None, dict[type, list[str]]],
        source: PortNamespace,
        process_class: Any,
        namespace: str | None,
        exclude: Sequence[str] | None,
        include: Sequence[str] | None,
        namespace_options: dict[str, Any] | None,
        skip: tuple[str, ...],
    ) -> None:
        if exclude is not None and include is not None:
            raise ValueError("expose_inputs/expose_outputs take exclude or include, not both")
        target = (
            target_root.create_namespace(namespace, **(namespace_options or {}))
            if namespace
            else target_root
        )
        exposed: list[str] = []
        for name, port in source.ports.items():
            if name in skip:
                continue
            if exclude is not None and name in exclude:
                continue
            if include is not None and name not in include:
                continue
            # A copy, as AiiDA does: changing the exposed port (or adding ports to an exposed
            # namespace) must not change the spec of process_class.
            target.ports[name] = copy_port(port)
            exposed.append(name)
        if source.dynamic:
            target.dynamic = True
            if source.valid_type is not None:
                target.valid_type = source.valid_type
        registry.setdefault(namespace, {})[process_class] = exposed
