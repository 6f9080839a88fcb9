"""The provenance concern of a backend: nodes, links, logs and the data they hold.

Records here are what every backend returns.  A node's row is a :class:`NodeRow`, a named tuple
so that code still indexing it by position keeps working while it moves to names.  A node's
attributes travel msgpack-encoded (:func:`pack_attributes`), the same bytes on every backend, so
a row is decoded only where its attributes are wanted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import msgpack

from miniengine.exceptions import MultipleObjectsError

if TYPE_CHECKING:
    from miniengine.core.data import Data
    from miniengine.storage.interfaces.checkpoints import BeginOutcome
    from miniengine.storage.interfaces.transaction import Transaction
    from miniengine.storage.repository import Repository

__all__ = [
    "AMBIGUOUS_SHOWN",
    "CallMemo",
    "FinishProcess",
    "LinkRow",
    "LogEntry",
    "LogRow",
    "NewProcess",
    "NodeRow",
    "Provenance",
    "ambiguous_prefix",
    "pack_attributes",
    "unpack_attributes",
]


def pack_attributes(value: Any) -> bytes:
    """The stored form of a node's attributes (msgpack, binary strings kept binary)."""
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack_attributes(blob: bytes | None) -> Any:
    """The attributes of a :class:`NodeRow` (``None`` for a node without any)."""
    if blob is None:
        return None
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


class NodeRow(NamedTuple):
    """One node as stored: a Data node has only identity, label and attributes filled; a process
    node has its process fields, and while it runs the lease (owner, epoch, expiry) of the OS
    process running it.  Times are seconds since the epoch."""

    pk: int
    uuid: str
    node_type: str
    process_type: str | None
    process_label: str | None
    process_state: str | None
    process_status: str | None
    exit_status: int | None
    exit_message: str | None
    exception: str | None
    paused: int
    label: str
    description: str
    attributes: bytes | None  # msgpack, see unpack_attributes
    owner: str | None
    lease_epoch: int
    lease_expires: float | None
    ctime: float
    mtime: float


class LinkRow(NamedTuple):
    """A link seen from one node: the node at the other end, the link type and its label."""

    pk: int  # of the node at the other end
    link_type: str
    label: str


class LogRow(NamedTuple):
    """One log line of a node (``time`` in seconds since the epoch)."""

    pk: int
    node_pk: int
    time: float
    levelname: str
    message: str


#: A log line to write: ``(levelname, message)``, or ``(levelname, message, time)`` when it was
#: made earlier than the commit that writes it (a report keeps the time ``self.report()`` was
#: called).
LogEntry = tuple[str, str] | tuple[str, str, float]


class CallMemo(NamedTuple):
    """Which call of which step of a parent a child process is, to create it once only when the
    step is replayed after a crash."""

    parent_pk: int
    seq: int  # the parent's step sequence number
    call_index: int  # the call's position among that step's calls
    fingerprint: str  # of the process and its inputs


@dataclass
class NewProcess:
    """Everything one transaction needs to create a process node and start it."""

    uuid: str
    node_type: str
    process_type: str
    process_label: str
    process_state: str
    label: str
    description: str
    inputs: Sequence[tuple[str, Data]]
    input_link_type: str
    owner: str | None
    lease_expires: float | None
    parent: tuple[int, str, int] | None = None  # (pk, owner, epoch) of the calling process
    call_link_type: str = ""
    call_link_label: str = "CALL"
    attributes: dict[str, Any] = field(default_factory=dict)
    submitted: bool = False  # run by the daemon (its recovery re-queues it instead of failing it)
    node_hash: str | None = None  # a cachable process's hash (miniengine.runtime.caching)


@dataclass
class FinishProcess:
    """A process's terminal write: state, exit status, new and returned outputs, a log line."""

    pk: int
    owner: str
    epoch: int
    process_state: str
    exit_status: int | None = None
    exit_message: str | None = None
    exception: str | None = None
    process_status: str | None = None
    outputs: Sequence[tuple[str, Data, str]] = ()  # (link label, data, link type)
    log: tuple[str, str] | None = None  # (levelname, message)
    logs: Sequence[LogEntry] = ()  # more log lines, written before ``log``
    task_pk: int | None = None  # the daemon task that ran it, acknowledged in the same commit
    #: False for process functions: they never have a checkpoint or a waiting parent
    resumable: bool = True
    #: kill every descendant that has not terminated, with this message (a failed WorkChain)
    cascade: str | None = None


#: how many matches of an ambiguous uuid prefix an error message lists
AMBIGUOUS_SHOWN = 5


