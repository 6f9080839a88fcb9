"""Caching: a calcfunction or CalcJob is not run again when an equal one finished OK before.

Equal means the same process type, the same cache version and inputs of equal content: the
three go into the process's hash (:func:`process_hash`).  When caching is enabled for a class,
its launch looks the hash up in the same transaction that creates the node; on a hit the new
node is finished at once as a copy of the source -- linked to its own inputs, with a clone of
each output the source created under the same label, the source's uuid in the extra
``_miniengine_cached_from`` -- and its body (or program) never runs.

Caching is off by default.  It is enabled, per class or for all, by

- the environment variable ``MINIENGINE_CACHING``: ``1``/``true``/``all`` enables it for every
  class, otherwise it is a comma-separated list of identifiers (a process type such as
  ``mypkg.calcs.add``, ``*`` wildcards allowed); one prefixed with ``!`` is disabled.  It is
  read at every launch, so a daemon started with it set caches in all its workers;
- :func:`enable_caching` and :func:`disable_caching`, context managers that override it in
  this interpreter (the innermost one that matches wins).

A process is never a source when it did not finish with exit status 0, when its
``node.base.caching.is_valid_cache`` was set ``False``, or when its class is not cachable
(``_cachable = False``, as AiiDA's workflows).  Bump a class's ``_CACHE_VERSION`` when a
change makes earlier results invalid.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from miniengine.core.data import Data
from miniengine.exceptions import NotExistent
from miniengine.storage.interfaces.caching import (
    CACHED_FROM_EXTRA,
    VALID_CACHE_EXTRA,
    CachedBegin,
)

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "HASH_FORMAT",
    "NodeCaching",
    "data_hash",
    "disable_caching",
    "enable_caching",
    "get_use_cache",
    "process_hash",
]

#: the environment variable that enables caching (see the module's documentation)
ENVIRONMENT_VARIABLE = "MINIENGINE_CACHING"
#: bumped if what goes into a hash changes, so that old hashes never match new ones
HASH_FORMAT = 1

#: (identifier pattern or None for all, enabled), innermost context manager last
_overrides: list[tuple[str | None, bool]] = []


def _matches(pattern: str, identifier: str) -> bool:
    return pattern == identifier or fnmatch.fnmatchcase(identifier, pattern)


def _from_environment(identifier: str) -> bool:
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not value or value.lower() in ("0", "false", "no", "off", "none"):
        return False
    if value.lower() in ("1", "true", "yes", "on", "all"):
        return True
    enabled = False
    for item in (part.strip() for part in value.split(",")):
        if item.startswith("!") and _matches(item[1:], identifier):
            return False  # a disabled identifier wins over any enabled one
        if item and not item.startswith("!") and _matches(item, identifier):
            enabled = True
    return enabled


def get_use_cache(*, identifier: str | None = None) -> bool:
    """Whether a process of type ``identifier`` is looked up in the cache when launched."""
    for pattern, enabled in reversed(_overrides):
        if pattern is None or (identifier is not None and _matches(pattern, identifier)):
            return enabled
    if identifier is None:
        return _from_environment("")
    return _from_environment(identifier)


@contextlib.contextmanager
def _override(identifier: str | None, enabled: bool) -> Iterator[None]:
    entry = (identifier, enabled)
    _overrides.append(entry)
    try:
        yield
    finally:
        _overrides.remove(entry)


def enable_caching(*, identifier: str | None = None) -> contextlib.AbstractContextManager[None]:
    """Enable caching in this block, for every class or for those matching ``identifier``
    (a process type such as ``mypkg.calcs.add``; ``*`` wildcards allowed)."""
    return _override(identifier, True)


def disable_caching(*, identifier: str | None = None) -> contextlib.AbstractContextManager[None]:
    """Disable caching in this block, for every class or for those matching ``identifier``."""
    return _override(identifier, False)


def _canonical(value: Any) -> Any:
    """``value`` with its mappings' keys sorted and tuples as lists (msgpack of it is stable)."""
    if isinstance(value, Mapping):
        return [[key, _canonical(value[key])] for key in sorted(value, key=repr)]
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def _digest(value: Any) -> str:
    packed = msgpack.packb(_canonical(value), use_bin_type=True)
    return hashlib.sha256(packed).hexdigest()


