"""The caching concern: a process launched with caching enabled either starts, or is completed
at once as a copy of an earlier process with the same hash (AiiDA's caching).

The lookup and the copy are one transaction with the start of the new process, so a cache hit
costs what a start costs, and a process that finished between the lookup and the copy cannot
be half reused.  Every cachable process carries its hash from its creation
(``NewProcess.node_hash``), whether or not it was looked up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from miniengine.storage.interfaces.checkpoints import MemoKey
from miniengine.storage.interfaces.provenance import NewProcess, NodeRow
from miniengine.storage.interfaces.transaction import Transaction

__all__ = ["CACHED_FROM_EXTRA", "VALID_CACHE_EXTRA", "CachedBegin", "Caching"]

#: the extra naming the uuid of the process a cached process was copied from
CACHED_FROM_EXTRA = "_miniengine_cached_from"
#: the extra that, ``false``, keeps a process from ever being a cache source
VALID_CACHE_EXTRA = "_miniengine_valid_cache"


class CachedBegin(NamedTuple):
    """What :attr:`Caching.begin_cached` did: the new process, its inputs, and its source."""

    pk: int
    input_pks: list[int]
    #: the uuid of the process it was copied from (it is then finished, with copies of the
    #: source's created outputs), ``None`` when it was started to run
    source_uuid: str | None
    #: on a copy, the new process's row and (label, row) of each output, as they committed
    #: (so that the caller needs no read to return them)
    row: NodeRow | None = None
    outputs: Sequence[tuple[str, NodeRow]] = ()
    #: with a memo key, as :class:`~miniengine.storage.interfaces.checkpoints.BeginOutcome`:
    #: ``"new"``; ``"finished"`` or ``"created"`` when a replayed step had made this call
    #: already (``pk`` is that call's; nothing was looked up or written)
    outcome: str = "new"


class Caching(Protocol):
    """Process hashes, reusing a finished process with the same hash, and the database's
    settings (where daemon workers read whether caching is enabled)."""

    @property
    def begin_cached(self) -> Transaction[[NewProcess, MemoKey | None], CachedBegin]:
        """Create and start a process like ``provenance.begin_process`` (or, with a memo key,
        ``provenance.begin_memoised``), with its hash ``new.node_hash``; when a process of the
        same type with that hash finished OK and is a valid cache, finish the new one in the
        same transaction as its copy: each output the source created is cloned (a new node
        with the same content) and linked under the same label."""
        ...

    @property
    def create_calcjob_cached(
        self,
    ) -> Transaction[
        [NewProcess, str, Callable[[list[int]], bytes], bool, MemoKey | None], CachedBegin
    ]:
        """``calcjobs.create_calcjob(new, computer uuid, checkpoint, enqueue, memo)``, or, when
        a valid source with the hash ``new.node_hash`` exists, the new CalcJob created finished
        as its copy (as :attr:`begin_cached`): no checkpoint, no task, its program never runs."""
        ...

    def node_hash(self, pk: int) -> str | None:
        """The hash stored on process ``pk`` (``None`` when it has none)."""
        ...

    def cache_source(self, process_type: str, node_hash: str) -> str | None:
        """The uuid of the process a new one of this type and hash would be copied from."""
        ...

    def settings(self, names: Sequence[str]) -> dict[str, Any]:
        """The values of the database settings ``names`` that are set (JSON values)."""
        ...

    @property
    def set_settings(self) -> Transaction[[Mapping[str, Any]], None]:
        """Set database settings by name (a JSON-encodable value; ``None`` removes one)."""
        ...