def ambiguous_prefix(text: str, pks: Sequence[int]) -> MultipleObjectsError:
    """The error for a uuid prefix that matches several nodes, listing a few of their pks."""
    shown = ", ".join(map(str, pks[:AMBIGUOUS_SHOWN]))
    more = ", ..." if len(pks) > AMBIGUOUS_SHOWN else ""
    return MultipleObjectsError(
        f"the uuid prefix {text!r} matches more than one node (pks {shown}{more}): "
        "give more of the uuid, or the pk"
    )


class Provenance(Protocol):
    """The provenance graph: create and end processes, store data, read nodes, links and logs.

    Writes made for a running process are fenced by its lease: they raise
    :class:`~miniengine.exceptions.LeaseLostError` (and change nothing) once another OS process
    has taken it over.
    """

    # reads -------------------------------------------------------------------------------------

    def node(self, identifier: int | str) -> NodeRow:
        """A node by pk, or by uuid or a unique prefix of it (with or without dashes, or of the
        part after the uuid's timestamp).

        Raises :class:`~miniengine.exceptions.NotExistent` when nothing matches and
        :class:`~miniengine.exceptions.MultipleObjectsError` when a prefix matches several
        nodes, as AiiDA's ``load_node`` does."""
        ...

    def nodes(self, pks: Sequence[int]) -> dict[int, NodeRow]:
        """The rows of the nodes in ``pks`` by pk, in one query; a missing pk is left out."""
        ...

    def uuid_matches(self, text: str) -> list[int]:
        """The pks (at most ``AMBIGUOUS_SHOWN + 1``, oldest first) of the nodes whose uuid, or
        the part of it after the timestamp, starts with ``text``; none for text that is not
        hex digits and dashes."""
        ...

    def links(
        self, pk: int, incoming: bool, link_types: Sequence[str] | None = None
    ) -> list[LinkRow]:
        """The links into (``incoming``) or out of node ``pk``, oldest first, optionally only
        those of ``link_types``."""
        ...

    def logs(self, pk: int) -> list[LogRow]:
        """The log lines of node ``pk``, oldest first."""
        ...

    def process_rows(
        self, states: Sequence[str] | None, process_label: str | None, limit: int | None
    ) -> list[NodeRow]:
        """Process nodes, newest first, optionally only those in ``states`` or of one label."""
        ...

    def repository(self) -> Repository:
        """The content-addressed folder that holds the file contents of this database's nodes
        (beside a sqlite file; recorded in the database on PostgreSQL)."""
        ...

    def referenced_object_keys(self) -> set[str]:
        """Every repository object key that a node's attributes or a checkpoint names (what
        repository maintenance must keep); may include a few that are not keys."""
        ...

    # writes ------------------------------------------------------------------------------------

    @property
    def store_data(self) -> Transaction[[Data], int]:
        """Store one unstored Data node; return its pk (the caller marks the object stored).

        Storing again a node with the same uuid, type and content returns the existing pk (a
        replayed step storing what its cut-off attempt stored); other content under that uuid
        raises an integrity error."""
        ...

    @property
    def begin_process(self) -> Transaction[[NewProcess], tuple[int, list[int]]]:
        """Create a process node with its (new) inputs and links, and its call link when it has
        a parent (fenced by the parent's lease); return its pk and the input pks."""
        ...

    @property
    def begin_memoised(
        self,
    ) -> Transaction[[NewProcess, CallMemo], BeginOutcome]:
        """:attr:`begin_process` for a call made by a step, unless a replay of that step already
        made it: returns ``(pk, input pks, outcome)``, outcome ``"new"``, or ``"finished"`` (reuse
        that child's outputs, run nothing) or ``"created"`` (a submitted child never started).
        A child of the cut-off attempt that did not finish is excepted ("owner lost")."""
        ...

    @property
    def finish_process(self) -> Transaction[[FinishProcess], list[int]]:
        """Terminate a process (fenced by its lease): state, outputs and links, log lines, its
        checkpoint removed and waiting parents woken, its daemon task acknowledged, and its
        unterminated calls killed when asked; return the output pks."""
        ...

    @property
    def add_log(self) -> Transaction[[int, str, str], None]:
        """Add one log line ``(node pk, levelname, message)``, dated now."""
        ...

    @property
    def add_logs(self) -> Transaction[[int, Sequence[LogEntry]], None]:
        """Add log lines to a node (an entry without a time is dated now)."""
        ...

    @property
    def update_label(self) -> Transaction[[int, str, str], None]:
        """Set a stored node's ``(pk, label, description)``: the two fields a stored node may
        still change."""
        ...
