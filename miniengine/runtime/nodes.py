"""Process nodes as users see them, and loading any node from the database.

A :class:`ProcessNode` is a view of one row: identity fields are read once, while the fields that
change while a process runs (state, exit status, status text) are read from the database at every
access, so ``while not node.is_terminated`` works as in AiiDA.  Inputs, outputs and links are read
on access through the node's store.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import datetime
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from miniengine.core import codec
from miniengine.core import data as data_module
from miniengine.core.data import Data, load_data_from_attributes
from miniengine.core.links import CALL_LINK_TYPES, INPUT_LINK_TYPES, OUTPUT_LINK_TYPES, LinkType
from miniengine.core.ports import NAMESPACE_SEPARATOR
from miniengine.core.states import ProcessState
from miniengine.exceptions import MiniengineError, ModificationNotAllowed, NotExistent
from miniengine.runtime.extras import NodeComments, NodeExtras, flush_pending_extras
from miniengine.storage.interfaces.provenance import NodeRow, unpack_attributes
from miniengine.storage.open import reopened

if TYPE_CHECKING:
    from miniengine.core.calcinfo import CalcJobState
    from miniengine.runtime.caching import NodeCaching
    from miniengine.schedulers.datastructures import JobState
    from miniengine.storage.interfaces import Backend

__all__ = [
    "CalcFunctionNode",
    "CalcJobNode",
    "LinkTriple",
    "LogEntry",
    "Node",
    "ProcessNode",
    "WorkChainNode",
    "WorkFunctionNode",
    "load_node",
    "node_from_row",
]


class LinkTriple(NamedTuple):
    """A link seen from one node: the node at the other end, the link type and its label."""

    node: Any
    link_type: LinkType
    link_label: str


@dataclass(frozen=True)
class LogEntry:
    """One line of a process's log (``self.report``, an exception, a kill)."""

    pk: int
    node_pk: int
    time: datetime.datetime
    levelname: str
    message: str


#: "no default given" for ``NodeAttributes.get`` (``None`` is a valid default)
_NO_DEFAULT: Any = object()


def _link_types(link_type: Any) -> list[str] | None:
    if link_type is None:
        return None
    items = link_type if isinstance(link_type, tuple | list | set | frozenset) else (link_type,)
    return [item.value if isinstance(item, LinkType) else str(item) for item in items]


class LinkManager(Sequence[LinkTriple]):
    """The links of one node in one direction, as AiiDA's ``LinkManager``."""

    def __init__(self, triples: list[LinkTriple]) -> None:
        self._triples = triples

    def __getitem__(self, index: Any) -> Any:
        return self._triples[index]

    def __len__(self) -> int:
        return len(self._triples)

    def all(self) -> list[LinkTriple]:
        return list(self._triples)

    def all_nodes(self) -> list[Any]:
        return [triple.node for triple in self._triples]

    def all_link_labels(self) -> list[str]:
        return [triple.link_label for triple in self._triples]

    def first(self) -> LinkTriple | None:
        return self._triples[0] if self._triples else None

    def one(self) -> LinkTriple:
        if len(self._triples) != 1:
            raise ValueError(f"expected exactly one link, found {len(self._triples)}")
        return self._triples[0]

    def nested(self) -> dict[str, Any]:
        """The linked nodes by label, with ``ns__name`` labels as nested dicts (as in AiiDA)."""
        nested: dict[str, Any] = {}
        for triple in self._triples:
            *namespaces, name = triple.link_label.split(NAMESPACE_SEPARATOR)
            target = nested
            for namespace in namespaces:
                target = target.setdefault(namespace, {})
            if name in target:
                raise ValueError(f"two links share the label {triple.link_label!r}")
            target[name] = triple.node
        return nested

    def get_node_by_label(self, label: str) -> Any:
        matches = [triple.node for triple in self._triples if triple.link_label == label]
        if len(matches) != 1:
            raise NotExistent(f"no single link with the label {label!r} ({len(matches)} found)")
        return matches[0]


