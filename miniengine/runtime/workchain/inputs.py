"""Creating a WorkChain's node: binding its inputs and describing the row to store.

The node, its inputs and links, its first checkpoint and (for the daemon) its start task are
written in one transaction (``store.checkpoints.create_workchain``), so a process never exists
without what it needs to be run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from miniengine.core.builder import ProcessBuilder
from miniengine.core.data import Data
from miniengine.core.function_spec import Metadata, parse_metadata
from miniengine.core.ids import new_uuid
from miniengine.core.links import LinkType
from miniengine.core.ports import NAMESPACE_SEPARATOR, PortNamespace
from miniengine.core.states import ProcessState
from miniengine.exceptions import (
    InputValidationError,
    InvalidOperation,
)
from miniengine.runtime import context
from miniengine.runtime.context import RunningProcess
from miniengine.runtime.workchain.process import WorkChain, outline_of
from miniengine.storage.interfaces.provenance import NewProcess

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["bind_inputs", "new_process_row", "process_type"]


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


def validated_inputs(cls: Any, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs of a WorkChain or a CalcJob (a mapping or a builder) with the defaults filled
    in and the serializers run, validated: ``InputValidationError`` names the port."""
    spec = cls.spec()
    if isinstance(raw, ProcessBuilder):
        raw = raw._inputs(prune=True)
    inputs: dict[str, Any] = spec.inputs.pre_process(dict(raw))
    message = spec.inputs.validate(inputs)
    if message:
        raise InputValidationError(f"{cls.__qualname__}: {message}")
    return inputs


def bind_inputs(cls: type[WorkChain], raw: Mapping[str, Any]) -> tuple[dict[str, Any], Metadata]:
    """Fill defaults, run serializers, validate: ``InputValidationError`` names the port."""
    outline_of(cls)  # a class without an outline is refused before anything is stored
    inputs = validated_inputs(cls, raw)
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
    store: Backend,
    inputs: dict[str, Any],
    metadata: Metadata,
    parent: RunningProcess | None,
    state: ProcessState,
    submitted: bool = False,
) -> NewProcess:
    _rebase_defaults(inputs, cls.spec().inputs, store)
    return process_row(
        cls, store, inputs, metadata, parent, state, submitted, "process.workchain", _WORK_LINKS
    )


#: The input and call links of a WorkChain, and of a CalcJob.
_WORK_LINKS = (LinkType.INPUT_WORK.value, LinkType.CALL_WORK.value)
CALC_LINKS = (LinkType.INPUT_CALC.value, LinkType.CALL_CALC.value)


def process_row(
    cls: Any,
    store: Backend,
    inputs: dict[str, Any],
    metadata: Metadata,
    parent: RunningProcess | None,
    state: ProcessState,
    submitted: bool,
    node_type: str,
    links: tuple[str, str],
    attributes: dict[str, Any] | None = None,
) -> NewProcess:
    """The node of a new WorkChain or CalcJob (``links``: the type of its input links and of
    its call link), its Data inputs flattened; with its lease unless it is ``CREATED`` (a
    daemon task will claim it)."""
    claimed = state is not ProcessState.CREATED
    flat_inputs = _flatten_data(inputs, cls.spec().inputs)
    context.check_same_database(store, flat_inputs, cls.__name__)
    return NewProcess(
        uuid=new_uuid(),
        node_type=node_type,
        process_type=process_type(cls),
        process_label=cls.__name__,
        process_state=state.value,
        label=metadata.label,
        description=metadata.description,
        inputs=flat_inputs,
        input_link_type=links[0],
        owner=store.owner if claimed else None,
        lease_expires=store.lease_expiry() if claimed else None,
        parent=parent.parent_fence if parent is not None else None,
        call_link_type=links[1],
        call_link_label=metadata.call_link_label,
        attributes=attributes or {},
        submitted=submitted,
    )


def _rebase_defaults(inputs: dict[str, Any], ports: PortNamespace, store: Backend) -> None:
    """A Data default is one node shared by every run, as in AiiDA -- within one database.  A
    default stored in another database file is replaced by a copy for this one."""
    for name, port in ports.ports.items():
        value = inputs.get(name)
        if isinstance(port, PortNamespace):
            if isinstance(value, dict):
                _rebase_defaults(value, port, store)
        elif value is not None and value is port.default and isinstance(value, Data):
            other = value._store
            if value.pk is not None and other is not None and other.location != store.location:
                inputs[name] = value.clone()
