"""The checkpoint codec: process state to compact, versioned msgpack bytes and back.

A checkpoint is written after every step, so it must be small and fast (a WorkChain's state in well
under 200 bytes and 50 µs), and it is read back by another interpreter, maybe a newer one.  Hence:

- every blob starts with a fixed header (magic bytes and :data:`FORMAT_VERSION`), so garbage or a
  blob from a newer miniengine is refused with a :class:`~miniengine.exceptions.CheckpointError`
  saying what was found, instead of being misread;
- only the types of an explicit registry are encoded (plain values, tuples, ``ExitCode``, Data and
  what :func:`register_type` adds), each with its own msgpack extension code: no pickle, no YAML,
  and decoding never imports a class path found in the data;
- stored Data is written by pk only (the database already holds its content), unstored Data by value
  under its registered type name; Data classes are looked up in
  :data:`~miniengine.core.data.DATA_TYPES`.

The module is pure (no IO, no event loop): the runtime turns a state into bytes and back with
:func:`encode` and :func:`decode`, and calls :func:`check_encodable` to reject a bad context value
at the step that put it there, naming its path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgpack  # type: ignore[import-untyped, unused-ignore]

from miniengine.core.data import (
    Data,
    Int,
    data_class,
    load_data_from_attributes,
)
from miniengine.core.exit_code import ExitCode
from miniengine.exceptions import CheckpointError, MiniengineError

__all__ = [
    "FORMAT_VERSION",
    "MAX_DEPTH",
    "USER_TAGS",
    "NodeRef",
    "benchmark_state",
    "check_encodable",
    "decode",
    "encode",
    "register_type",
    "stored_pks",
]

#: The version of the blob layout; a blob with a higher version is refused.
FORMAT_VERSION: Final = 1

_MAGIC: Final = b"MEC"
_HEADER: Final = _MAGIC + bytes([FORMAT_VERSION])
_HEADER_SIZE: Final = len(_HEADER)

#: How deep containers may nest in a checkpoint (:func:`check_encodable` enforces it).
MAX_DEPTH: Final = 100

# msgpack extension codes: negative ones belong to msgpack itself, 0-31 to miniengine, 32-127 to
# the types users add with register_type().
_BIG_INT: Final = 0
_TUPLE: Final = 1
_EXIT_CODE: Final = 2
_STORED_DATA: Final = 3
_UNSTORED_DATA: Final = 4

#: The extension codes open to :func:`register_type`.
USER_TAGS: Final = range(32, 128)

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A stored node named by its pk: what stored Data decodes to when no ``resolve_pk`` is given.

    It encodes back to the same reference, so a decoded state can be checkpointed again.
    """

    pk: int


@dataclass(frozen=True, slots=True)
class _UserType:
    cls: type[Any]
    tag: int
    to_plain: Callable[[Any], Any]
    from_plain: Callable[[Any], Any]
    marker: msgpack.ExtType


_user_types_by_class: dict[type[Any], _UserType] = {}
_user_types_by_tag: dict[int, _UserType] = {}

# Types that the codec handles itself and that register_type() therefore refuses.
_BUILTIN_TYPES: Final[frozenset[type[Any]]] = frozenset(
    {type(None), bool, int, float, str, bytes, list, tuple, dict, ExitCode, NodeRef}
)
_SCALAR_TYPES: Final[frozenset[type[Any]]] = frozenset(
    {type(None), bool, int, float, str, bytes, NodeRef}
)


def register_type(
    cls: type[_T],
    tag: int,
    to_plain: Callable[[_T], Any],
    from_plain: Callable[[Any], _T],
) -> None:
    """Let checkpoints hold instances of ``cls`` (exactly that class, not its subclasses).

    ``to_plain`` turns an instance into an encodable value (plain values, containers, even other
    registered types) and ``from_plain`` rebuilds the instance from it.  ``tag`` is the msgpack
    extension code written in the blob, so it must stay the same across versions of your code; it
    must lie in :data:`USER_TAGS` (0-31 are miniengine's own) and not be taken by another class.
    Data subclasses are not registered here: they are known by their ``type_name``.
    """
    if not isinstance(cls, type):
        raise CheckpointError(f"register_type() needs a class, got {cls!r}")
    if issubclass(cls, Data):
        raise CheckpointError(
            f"{cls.__qualname__} is a Data class: checkpoints know it by its type_name "
            f"{cls.type_name!r}, do not register it with register_type()"
        )
    if cls in _BUILTIN_TYPES:
        raise CheckpointError(f"checkpoints already support {cls.__qualname__}")
    _register(cls, tag, to_plain, from_plain, USER_TAGS)


