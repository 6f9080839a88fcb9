"""The caching concern: a process launched with caching enabled either starts, or is completed
at once as a copy of an earlier process with the same hash (AiiDA's caching).

The lookup and the copy are one transaction with the start of the new process, so a cache hit
costs what a start costs, and a process that finished between the lookup and the copy cannot
be half reused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

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


class Caching(Protocol):
    """Process hashes, and reusing a finished process with the same hash."""

    @property
    def begin_cached(self) -> Transaction[[NewProcess, str], CachedBegin]:
        """Create and start a process like ``provenance.begin_process``, recording its hash;
        when a process of the same type with that hash finished OK and is a valid cache, finish
        the new one in the same transaction as its copy: each output the source created is
        cloned (a new node with the same content) and linked under the same label."""
        ...

    @property
    def copy_cached(self) -> Transaction[[NewProcess, str], CachedBegin | None]:
        """Create the process finished as a copy of a valid source with this hash, as
        :attr:`begin_cached` on a hit; ``None`` (and nothing written) when there is none."""
        ...

    @property
    def create_calcjob_hashed(
        self,
    ) -> Transaction[
        [NewProcess, str, Callable[[list[int]], bytes], bool, MemoKey | None, str],
        tuple[int, list[int]],
    ]:
        """``calcjobs.create_calcjob`` that also records the new CalcJob's hash (the last
        argument), in the same transaction."""
        ...

    def node_hash(self, pk: int) -> str | None:
        """The hash stored on process ``pk`` (``None`` when it ran without caching)."""
        ...

    def cache_source(self, process_type: str, node_hash: str) -> str | None:
        """The uuid of the process a new one of this type and hash would be copied from."""
        ...