def data_hash(data: Data) -> str:
    """The content hash of a Data node: its type and its attributes (for file data these hold
    the sha256 of each file's content); not its uuid, pk, label or description."""
    return _digest([HASH_FORMAT, data.type_name, data._to_attributes()])


def process_hash(process_type: str, version: Any, inputs: Sequence[tuple[str, Data]]) -> str:
    """The hash of a process: its type, its cache version and the content hash of each input,
    by link label."""
    hashes = sorted((label, data_hash(data)) for label, data in inputs)
    return _digest([HASH_FORMAT, process_type, version, hashes])


#: the options of a CalcJob that say where and how long it queues, not what it computes (as
#: AiiDA's ``CalcJobNode._hash_ignored_attributes``): left out of its hash
IGNORED_OPTIONS = frozenset(
    {"queue_name", "account", "qos", "priority", "max_wallclock_seconds", "max_memory_kb"}
)


def launch_hash(cls: Any, process_type: str, inputs: Sequence[tuple[str, Data]]) -> str | None:
    """The hash of a process of class ``cls`` being launched, ``None`` when caching is not
    enabled for it or it is not cachable (``_cachable = False``)."""
    if not getattr(cls, "_cachable", True) or not get_use_cache(identifier=process_type):
        return None
    return process_hash(process_type, getattr(cls, "_CACHE_VERSION", None), inputs)


def calcjob_hash(
    cls: Any, process_type: str, inputs: Sequence[tuple[str, Data]], options: Mapping[str, Any]
) -> str | None:
    """:func:`launch_hash` of a CalcJob: its options (but :data:`IGNORED_OPTIONS`) count as
    part of its version."""
    if not getattr(cls, "_cachable", True) or not get_use_cache(identifier=process_type):
        return None
    kept = {key: value for key, value in options.items() if key not in IGNORED_OPTIONS}
    return process_hash(process_type, [getattr(cls, "_CACHE_VERSION", None), kept], inputs)


def copied_node(store: Backend, node_class: Any, begun: CachedBegin) -> tuple[Any, dict[str, Any]]:
    """The node of a process created as a copy, and its outputs (nested by namespace), from
    the rows its transaction returned."""
    from miniengine.runtime.nodes import NodeLinksNamespace, node_from_row

    assert begun.row is not None
    node = node_class(store, begun.row)
    flat = {label: node_from_row(store, row) for label, row in begun.outputs}
    outputs = NodeLinksNamespace.from_labels(flat, f"the outputs of {node.process_label}")
    return node, outputs._as_dict()


class NodeCaching:
    """``node.base.caching``: the hash of a node, where it was copied from, whether it may be
    reused (AiiDA's ``NodeCaching``)."""

    def __init__(self, node: Any, store: Backend | None, pk: int | None) -> None:
        self._node = node
        self._store = store
        self._pk = pk

    def _stored(self) -> tuple[Backend, int]:
        if self._store is None or self._pk is None:
            raise NotExistent("an unstored node has no caching information")
        return self._store, self._pk

    def get_hash(self) -> str | None:
        """The hash: a Data node's content hash; a process's hash as stored when it was
        launched with caching enabled (``None`` when it was not)."""
        if isinstance(self._node, Data):
            return data_hash(self._node)
        store, pk = self._stored()
        return store.caching.node_hash(pk)

    def get_cache_source(self) -> str | None:
        """The uuid of the process this one was copied from, ``None`` when it ran itself."""
        store, pk = self._stored()
        source = store.groups.extras(pk).get(CACHED_FROM_EXTRA)
        return None if source is None else str(source)

    @property
    def is_created_from_cache(self) -> bool:
        return self.get_cache_source() is not None

    @property
    def is_valid_cache(self) -> bool:
        """Whether this process may be a cache source (it must also have finished OK)."""
        store, pk = self._stored()
        return store.groups.extras(pk).get(VALID_CACHE_EXTRA, True) is not False

    @is_valid_cache.setter
    def is_valid_cache(self, valid: bool) -> None:
        store, pk = self._stored()
        if valid:
            store.groups.delete_extras(pk, [VALID_CACHE_EXTRA])
        else:
            store.groups.set_extras(pk, {VALID_CACHE_EXTRA: False})