#: Extension codes for the engine's own non-Data types (process nodes in a context).
ENGINE_TAGS: Final = range(16, 32)


def register_engine_type(
    cls: type[_T],
    tag: int,
    to_plain: Callable[[_T], Any],
    from_plain: Callable[[Any], _T],
) -> None:
    """:func:`register_type` for miniengine's own runtime types, with tags in ENGINE_TAGS."""
    _register(cls, tag, to_plain, from_plain, ENGINE_TAGS)


def _register(
    cls: type[_T],
    tag: int,
    to_plain: Callable[[_T], Any],
    from_plain: Callable[[Any], _T],
    tags: range,
) -> None:
    if isinstance(tag, bool) or not isinstance(tag, int) or tag not in tags:
        raise CheckpointError(
            f"cannot register {cls.__qualname__} with tag {tag!r}: tags must be integers from "
            f"{tags.start} to {tags.stop - 1} (lower ones are reserved for miniengine)"
        )
    by_tag = _user_types_by_tag.get(tag)
    if by_tag is not None and not _same_class(by_tag.cls, cls):
        raise CheckpointError(
            f"cannot register {_class_path(cls)} with tag {tag}: the tag is already used by "
            f"{_class_path(by_tag.cls)}"
        )
    previous = next((t for c, t in _user_types_by_class.items() if _same_class(c, cls)), None)
    if previous is not None and previous.tag != tag:
        raise CheckpointError(
            f"{_class_path(cls)} is already registered with tag {previous.tag}, not {tag}"
        )
    if previous is not None:  # the same class again (e.g. its module was reloaded): replace it
        del _user_types_by_class[previous.cls]
    entry = _UserType(cls, tag, to_plain, from_plain, msgpack.ExtType(tag, b""))
    _user_types_by_class[cls] = entry
    _user_types_by_tag[tag] = entry