class NodeLinks:
    """``node.base.links``: the incoming and outgoing links of a stored node."""

    def __init__(self, store: Backend, pk: int) -> None:
        self._store = store
        self._pk = pk

    def _get(
        self, incoming: bool, node_class: Any, link_type: Any, link_label_filter: str | None
    ) -> LinkManager:
        links = self._store.provenance.links(self._pk, incoming, _link_types(link_type))
        if link_label_filter is not None:
            import fnmatch

            pattern = link_label_filter.replace("%", "*").replace("_", "?")
            links = [link for link in links if fnmatch.fnmatchcase(link.label, pattern)]
        nodes = load_nodes(self._store, [link.pk for link in links])
        triples = [LinkTriple(nodes[pk], LinkType(kind), label) for pk, kind, label in links]
        if node_class is not None:
            triples = [triple for triple in triples if isinstance(triple.node, node_class)]
        return LinkManager(triples)

    def get_incoming(
        self,
        node_class: Any = None,
        link_type: Any = None,
        link_label_filter: str | None = None,
    ) -> LinkManager:
        """Links into this node, optionally filtered by the other node's class, the link type
        (a ``LinkType``, its value, or a tuple of them) and a label pattern (``%``, ``_``)."""
        return self._get(True, node_class, link_type, link_label_filter)

    def get_outgoing(
        self,
        node_class: Any = None,
        link_type: Any = None,
        link_label_filter: str | None = None,
    ) -> LinkManager:
        """Links out of this node, with the filters of :meth:`get_incoming`."""
        return self._get(False, node_class, link_type, link_label_filter)


class NodeAttributes:
    """``node.base.attributes``: a node's attributes as AiiDA names them, read-only.

    A Data node's attributes are its content (``{'value': 5}`` for an ``Int``, the dictionary of
    a ``Dict``, ``{'list': [...]}`` for a ``List``); a process node's are its process fields
    (``process_label``, ``process_state``, ``exit_status``, ...), those not set left out.  They are
    computed on access, so a running process shows its current state.  They cannot be set,
    changed or deleted through this namespace: a stored node's attributes are immutable
    (``ModificationNotAllowed``, as in AiiDA), and an unstored node's are its content (set its
    value instead).  Use extras for what may change.
    """

    def __init__(self, read: Callable[[], dict[str, Any]], pk: int | None = None) -> None:
        self._read = read
        self._pk = pk

    def _refuse(self, keys: Sequence[str]) -> ModificationNotAllowed:
        named = ", ".join(map(repr, keys))
        if self._pk is not None:
            return ModificationNotAllowed(
                f"cannot change the attribute(s) {named} of node <{self._pk}>: the attributes "
                "of a stored node are immutable (extras may change)"
            )
        return ModificationNotAllowed(
            f"cannot change the attribute(s) {named} directly: a node's attributes are its "
            "content (set its value, or use extras)"
        )

    def set(self, key: str, value: Any) -> None:
        raise self._refuse([key])

    def set_many(self, values: Mapping[str, Any]) -> None:
        raise self._refuse(list(values))

    def reset(self, values: Mapping[str, Any]) -> None:
        raise self._refuse(list(values) or list(self._read()))

    def delete(self, key: str) -> None:
        raise self._refuse([key])

    def delete_many(self, keys: Sequence[str]) -> None:
        raise self._refuse(list(keys))

    def clear(self) -> None:
        raise self._refuse(list(self._read()))

    @property
    def all(self) -> dict[str, Any]:
        """Every attribute, as a new dictionary."""
        return self._read()

    def get(self, key: str, default: Any = _NO_DEFAULT) -> Any:
        """The attribute ``key``; else ``default``, or ``AttributeError`` as in AiiDA."""
        attributes = self._read()
        if key in attributes:
            return attributes[key]
        if default is _NO_DEFAULT:
            raise AttributeError(f"the node has no attribute {key!r}")
        return default

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        """The attributes ``keys``, in order (``AttributeError`` for one that is not set)."""
        attributes = self._read()
        missing = [key for key in keys if key not in attributes]
        if missing:
            raise AttributeError(f"the node has no attribute(s) {', '.join(map(repr, missing))}")
        return [attributes[key] for key in keys]

    def keys(self) -> Iterator[str]:
        return iter(self._read())

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self._read().items())

    def __contains__(self, key: object) -> bool:
        return key in self._read()

    def __repr__(self) -> str:
        return f"NodeAttributes({self._read()!r})"


