"""Caching: a calcfunction or CalcJob is not run again when an equal one finished OK before.

Equal means the same process type, the same cache version and inputs of equal content: the
three go into the process's hash (:func:`process_hash`), stored on the process when it is
created.  A process launched with caching off stores it only when the database's setting
``caching.store_all_hashes`` is on (then it is a source once caching is turned on; the hash and
its index entry cost about a tenth of a calcfunction's launch, so it is off by default).  When
caching is enabled for a class, its launch -- ``run``, ``submit``, a
call or ``self.submit`` in a WorkChain step, in a script or in a daemon worker -- looks the hash
up in the same transaction that creates the node; on a hit the new node is finished at once as
a copy of the source -- linked to its own inputs, with a clone of each output the source created
under the same label, the source's uuid in the extra ``_miniengine_cached_from`` -- and its
body (or program) never runs.

Caching is off by default.  It is enabled, per class or for all, by (first match wins)

- :func:`enable_caching` and :func:`disable_caching`, context managers that override the rest in
  this interpreter (the innermost one that matches wins);
- the environment variable ``MINIENGINE_CACHING``: ``1``/``true``/``all`` enables it for every
  class, ``0``/``false``/``none`` disables it, otherwise it is a comma-separated list of
  identifiers (a process type such as ``mypkg.calcs.add``, ``*`` wildcards allowed); one
  prefixed with ``!`` is disabled.  When set, it replaces the database's setting;
- the database's settings ``caching.default_enabled``, ``caching.enabled_for`` and
  ``caching.disabled_for`` (AiiDA's option names), written by :func:`set_caching_config` or
  ``miniengine caching set``.  They live in the database, so every program and every daemon
  worker that opens it sees them (a running process reads them again after
  :data:`CONFIG_REFRESH` seconds).

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
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from miniengine.core.data import Data
from miniengine.exceptions import NotExistent, ValidationError
from miniengine.storage.interfaces.caching import (
    CACHED_FROM_EXTRA,
    VALID_CACHE_EXTRA,
    CachedBegin,
)

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = [
    "CONFIG_REFRESH",
    "ENVIRONMENT_VARIABLE",
    "HASH_FORMAT",
    "CachingConfig",
    "LaunchHash",
    "NodeCaching",
    "data_hash",
    "disable_caching",
    "enable_caching",
    "get_caching_config",
    "get_use_cache",
    "process_hash",
    "set_caching_config",
]

#: the environment variable that enables caching (see the module's documentation)
ENVIRONMENT_VARIABLE = "MINIENGINE_CACHING"
#: bumped if what goes into a hash changes, so that old hashes never match new ones
HASH_FORMAT = 2
#: seconds after which a running program reads the database's caching settings again
CONFIG_REFRESH = 2.0

#: the names of the database settings (AiiDA's configuration options)
DEFAULT_ENABLED = "caching.default_enabled"
ENABLED_FOR = "caching.enabled_for"
DISABLED_FOR = "caching.disabled_for"
STORE_ALL_HASHES = "caching.store_all_hashes"
SETTINGS = (DEFAULT_ENABLED, ENABLED_FOR, DISABLED_FOR, STORE_ALL_HASHES)

#: (identifier pattern or None for all, enabled), innermost context manager last
_overrides: list[tuple[str | None, bool]] = []


def _matches(pattern: str, identifier: str) -> bool:
    return pattern == identifier or fnmatch.fnmatchcase(identifier, pattern)


class CachingConfig(NamedTuple):
    """The database's caching settings: the default, and the identifiers enabled and disabled
    (a disabled identifier wins over an enabled one, which wins over the default); and whether
    a process launched with caching off stores its hash all the same (so that it is a source
    once caching is turned on; it costs a hash and an index entry per process)."""

    default_enabled: bool = False
    enabled_for: tuple[str, ...] = ()
    disabled_for: tuple[str, ...] = ()
    store_all_hashes: bool = False

    def use_cache(self, identifier: str) -> bool:
        if any(_matches(pattern, identifier) for pattern in self.disabled_for):
            return False
        if any(_matches(pattern, identifier) for pattern in self.enabled_for):
            return True
        return self.default_enabled

    @property
    def is_off(self) -> bool:
        """Nothing is enabled (the common case: no lookup at all)."""
        return not self.default_enabled and not self.enabled_for


_OFF = CachingConfig()


def _from_environment(value: str, identifier: str) -> bool:
    if value.lower() in ("0", "false", "no", "off", "none"):
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


#: open backend -> (monotonic time to read again, its config); a backend closed and opened again
#: (or a database made anew at the same place) reads its settings afresh
_configs: weakref.WeakKeyDictionary[Any, tuple[float, CachingConfig]] = weakref.WeakKeyDictionary()
_configs_lock = threading.Lock()


def _config_of(store: Backend) -> CachingConfig:
    """The caching settings of the database, read at most every :data:`CONFIG_REFRESH`
    seconds (a launch costs no read)."""
    global _off
    now = time.monotonic()
    cached = _configs.get(store)
    if cached is not None and cached[0] > now:
        until, config = cached
    else:
        until, config = now + CONFIG_REFRESH, _parse(store.caching.settings(SETTINGS))
        with _configs_lock:
            _configs[store] = (until, config)
    if config.is_off and not config.store_all_hashes:
        _off = (weakref.ref(store), until)
    return config


def _nothing() -> None:
    return None


#: the open backend whose settings were last found all off (no lookup, no hash stored), weakly,
#: and the monotonic time until which that reading holds: what :func:`off_for` checks
_off: tuple[Callable[[], Any], float] = (_nothing, 0.0)

#: where CPython keeps the environment (``os.environ.get`` costs three Python calls,
#: each launch asks, and a script or a test may set the variable at any moment), and the
#: variable's key in it; ``None`` where the environment is kept otherwise
_environ: dict[Any, Any] | None = getattr(os.environ, "_data", None)
if type(_environ) is not dict:  # pragma: no cover - not CPython's os.environ
    _environ = None
_ENVIRON_KEY: Any = os.environ.encodekey(ENVIRONMENT_VARIABLE) if _environ is not None else None


def off_for(store: Backend) -> bool:
    """Whether a launch in ``store`` can skip caching altogether (no lookup, no hash): no
    :func:`enable_caching`/:func:`disable_caching` block is open, ``MINIENGINE_CACHING`` is
    not set, and the database's settings, read less than :data:`CONFIG_REFRESH` seconds ago,
    enable nothing and do not store every hash.  Caching is off by default, so this is what
    nearly every launch pays; ``False`` means "ask :func:`launch_hash`", not "caching is on"."""
    ref, until = _off
    if ref() is not store or _overrides:
        return False
    if _environ is None:
        if os.environ.get(ENVIRONMENT_VARIABLE) is not None:
            return False
    elif _ENVIRON_KEY in _environ:
        return False
    return time.monotonic() < until


def _parse(values: Mapping[str, Any]) -> CachingConfig:
    return CachingConfig(
        bool(values.get(DEFAULT_ENABLED, False)),
        tuple(values.get(ENABLED_FOR, ()) or ()),
        tuple(values.get(DISABLED_FOR, ()) or ()),
        bool(values.get(STORE_ALL_HASHES, False)),
    )


def get_use_cache(*, identifier: str | None = None, db: Any = None) -> bool:
    """Whether a process of type ``identifier`` is looked up in the cache when launched in the
    database ``db`` (an open backend, a path or a URL; the default database when ``None``)."""
    for pattern, enabled in reversed(_overrides):
        if pattern is None or (identifier is not None and _matches(pattern, identifier)):
            return enabled
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if value:
        return _from_environment(value, identifier or "")
    from miniengine.runtime import context

    config = _config_of(context.store_for(db))
    return config.default_enabled if identifier is None else config.use_cache(identifier)


_NEITHER = (False, False)


def _use_cache(store: Backend, identifier: str) -> tuple[bool, bool]:
    """For a launch (the store is known; the common case is fast): whether to look the process
    up (:func:`get_use_cache`), and whether to store its hash all the same."""
    if off_for(store):
        return _NEITHER
    config = _config_of(store)
    if _overrides:
        for pattern, enabled in reversed(_overrides):
            if pattern is None or _matches(pattern, identifier):
                return enabled, config.store_all_hashes
    value = os.environ.get(ENVIRONMENT_VARIABLE)
    if value and value.strip():
        return _from_environment(value.strip(), identifier), config.store_all_hashes
    if config.is_off:
        return False, config.store_all_hashes
    return config.use_cache(identifier), config.store_all_hashes


def get_caching_config(*, db: Any = None) -> CachingConfig:
    """The caching settings stored in the database ``db`` (read now)."""
    from miniengine.runtime import context

    return _parse(context.store_for(db).caching.settings(SETTINGS))


def set_caching_config(
    *,
    default_enabled: bool | None = None,
    enabled_for: Sequence[str] | None = None,
    disabled_for: Sequence[str] | None = None,
    store_all_hashes: bool | None = None,
    db: Any = None,
) -> CachingConfig:
    """Store caching settings in the database ``db``, for every program and daemon worker that
    opens it (AiiDA's ``verdi config set caching.*``); ``None`` leaves a setting as it is.  An
    empty list clears one.  Returns the settings now stored."""
    global _off
    from miniengine.runtime import context

    values: dict[str, Any] = {}
    for name, flag in ((DEFAULT_ENABLED, default_enabled), (STORE_ALL_HASHES, store_all_hashes)):
        if flag is None:
            continue
        if not isinstance(flag, bool):
            raise ValidationError(f"{name} must be True or False, not {flag!r}")
        values[name] = flag
    for name, patterns in ((ENABLED_FOR, enabled_for), (DISABLED_FOR, disabled_for)):
        if patterns is None:
            continue
        if isinstance(patterns, str) or not all(
            isinstance(item, str) and item.strip() for item in patterns
        ):
            raise ValidationError(
                f"{name} must be a list of identifiers (process types such as "
                f"'mypkg.calcs.add', '*' wildcards allowed), not {patterns!r}"
            )
        values[name] = [item.strip() for item in patterns]
    store = context.store_for(db)
    if values:
        store.caching.set_settings(values)
    with _configs_lock:
        _configs.pop(store, None)
        _off = (_nothing, 0.0)
    return get_caching_config(db=store)


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
    (a process type such as ``mypkg.calcs.add``; ``*`` wildcards allowed).  It holds in this
    interpreter only: daemon workers follow :func:`set_caching_config`."""
    return _override(identifier, True)


def disable_caching(*, identifier: str | None = None) -> contextlib.AbstractContextManager[None]:
    """Disable caching in this block, for every class or for those matching ``identifier``."""
    return _override(identifier, False)


# hashes ----------------------------------------------------------------------------------------

_SCALARS = (str, int, float, bool, bytes, type(None))


def _canonical(value: Any) -> Any:
    """``value`` with its mappings' keys sorted and tuples as lists (msgpack of it is stable)."""
    if isinstance(value, _SCALARS):
        return value
    if type(value) is dict:
        if len(value) == 1:  # the attributes of Int, Float, Str, Bool: the common case, fast
            for key, item in value.items():
                if isinstance(item, _SCALARS):
                    return [[key, item]]
        return [[key, _canonical(value[key])] for key in sorted(value, key=repr)]
    if isinstance(value, Mapping):
        return [[key, _canonical(value[key])] for key in sorted(value, key=repr)]
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def _pack(value: Any) -> bytes:
    return msgpack.packb(_canonical(value), use_bin_type=True)  # type: ignore[no-any-return]


def data_hash(data: Data) -> str:
    """The content hash of a Data node: its type and its attributes (for file data these hold
    the sha256 of each file's content); not its uuid, pk, label or description."""
    return hashlib.sha256(_pack([HASH_FORMAT, data.type_name, data._to_attributes()])).hexdigest()


def _first(item: tuple[str, Data]) -> str:
    return item[0]


def process_hash(process_type: str, version: Any, inputs: Sequence[tuple[str, Data]]) -> str:
    """The hash of a process: its type, its cache version and the content of each input (its
    Data type and attributes), by link label.

    One SHA-256 over the msgpack of ``[format, type, version]`` followed by that of each
    ``[label, data type, attributes]`` in label order (msgpack values delimit themselves, so
    the concatenation is unambiguous)."""
    digest = _prefix(process_type, version)
    pack = _packer()
    for label, data in sorted(inputs, key=_first) if len(inputs) > 1 else inputs:
        digest.update(pack([label, data.type_name, _canonical(data._to_attributes())]))
    return str(digest.hexdigest())


_local = threading.local()


def _packer() -> Any:
    """This thread's msgpack packer (making one per call costs as much as the hash)."""
    try:
        return _local.pack
    except AttributeError:
        _local.pack = msgpack.Packer(use_bin_type=True).pack
        return _local.pack


#: (process type, version) -> the SHA-256 of their part of a hash, copied by each call
_prefixes: dict[tuple[str, Any], Any] = {}


def _prefix(process_type: str, version: Any) -> hashlib._Hash:
    key = (process_type, version)
    try:
        prefix = _prefixes.get(key)
    except TypeError:  # an unhashable version (a CalcJob's options)
        return hashlib.sha256(_pack([HASH_FORMAT, process_type, version]))
    if prefix is None:
        prefix = _prefixes[key] = hashlib.sha256(_pack([HASH_FORMAT, process_type, version]))
    return prefix.copy()


class LaunchHash(NamedTuple):
    """What a launch does about caching: the hash to store on the new process (``None``: not
    cachable) and whether to look it up first."""

    node_hash: str | None
    lookup: bool


_NOT_CACHABLE = LaunchHash(None, False)


def launch_hash(
    cls: Any, process_type: str, inputs: Sequence[tuple[str, Data]], store: Backend
) -> LaunchHash:
    """The hash of a process of class ``cls`` being launched and whether caching is enabled
    for it; no hash when it is not looked up, unless the database's
    ``caching.store_all_hashes`` asks for the hash of every cachable process."""
    if not getattr(cls, "_cachable", True):
        return _NOT_CACHABLE
    lookup, store_all = _use_cache(store, process_type)
    if not lookup and not store_all:
        return _NOT_CACHABLE
    node_hash = process_hash(process_type, getattr(cls, "_CACHE_VERSION", None), inputs)
    return LaunchHash(node_hash, lookup)


#: the options of a CalcJob that say where and how long it queues, not what it computes (as
#: AiiDA's ``CalcJobNode._hash_ignored_attributes``): left out of its hash
IGNORED_OPTIONS = frozenset(
    {"queue_name", "account", "qos", "priority", "max_wallclock_seconds", "max_memory_kb"}
)


def calcjob_hash(
    cls: Any,
    process_type: str,
    inputs: Sequence[tuple[str, Data]],
    options: Mapping[str, Any],
    store: Backend,
) -> LaunchHash:
    """:func:`launch_hash` of a CalcJob: its options (but :data:`IGNORED_OPTIONS`) count as
    part of its version."""
    if not getattr(cls, "_cachable", True):
        return _NOT_CACHABLE
    lookup, store_all = _use_cache(store, process_type)
    if not lookup and not store_all:
        return _NOT_CACHABLE
    kept = {key: value for key, value in options.items() if key not in IGNORED_OPTIONS}
    version = [getattr(cls, "_CACHE_VERSION", None), kept]
    return LaunchHash(process_hash(process_type, version, inputs), lookup)


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
        """The hash: a Data node's content hash; a cachable process's hash as stored when it
        was created (``None`` for a workflow, or one created before hashes were stored)."""
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