def _same_class(a: type[Any], b: type[Any]) -> bool:
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _class_path(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# encoding ----------------------------------------------------------------------------------------

# A tuple, an ExitCode, an unstored Data or a registered type is written as an array whose first
# item is the extension marker of its kind (an extension with an empty payload): packing and
# unpacking then stay one flat msgpack pass with msgpack's own nesting limit, with no nested
# packer and no nested unpackb (which crafted input could nest until the C stack overflows).
_TUPLE_MARKER: Final = msgpack.ExtType(_TUPLE, b"")
_EXIT_CODE_MARKER: Final = msgpack.ExtType(_EXIT_CODE, b"")
_UNSTORED_DATA_MARKER: Final = msgpack.ExtType(_UNSTORED_DATA, b"")


class _Unsupported(Exception):
    """Raised by the msgpack ``default`` hook; :func:`encode` then finds the path and explains."""


def _to_bytes(number: int) -> bytes:
    return number.to_bytes((number.bit_length() + 8) // 8, "big", signed=True)


def _default(value: Any) -> Any:
    """Encode what msgpack does not know itself (called with ``strict_types``: exact types only)."""
    kind = type(value)
    if isinstance(value, Data):
        pk = value.pk
        if pk is not None:
            return msgpack.ExtType(_STORED_DATA, _to_bytes(pk))
        _check_registered(value)
        if type(value.label) is not str or type(value.description) is not str:
            raise _Unsupported("a Data label or description that is not a str")
        return [
            _UNSTORED_DATA_MARKER,
            value.type_name,
            value.uuid,
            value._to_attributes(),
            value.label,
            value.description,
        ]
    if kind is tuple:
        return [_TUPLE_MARKER, *value]
    if kind is NodeRef:
        return msgpack.ExtType(_STORED_DATA, _to_bytes(value.pk))
    if kind is int:  # beyond 64 bits
        return msgpack.ExtType(_BIG_INT, _to_bytes(value))
    if kind is ExitCode:
        if not _is_exit_code(value):
            raise _Unsupported("an ExitCode with fields of the wrong types")
        return [_EXIT_CODE_MARKER, *value]
    user_type = _user_types_by_class.get(kind)
    if user_type is not None:
        return [user_type.marker, user_type.to_plain(value)]
    raise _Unsupported(kind.__name__)


def _is_exit_code(fields: Sequence[Any]) -> bool:
    """True if ``fields`` are the status, message and invalidates_cache of an ExitCode."""
    return (
        len(fields) == 3
        and type(fields[0]) is int
        and (fields[1] is None or type(fields[1]) is str)
        and type(fields[2]) is bool
    )


def _check_registered(data: Data) -> None:
    try:
        registered = data_class(data.type_name)
    except MiniengineError:
        registered = None
    if registered is not type(data):
        raise CheckpointError(
            f"the Data class {_class_path(type(data))} is not the one registered under its "
            f"type_name {data.type_name!r}, so it could not be decoded again"
        )


class _ThreadPackers(threading.local):
    """This thread's packers: a msgpack ``Packer`` is neither thread-safe nor reentrant.

    Creating a Packer per call costs about as much as packing a whole checkpoint, so each thread
    keeps one; a second one is only made when ``encode`` is re-entered (from a ``to_plain``).
    """

    def __init__(self) -> None:
        self.packers: list[msgpack.Packer] = []
        self.in_use = 0


_thread_packers = _ThreadPackers()


def encode(value: Any) -> bytes:
    """Encode ``value`` into a checkpoint blob (header + msgpack).

    Raises :class:`~miniengine.exceptions.CheckpointError` naming the path and type of the first
    value that cannot be checkpointed.
    """
    state = _thread_packers
    in_use = state.in_use
    if in_use == len(state.packers):
        state.packers.append(
            msgpack.Packer(default=_default, use_bin_type=True, strict_types=True, buf_size=1024)
        )
    state.in_use = in_use + 1
    try:
        packed: bytes = state.packers[in_use].pack(value)
    except Exception as exc:
        # The fast path failed: walk the value to say where and why.
        check_encodable(value)
        raise CheckpointError(f"cannot checkpoint the value: {exc!r}") from exc
    finally:
        state.in_use = in_use
    return _HEADER + packed


def check_encodable(value: Any, path: str = "") -> None:
    """Raise :class:`~miniengine.exceptions.CheckpointError` if ``value`` cannot be checkpointed.

    The message names the path of the offending value below ``path`` (``ctx['results'][2]``) and
    its type.  This check is at least as strict as :func:`encode`; it also refuses reference cycles
    and containers nested more than :data:`MAX_DEPTH` deep.
    """
    try:
        _walk(value, set(), 0)
    except _Refusal as refusal:
        where = _format_path(path, refusal.segments[::-1])
        raise CheckpointError(f"cannot checkpoint {where}: {refusal.reason}") from refusal.__cause__


class _Refusal(Exception):
    """Raised by the walk; each container adds its segment of the path on the way out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        # (kind, value): ("item", key or index), ("key", key) or ("attr", name), innermost first.
        self.segments: list[tuple[str, Any]] = []


def _format_path(path: str, segments: list[tuple[str, Any]]) -> str:
    parts = [path]
    for kind, segment in segments:
        if kind == "attr":
            parts.append(f".{segment}")
        elif kind == "key":
            parts.append(f" (the dict key {segment!r})")
        elif not path and len(parts) == 1 and isinstance(segment, str) and segment.isidentifier():
            parts.append(segment)  # a top-level name reads better bare: ctx['results'][2]
        else:
            parts.append(f"[{segment!r}]")
    where = "".join(parts) or "the value"
    return where if len(where) <= 200 else f"{where[:90]} ... {where[-90:]}"


_SUPPORTED: Final = (
    "a checkpoint holds None, bool, int, float, str, bytes, list, tuple, dict, ExitCode, Data "
    "and the types added with codec.register_type()"
)


#: The scalars :func:`check_encodable` passes without a look (a str must be valid UTF-8).
_PLAIN_SCALARS: Final = _SCALAR_TYPES - {str}


def _check_utf8(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Refusal(
            f"the str holds the lone surrogate U+{ord(text[exc.start]):04X} (at index "
            f"{exc.start}), which UTF-8 cannot encode"
        ) from None


def _walk(value: Any, on_path: set[int], depth: int) -> None:
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return
    if kind is str:
        if not value.isascii():
            _check_utf8(value)
        return
    if depth >= MAX_DEPTH:
        raise _Refusal(f"containers are nested more than {MAX_DEPTH} levels deep")
    identity = id(value)
    if identity in on_path:
        raise _Refusal("it contains itself (a reference cycle)")
    on_path.add(identity)
    depth += 1
    if kind is list or kind is tuple:
        for index, item in enumerate(value):
            if type(item) not in _PLAIN_SCALARS:
                try:
                    _walk(item, on_path, depth)
                except _Refusal as refusal:
                    refusal.segments.append(("item", index))
                    raise
    elif kind is dict:
        for key, item in value.items():
            if type(key) not in _PLAIN_SCALARS:
                try:
                    _walk(key, on_path, depth)
                except _Refusal as refusal:
                    refusal.segments[:] = [("key", key)]
                    raise
            if type(item) not in _PLAIN_SCALARS:
                try:
                    _walk(item, on_path, depth)
                except _Refusal as refusal:
                    refusal.segments.append(("item", key))
                    raise
    elif kind is ExitCode:
        if not _is_exit_code(value):
            raise _Refusal(
                "an ExitCode needs an int status, a str or None message and a bool "
                f"invalidates_cache, not {tuple(value)!r}"
            )
    elif isinstance(value, Data):
        if value.pk is None:
            _walk_unstored_data(value, on_path, depth)
    elif kind in _user_types_by_class:
        try:
            plain = _user_types_by_class[kind].to_plain(value)
        except Exception as exc:
            reason = f"converting the {kind.__name__} to a plain value failed: {exc!r}"
            raise _Refusal(reason) from exc
        _walk(plain, on_path, depth)
    else:
        raise _Refusal(f"values of type {kind.__name__!r} are not supported ({_SUPPORTED})")
    on_path.discard(identity)


def _walk_unstored_data(value: Data, on_path: set[int], depth: int) -> None:
    try:
        _check_registered(value)
    except CheckpointError as exc:
        raise _Refusal(str(exc)) from None
    for field in ("label", "description"):
        if type(getattr(value, field)) is not str:
            refusal = _Refusal("a Data label or description must be a str")
            refusal.segments.append(("attr", field))
            raise refusal
    try:
        attributes = value._to_attributes()
    except Exception as exc:
        reason = f"reading the content of the {type(value).__name__} failed: {exc!r}"
        raise _Refusal(reason) from exc
    try:
        _walk(attributes, on_path, depth)
    except _Refusal as refusal:
        refusal.segments.append(("attr", "attributes"))
        raise


# decoding ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Marker:
    """What the extension marker heading an array decodes to, until ``list_hook`` consumes it."""

    code: int


_MARKERS: Final = {code: _Marker(code) for code in (_TUPLE, _EXIT_CODE, _UNSTORED_DATA)}


class _Decoder:
    """The msgpack hooks of one :func:`decode` call."""

    __slots__ = ("pending_markers", "resolve_pk", "unstored")

    def __init__(self, resolve_pk: Callable[[int], Any] | None) -> None:
        self.resolve_pk = resolve_pk
        # Markers seen but not yet consumed at the head of an array; must end at zero.
        self.pending_markers = 0
        # One object per unstored node: the same node twice in a state stays one node.
        self.unstored: dict[str, Data] = {}

    def ext_hook(self, code: int, payload: bytes) -> Any:
        if code == _STORED_DATA:
            if not payload:
                raise CheckpointError("corrupt checkpoint: a stored node without a pk")
            pk = int.from_bytes(payload, "big", signed=True)
            if self.resolve_pk is None:
                return NodeRef(pk)
            try:
                return self.resolve_pk(pk)
            except MiniengineError:
                raise
            except Exception as exc:
                raise CheckpointError(f"cannot load the stored node {pk}: {exc!r}") from exc
        if code == _BIG_INT:
            return int.from_bytes(payload, "big", signed=True)
        marker = _MARKERS.get(code)
        if marker is None:
            if code not in _user_types_by_tag:
                raise CheckpointError(
                    f"the checkpoint holds a value with extension code {code}, for which no type "
                    "is registered (see register_type())"
                )
            marker = _Marker(code)
        if payload:
            raise CheckpointError(f"corrupt checkpoint: extension marker {code} with a payload")
        self.pending_markers += 1
        return marker

    def list_hook(self, items: list[Any]) -> Any:
        if not items or type(items[0]) is not _Marker:
            return items
        self.pending_markers -= 1
        code = items[0].code
        if code == _TUPLE:
            return tuple(items[1:])
        if code == _UNSTORED_DATA:
            data = _decode_unstored_data(items)
            return self.unstored.setdefault(data.uuid, data)
        if code == _EXIT_CODE:
            fields = items[1:]
            if _is_exit_code(fields):
                return ExitCode(*fields)
            raise CheckpointError(f"corrupt checkpoint: an exit code holds {fields!r}")
        user_type = _user_types_by_tag[code]
        if len(items) != 2:
            raise CheckpointError(
                f"corrupt checkpoint: a {user_type.cls.__qualname__} holds {items[1:]!r}"
            )
        try:
            return user_type.from_plain(items[1])
        except MiniengineError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"cannot rebuild a {user_type.cls.__qualname__} from its checkpoint: {exc!r}"
            ) from exc


def _decode_unstored_data(items: list[Any]) -> Data:
    if not (len(items) == 6 and all(type(items[index]) is str for index in (1, 2, 4, 5))):
        raise CheckpointError(f"corrupt checkpoint: an unstored Data holds {items[1:]!r}")
    _, type_name, uuid, attributes, label, description = items
    try:
        return load_data_from_attributes(type_name, attributes, None, uuid, label, description)
    except MiniengineError:  # UnknownDataTypeError names the type
        raise
    except Exception as exc:
        raise CheckpointError(
            f"cannot rebuild an unstored {type_name!r} from its checkpoint: {exc!r}"
        ) from exc


def decode(blob: bytes, *, resolve_pk: Callable[[int], Any] | None = None) -> Any:
    """Decode a blob made by :func:`encode`.

    Stored Data comes back as ``resolve_pk(pk)``, or as a :class:`NodeRef` without ``resolve_pk``;
    unstored Data as a new unstored object of its registered class with the same uuid and content.
    Anything that is not a valid blob raises :class:`~miniengine.exceptions.CheckpointError`
    (:class:`~miniengine.exceptions.UnknownDataTypeError` for a Data type not registered here);
    errors of the miniengine tree raised by ``resolve_pk`` pass through unchanged.
    """
    try:
        header = bytes(blob[:_HEADER_SIZE])
    except Exception:
        raise CheckpointError(f"a checkpoint must be bytes, not {type(blob).__name__}") from None
    if header != _HEADER:
        raise CheckpointError(_describe_bad_header(header))
    decoder = _Decoder(resolve_pk)
    try:
        value = msgpack.unpackb(
            memoryview(blob)[_HEADER_SIZE:],
            ext_hook=decoder.ext_hook,
            list_hook=decoder.list_hook,
            raw=False,
            strict_map_key=False,
        )
    except MiniengineError:
        raise
    except Exception as exc:
        raise CheckpointError(f"corrupt checkpoint: {exc!r}") from exc
    if decoder.pending_markers:
        raise CheckpointError("corrupt checkpoint: an extension marker out of place")
    return value


def stored_pks(blob: bytes) -> list[int]:
    """The pks of the stored nodes that a blob made by :func:`encode` names, each once, in the
    order they first appear; ``[]`` for anything :func:`decode` would refuse.

    Nothing is built: a reader loads these nodes in one query, so that :func:`decode`'s
    ``resolve_pk`` finds them instead of querying once per node (on a database server, a round
    trip each).
    """
    if bytes(blob[:_HEADER_SIZE]) != _HEADER:
        return []
    found: dict[int, None] = {}

    def note(code: int, payload: bytes) -> None:
        if code == _STORED_DATA and payload:
            found[int.from_bytes(payload, "big", signed=True)] = None

    try:
        msgpack.unpackb(
            memoryview(blob)[_HEADER_SIZE:], ext_hook=note, raw=False, strict_map_key=False
        )
    except Exception:  # decode says what is wrong with it
        return []
    return list(found)


def _describe_bad_header(header: bytes) -> str:
    if len(header) == _HEADER_SIZE and header.startswith(_MAGIC):
        version = header[-1]
        if version > FORMAT_VERSION:
            return (
                f"the checkpoint has format version {version}, written by a newer miniengine; "
                f"this one reads format version {FORMAT_VERSION}: upgrade miniengine"
            )
        return f"the checkpoint has the unknown format version {version}"
    if not header:
        return "the checkpoint is empty"
    return (
        f"not a miniengine checkpoint: it starts with {header!r}, "
        f"not the header {_HEADER!r} (magic {_MAGIC!r} and the format version)"
    )


# benchmark ---------------------------------------------------------------------------------------


def benchmark_state() -> dict[str, Any]:
    """A representative WorkChain state (stored Data faked with pks), for tests and benchmarks."""

    def stored_int(value: int, pk: int) -> Int:
        node = Int(value)
        node._set_stored(pk, f"00000000-0000-4000-8000-{pk:012d}")
        return node

    return {
        "process": "mypkg.workflows:LoopWorkChain",
        "inputs": {"n": stored_int(5, 17)},
        "ctx": {"i": 5, "total": 10, "results": [stored_int(1, 45), stored_int(2, 46)]},
        "cursor": (1, 0, 0),
        "seq": 12,
        "awaiting": [45, 46],
        "outputs": {},
    }