class NodeBase:
    """``node.base``: the namespace of AiiDA's less common node methods.

    ``attributes`` and ``extras`` work on an unstored node too (its extras are kept in memory
    on ``owner``, the node object, until it is stored); ``links`` and ``comments`` need a
    stored one.
    """

    def __init__(
        self,
        store: Backend | None,
        pk: int | None,
        attributes: Callable[[], dict[str, Any]] | None = None,
        owner: object | None = None,
    ) -> None:
        self._store = store
        self._pk = pk
        self._attributes = attributes
        self._owner = owner if owner is not None else self

    @property
    def links(self) -> NodeLinks:
        if self._store is None or self._pk is None:
            raise NotExistent(
                "an unstored node has no links (it was not stored, or was run with "
                "store_provenance=False)"
            )
        return NodeLinks(self._store, self._pk)

    @property
    def attributes(self) -> NodeAttributes:
        return NodeAttributes(self._attributes or dict, self._pk)

    @property
    def extras(self) -> NodeExtras:
        return NodeExtras(self._store, self._pk, self._owner)

    @property
    def comments(self) -> NodeComments:
        return NodeComments(self._store, self._pk)

    @property
    def caching(self) -> NodeCaching:
        """The node's hash, cache source and ``is_valid_cache`` (see ``runtime/caching.py``)."""
        from miniengine.runtime.caching import NodeCaching

        return NodeCaching(self._owner, self._store, self._pk)


class NodeLinksNamespace(Mapping[str, Any]):
    """``node.inputs`` / ``node.outputs``: attribute, item and ``in`` access by link label.

    Nested namespaces (labels joined with ``__``) appear as nested namespaces.
    """

    def __init__(self, content: dict[str, Any], owner: str) -> None:
        self._content = content
        self._owner = owner

    @classmethod
    def from_labels(cls, flat: Mapping[str, Any], owner: str) -> NodeLinksNamespace:
        nested: dict[str, Any] = {}
        for label, node in flat.items():
            parts = label.split(NAMESPACE_SEPARATOR)
            target = nested
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = node
        return cls._wrap(nested, owner)

    @classmethod
    def _wrap(cls, nested: dict[str, Any], owner: str) -> NodeLinksNamespace:
        return cls(
            {k: cls._wrap(v, owner) if isinstance(v, dict) else v for k, v in nested.items()},
            owner,
        )

    def __getattr__(self, name: str) -> Any:
        content = self.__dict__.get("_content", {})
        if name in content:
            return content[name]
        raise AttributeError(f"{self.__dict__.get('_owner', 'the node')} has no link {name!r}")

    def __getitem__(self, name: str) -> Any:
        try:
            return self._content[name]
        except KeyError:
            raise KeyError(f"{self._owner} has no link {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._content)

    def __len__(self) -> int:
        return len(self._content)

    def __dir__(self) -> list[str]:
        return list(self._content)

    def __repr__(self) -> str:
        return f"NodeLinksNamespace({sorted(self._content)!r})"

    def _as_dict(self) -> dict[str, Any]:
        return {
            k: v._as_dict() if isinstance(v, NodeLinksNamespace) else v
            for k, v in self._content.items()
        }


def _datetime(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)


class ProcessNode:
    """The record of one process: its state, inputs, outputs, logs and place in the call tree."""

    def __init__(self, store: Backend | None, row: tuple[Any, ...]) -> None:
        """``row`` is the node's :class:`NodeRow` (a tuple of its fields is made one); a node
        run with ``store_provenance=False`` has one built in memory, with the pk ``None``."""
        self._store_ref = store
        self._row = row if type(row) is NodeRow else NodeRow._make(row)
        self._memory_inputs: dict[str, Any] | None = None  # store_provenance=False only
        self._memory_outputs: dict[str, Any] | None = None

    # identity --------------------------------------------------------------------------------

    @property
    def pk(self) -> int | None:
        return self._row.pk

    @property
    def id(self) -> int | None:
        return self.pk

    @property
    def uuid(self) -> str:
        return self._row.uuid

    @property
    def node_type(self) -> str:
        return self._row.node_type

    @property
    def process_type(self) -> str:
        return self._row.process_type  # type: ignore[return-value]  # set on a process node

    @property
    def process_label(self) -> str:
        return self._row.process_label  # type: ignore[return-value]  # set on a process node

    @property
    def label(self) -> str:
        return self._row.label

    @label.setter
    def label(self, value: str) -> None:
        # As in AiiDA, a process node's label and description stay editable once it is stored
        # (and sealed): they are not attributes.
        self._set_label(value, self._row.description)

    @property
    def description(self) -> str:
        return self._row.description

    @description.setter
    def description(self, value: str) -> None:
        self._set_label(self._row.label, value)

    def _set_label(self, label: str, description: str) -> None:
        for text, what in ((label, "label"), (description, "description")):
            if not isinstance(text, str):
                raise TypeError(f"a node's {what} is a str, not {type(text).__name__}")
            data_module.check_field_text(text, f"a node's {what}")
        if self._store is not None and self._row.pk is not None:
            self._store.provenance.update_label(self._row.pk, label, description)
        self._row = self._row._replace(label=label, description=description)

    @property
    def ctime(self) -> datetime.datetime:
        # Read from the database: the row a launch builds in memory has its own clock reading.
        return _datetime(self._fresh().ctime)

    @property
    def is_stored(self) -> bool:
        return self._row.pk is not None

    @property
    def _store(self) -> Backend | None:
        """The node's store, opened again if it was closed (e.g. by ``close_all_stores``)."""
        store = self._store_ref
        if store is not None and store.closed:
            store = self._store_ref = reopened(store)
        return store

    @property
    def store(self) -> Backend | None:
        """The store this node lives in (``None`` when provenance was not stored)."""
        return self._store

    # live fields -----------------------------------------------------------------------------

    def _fresh(self) -> NodeRow:
        if self._store is not None and self._row.pk is not None:
            self._row = self._store.provenance.node(self._row.pk)
        return self._row

    @property
    def process_state(self) -> ProcessState | None:
        state = self._fresh().process_state
        return ProcessState(state) if state is not None else None

    @property
    def process_status(self) -> str | None:
        return self._fresh().process_status

    @property
    def exit_status(self) -> int | None:
        return self._fresh().exit_status

    @property
    def exit_message(self) -> str | None:
        return self._fresh().exit_message

    @property
    def exception(self) -> str | None:
        """The formatted traceback of an excepted process."""
        return self._fresh().exception

    @property
    def paused(self) -> bool:
        return bool(self._fresh().paused)

    @property
    def mtime(self) -> datetime.datetime:
        return _datetime(self._fresh().mtime)

    @property
    def lease(self) -> tuple[str | None, int, float | None]:
        """``(owner, epoch, expires)`` of the lease on this process."""
        row = self._fresh()
        return row.owner, row.lease_epoch, row.lease_expires

    @property
    def is_terminated(self) -> bool:
        state = self.process_state
        return state is not None and state.is_terminal

    @property
    def is_finished(self) -> bool:
        return self.process_state is ProcessState.FINISHED

    @property
    def is_finished_ok(self) -> bool:
        row = self._fresh()
        return row.process_state == ProcessState.FINISHED.value and row.exit_status == 0

    @property
    def is_failed(self) -> bool:
        row = self._fresh()
        return row.process_state == ProcessState.FINISHED.value and row.exit_status != 0

    @property
    def is_excepted(self) -> bool:
        return self.process_state is ProcessState.EXCEPTED

    @property
    def is_killed(self) -> bool:
        return self.process_state is ProcessState.KILLED

    @property
    def is_sealed(self) -> bool:
        return self.is_terminated

    # graph -----------------------------------------------------------------------------------

    def _stored(self) -> tuple[Backend, int]:
        if self._store is None or self._row.pk is None:
            raise NotExistent(f"{self.process_label} was run with store_provenance=False")
        return self._store, self._row.pk

    @property
    def base(self) -> NodeBase:
        """``attributes`` always (a run with ``store_provenance=False`` too); ``links`` of a
        stored node."""
        return NodeBase(self._store, self._row.pk, self._process_attributes, self)

    def _process_attributes(self) -> dict[str, Any]:
        """The process fields under AiiDA's attribute names; those not set are left out."""
        row = self._fresh()
        stored = unpack_attributes(row.attributes)
        attributes: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}
        state = row.process_state
        fields = {
            "process_label": row.process_label,
            "process_state": state,
            "process_status": row.process_status,
            "exit_status": row.exit_status,
            "exit_message": row.exit_message,
            "exception": row.exception,
            "paused": bool(row.paused) or None,
            "sealed": (state is not None and ProcessState(state).is_terminal) or None,
        }
        attributes.update((key, value) for key, value in fields.items() if value is not None)
        return attributes

    @property
    def process_class(self) -> Any:
        """The process class (or process function) that ran, imported by its recorded path.

        Raises ``ValueError`` (a ``MiniengineError``) naming the path when it no longer imports.
        """
        from miniengine.runtime.workchain import NotImportableError, import_by_process_type

        try:
            return import_by_process_type(self.process_type)
        except NotImportableError:
            raise
        except MiniengineError as exc:
            raise NotImportableError(
                f"cannot load the process class of {self.process_label}<{self.pk}>: {exc}"
            ) from None

    def _linked(self, incoming: bool, link_types: Sequence[str]) -> list[tuple[str, Any]]:
        store, pk = self._stored()
        links = store.provenance.links(pk, incoming, link_types)
        nodes = load_nodes(store, [link.pk for link in links])
        return [(link.label, nodes[link.pk]) for link in links]

    @property
    def inputs(self) -> NodeLinksNamespace:
        owner = f"the inputs of {self.process_label}"
        if self._memory_inputs is not None:
            return NodeLinksNamespace.from_labels(self._memory_inputs, owner)
        return NodeLinksNamespace.from_labels(dict(self._linked(True, INPUT_LINK_TYPES)), owner)

    @property
    def outputs(self) -> NodeLinksNamespace:
        owner = f"the outputs of {self.process_label}"
        if self._memory_outputs is not None:
            return NodeLinksNamespace.from_labels(self._memory_outputs, owner)
        return NodeLinksNamespace.from_labels(dict(self._linked(False, OUTPUT_LINK_TYPES)), owner)

    @property
    def called(self) -> list[ProcessNode]:
        """Every process this one called, whatever its state, oldest first."""
        if self._store is None or self._row.pk is None:
            return []
        return [node for _, node in self._linked(False, CALL_LINK_TYPES)]

    @property
    def caller(self) -> ProcessNode | None:
        if self._store is None or self._row.pk is None:
            return None
        callers = [node for _, node in self._linked(True, CALL_LINK_TYPES)]
        return callers[0] if callers else None

    @property
    def logs(self) -> list[LogEntry]:
        if self._store is None or self._row.pk is None:
            return []
        return [
            LogEntry(log.pk, log.node_pk, _datetime(log.time), log.levelname, log.message)
            for log in self._store.provenance.logs(self._row.pk)
        ]

    def get_builder_restart(self) -> Any:
        """A builder of this process's class, filled with the inputs it was run with."""
        from miniengine.runtime.workchain import WorkChain, import_by_process_type

        cls = import_by_process_type(self.process_type)
        if not (isinstance(cls, type) and issubclass(cls, WorkChain)):
            raise MiniengineError(
                f"{self.process_label} is not a WorkChain: call the function again instead"
            )
        builder = cls.get_builder()
        builder._update(self.inputs._as_dict())
        if self.label or self.description:
            builder._update({"metadata": {"label": self.label, "description": self.description}})
        return builder

    # display ---------------------------------------------------------------------------------

    def __str__(self) -> str:
        pk = self.pk if self.pk is not None else "unstored"
        return f"uuid: {self.uuid} (pk: {pk}) ({self.process_type})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProcessNode) and other.uuid == self.uuid

    def __hash__(self) -> int:
        return hash(self.uuid)


class Node(abc.ABC):  # noqa: B024  (no abstract method: a name for isinstance, as AiiDA's)
    """Every node, Data or process: ``isinstance(node, Node)`` as with AiiDA's ``orm.Node``.

    Data and process nodes share no base class here; both are registered as virtual subclasses.
    """


Node.register(Data)
Node.register(ProcessNode)


class CalcFunctionNode(ProcessNode):
    """The node of a ``@calcfunction`` run."""


class WorkFunctionNode(ProcessNode):
    """The node of a ``@workfunction`` run."""


class WorkChainNode(ProcessNode):
    """The node of a WorkChain run."""


class CalcJobNode(ProcessNode):
    """The node of a CalcJob run: its options, job and folders are attributes (AiiDA's names)."""

    def _attribute(self, name: str, default: Any = None) -> Any:
        return self._process_attributes().get(name, default)

    def get_option(self, name: str) -> Any:
        """The value of ``metadata.options.<name>`` this job ran with (``None`` if unset)."""
        return self._attribute("options", {}).get(name)

    def get_options(self) -> dict[str, Any]:
        return dict(self._attribute("options", {}))

    @property
    def computer(self) -> Any:
        """The computer the job runs on."""
        from miniengine.runtime.computers import load_computer

        uuid = self._attribute("computer_uuid")
        if uuid is None:
            return None
        return load_computer(uuid=uuid, db=self._store)

    def get_job_id(self) -> str | None:
        return self._attribute("job_id")  # type: ignore[no-any-return]

    def get_scheduler_state(self) -> JobState | None:
        """What the scheduler last said of the job, as AiiDA's ``JobState`` (also a ``str``)."""
        from miniengine.schedulers.datastructures import JobState

        value = self._attribute("scheduler_state")
        try:
            return JobState(value) if value is not None else None
        except ValueError:
            return JobState.UNDETERMINED

    def get_state(self) -> CalcJobState | None:
        """The stage of the job (``uploading``, ``submitting``, ``withscheduler``, ...), as
        AiiDA's ``CalcJobState`` (also a ``str``)."""
        from miniengine.core.calcinfo import CalcJobState

        value = self._attribute("state")
        try:
            return CalcJobState(value) if value is not None else None
        except ValueError:
            return None

    def get_remote_workdir(self) -> str | None:
        return self._attribute("remote_workdir")  # type: ignore[no-any-return]

    def get_retrieve_list(self) -> list[Any] | None:
        return self._attribute("retrieve_list")  # type: ignore[no-any-return]

    def get_retrieve_temporary_list(self) -> list[Any] | None:
        return self._attribute("retrieve_temporary_list")  # type: ignore[no-any-return]

    def get_program_exit_statuses(self) -> dict[int, int] | None:
        """Each program's exit status, as the submit script recorded it (once retrieved)."""
        statuses = self._attribute("program_exit_statuses")
        return {int(k): int(v) for k, v in statuses.items()} if statuses is not None else None

    @property
    def dry_run_info(self) -> dict[str, Any] | None:
        """For a dry run: ``{'folder': ..., 'script_filename': ...}``."""
        return self._attribute("dry_run_info")  # type: ignore[no-any-return]

    @property
    def base(self) -> Any:
        """``attributes``, ``links`` and ``repository``: the input files as submitted."""
        return _CalcJobNodeBase(super().base, self)

    def get_parser_class(self) -> Any:
        """The Parser class named by the ``parser_name`` option, or ``None``."""
        name = self.get_option("parser_name")
        if name is None:
            return None
        from miniengine.runtime.calcjob.parser import load_parser_class

        return load_parser_class(name)


class _CalcJobNodeBase:
    """``node.base`` of a CalcJobNode: that of any process node, with ``repository``."""

    def __init__(self, base: NodeBase, node: CalcJobNode) -> None:
        self._base = base
        self._node = node

    @property
    def attributes(self) -> NodeAttributes:
        return self._base.attributes

    @property
    def links(self) -> NodeLinks:
        return self._base.links

    @property
    def extras(self) -> NodeExtras:
        return self._base.extras

    @property
    def comments(self) -> NodeComments:
        return self._base.comments

    @property
    def caching(self) -> NodeCaching:
        return self._base.caching

    @property
    def repository(self) -> Any:
        from miniengine.runtime.calcjob.files import node_repository
        from miniengine.runtime.context import current_store

        store = self._node._store or current_store()
        tree = self._node._attribute("_repository", {})
        return node_repository(store.provenance.repository(), dict(tree))


NODE_CLASSES: dict[str, type[ProcessNode]] = {
    "process.calcjob": CalcJobNode,
    "process.calcfunction": CalcFunctionNode,
    "process.workfunction": WorkFunctionNode,
    "process.workchain": WorkChainNode,
}


def node_from_row(store: Backend, row: NodeRow) -> Any:
    """Build the Data or ProcessNode object for a row."""
    node_type = row.node_type
    if node_type.startswith("process."):
        return NODE_CLASSES.get(node_type, ProcessNode)(store, row)
    if node_type not in data_module.DATA_TYPES:
        import miniengine.runtime.registry  # noqa: F401  (miniengine's Data types above the core)
    return load_data_from_attributes(
        node_type,
        unpack_attributes(row.attributes),
        row.pk,
        row.uuid,
        row.label,
        row.description,
        store,
    )


def load_nodes(store: Backend, pks: Sequence[int]) -> dict[int, Any]:
    """The nodes of ``pks`` (each once), by pk, in one query; none for no pks."""
    if not pks:
        return {}
    found = store.provenance.nodes(list(dict.fromkeys(pks)))
    return {pk: node_from_row(store, row) for pk, row in found.items()}


#: Rows of Data nodes read already for the checkpoints about to be decoded (a daemon worker
#: reads those of all the processes of a claim in one query); see :func:`rows_read_ahead`.
_read_ahead: contextvars.ContextVar[Mapping[int, NodeRow] | None] = contextvars.ContextVar(
    "miniengine_rows_read_ahead", default=None
)


@contextlib.contextmanager
def rows_read_ahead(rows: Mapping[int, NodeRow] | None) -> Iterator[None]:
    """Within the block, checkpoints decoded in this context take the Data nodes they name
    from ``rows`` (by pk) instead of reading them: a stored Data node's content never changes
    (its label or description may, and a row read a moment before the decode is as current
    as one read by it).  Process nodes are read by the decode, since their state moves on.
    Each decode still builds node objects of its own."""
    token = _read_ahead.set(rows)
    try:
        yield
    finally:
        _read_ahead.reset(token)


def blob_resolver(store: Backend, blob: bytes) -> Callable[[int], Any]:
    """The ``resolve_pk`` for decoding checkpoint ``blob``: the stored nodes it names are loaded
    from ``store`` in one query first (on a database server, one round trip instead of one per
    node), or taken from :func:`rows_read_ahead`, and each pk then resolves to its node."""
    pks = codec.stored_pks(blob)
    named: dict[int, Any] = {}
    ahead = _read_ahead.get()
    if ahead:
        for pk in pks:
            row = ahead.get(pk)
            if row is not None and not row.node_type.startswith("process."):
                named[pk] = node_from_row(store, row)
    named.update(load_nodes(store, [pk for pk in pks if pk not in named]))

    def resolve(pk: int) -> Any:
        node = named.get(pk)
        return node if node is not None else load_nodes(store, [pk])[pk]

    return resolve


class LoadNodeArgumentError(MiniengineError, ValueError):
    """``load_node`` was given no identifier, or more than one (AiiDA raises ``ValueError``)."""


class LoadNodeTypeError(MiniengineError, TypeError):
    """``load_node`` was given an identifier of the wrong type (AiiDA raises ``TypeError``)."""


def load_node(
    identifier: int | str | None = None,
    *,
    pk: int | None = None,
    uuid: str | None = None,
    db: Any = None,
) -> Any:
    """Load a node (Data or process) from ``db`` (default: ``$MINIENGINE_DB``), as AiiDA's
    ``load_node``: by ``identifier`` (a pk, or a uuid or unique prefix of one), ``pk=`` or
    ``uuid=``.

    A string of digits is a pk, and a uuid prefix when no node has that pk (uuids begin with
    digits for decades).  A prefix may also be one of the random part of the uuid (from its
    third group on), since nodes created in the same millisecond share the first two.  Raises
    ``NotExistent`` when nothing matches and ``MultipleObjectsError`` when several nodes do.
    """
    from miniengine.runtime.context import store_for

    *first, last = node_lookups("load_node", identifier, pk, uuid)
    store = store_for(db)
    for candidate in first:
        try:
            return node_from_row(store, store.provenance.node(candidate))
        except NotExistent:
            pass  # no such pk: a uuid prefix, perhaps
    try:
        return node_from_row(store, store.provenance.node(last))
    except NotExistent as exc:
        raise neither_pk_nor_uuid(first, last) or exc from None


def neither_pk_nor_uuid(first: Sequence[int | str], last: int | str) -> NotExistent | None:
    """The error for a string of digits that is neither a pk nor a uuid prefix: it names the
    pk first (``no node with the pk 10``), as that is what the user most likely meant."""
    if not first:
        return None
    return NotExistent(f"no node with the pk {first[0]} (nor a uuid starting with {last!r})")


def node_lookups(
    caller: str, identifier: int | str | None, pk: int | None, uuid: str | None
) -> list[int | str]:
    """What ``load_node`` (or its awaitable twin, named by ``caller``) looks up, in order: the
    first that exists is the node (a string of digits is a pk, else a uuid prefix).  Raises
    for missing, extra or mistyped arguments."""
    given = [value is not None for value in (identifier, pk, uuid)].count(True)
    if given != 1:
        raise LoadNodeArgumentError(
            f"{caller}() needs exactly one of identifier, pk= and uuid=, "
            f"{'none was' if given == 0 else f'{given} were'} given"
        )
    if pk is not None and (isinstance(pk, bool) or not isinstance(pk, int)):
        raise LoadNodeTypeError(f"{caller}(pk=...) needs an int, not {pk!r}")
    if uuid is not None and not isinstance(uuid, str):
        raise LoadNodeTypeError(f"{caller}(uuid=...) needs a str, not {uuid!r}")
    if identifier is not None and (
        isinstance(identifier, bool) or not isinstance(identifier, int | str)
    ):
        raise LoadNodeTypeError(f"{caller} needs a pk (int) or a uuid (str), not {identifier!r}")
    if pk is not None:
        return [pk]
    if uuid is not None:
        return [uuid]
    assert identifier is not None
    if isinstance(identifier, str) and identifier.strip().isdecimal():
        return [int(identifier), identifier.strip()]
    return [identifier]


class _Backend:
    """Stores Data for ``Data.store()``: in the running process's store, else the default."""

    def store_data(self, data: Data) -> None:
        from miniengine.runtime.context import current_store

        store = current_store()
        pk = store.provenance.store_data(data)
        data._set_stored(pk, data.uuid, store)
        flush_pending_extras(data, store, pk)  # extras set before it was stored, if any

    def update_label(self, data: Data, label: str, description: str) -> None:
        from miniengine.runtime.context import current_store

        assert data.pk is not None
        store: Backend = data._store or current_store()
        store.provenance.update_label(data.pk, label, description)

    def node_times(self, data: Data) -> tuple[datetime.datetime, datetime.datetime]:
        from miniengine.runtime.context import current_store

        assert data.pk is not None
        store: Backend = data._store or current_store()
        if store.closed:
            store = reopened(store)
        row = store.provenance.node(data.pk)
        return _datetime(row.ctime), _datetime(row.mtime)

    def node_base(self, data: Data) -> NodeBase:
        from miniengine.runtime.context import current_store

        if data.pk is None:
            return NodeBase(None, None, data._attributes_view, data)
        return NodeBase(data._store or current_store(), data.pk, data._attributes_view, data)


data_module.set_backend(_Backend())


# process nodes in checkpoints ----------------------------------------------------------------

#: How a process node in a checkpoint being decoded is loaded (set around a decode that resolves
#: stored nodes); without it the node comes back as a :class:`~miniengine.core.codec.NodeRef`.
node_resolver: contextvars.ContextVar[Callable[[int], Any] | None] = contextvars.ContextVar(
    "miniengine_node_resolver", default=None
)


def _load_process_node(pk: int) -> Any:
    resolve = node_resolver.get()
    if resolve is None:
        return codec.NodeRef(pk)
    return resolve(pk)


for _tag, _cls in enumerate((ProcessNode, CalcFunctionNode, WorkFunctionNode, WorkChainNode)):
    codec.register_engine_type(_cls, 16 + _tag, lambda node: node.pk, _load_process_node)
codec.register_engine_type(CalcJobNode, 20, lambda node: node.pk, _load_process_node)
