"""Data values: ``Data`` and the base types ``Int, Float, Str, Bool, Dict, List``.

A Data object behaves like the Python value it wraps (``Int(2) + 1 == 3``; arithmetic returns a new,
unstored ``Int``/``Float`` as AiiDA does) and becomes immutable once stored.  Each Data class is
known to the store and the checkpoint codec by a registered *type name*, never by a class path found
in the
data: loading a node looks its type name up in :data:`DATA_TYPES` and nothing is imported.

This module is pure: storing goes through a backend that the runtime installs with
:func:`set_backend`, so the core never touches the database itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from miniengine.core.ids import new_uuid
from miniengine.exceptions import MiniengineError, ModificationNotAllowed, UnknownDataTypeError

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "DATA_TYPES",
    "MAX_NESTING",
    "Bool",
    "Data",
    "DataBackend",
    "DataValueError",
    "Dict",
    "Float",
    "Int",
    "List",
    "StorageNeeds",
    "Str",
    "check_field_text",
    "check_text",
    "data_class",
    "is_plain_value",
    "set_backend",
    "to_data",
]

#: Registered Data classes by type name.  Filled by ``Data.__init_subclass__``.
DATA_TYPES: dict[str, type[Data]] = {}

_D = TypeVar("_D", bound="Data")


@dataclass(frozen=True)
class StorageNeeds:
    """What a node needs in its database before its row can be inserted.

    ``computer_uuid``: the computer it runs on (a code, a ``RemoteData``), which must be stored
    in the same database.  ``object_keys``: the repository objects it refers to, which must be
    in that database's repository; ``source_repository`` (a folder) holds them when the node's
    content was written to another database's repository, and they are copied from there.
    """

    computer_uuid: str | None = None
    object_keys: tuple[str, ...] = ()
    source_repository: str | None = None


class DataBackend(Protocol):
    """What the runtime provides to Data objects: storing them and reading their links."""

    def store_data(self, data: Data) -> None: ...

    def node_base(self, data: Data) -> Any: ...

    def update_label(self, data: Data, label: str, description: str) -> None: ...

    def node_times(self, data: Data) -> tuple[Any, Any]:
        """``(ctime, mtime)`` of a stored node, as datetimes."""
        ...


_backend: DataBackend | None = None


def set_backend(backend: DataBackend | None) -> None:
    """Install the object that stores Data (done by ``miniengine.runtime`` on import)."""
    global _backend
    _backend = backend


def _get_backend() -> DataBackend:
    if _backend is None:
        # The core never imports the runtime; the package's lazy exports load it with the Data
        # types (``from miniengine import Int``), so only a direct import of this module gets here.
        raise RuntimeError(
            "Data is stored by miniengine's runtime, which is not loaded: import the Data "
            "types from miniengine or miniengine.orm (or import miniengine.runtime.nodes)"
        )
    return _backend


class Data:
    """Base class of every value that can be an input or output of a process.

    Subclasses register themselves under ``type_name`` (a class keyword; by default the class's
    module and qualified name) and implement :meth:`_to_attributes` and :meth:`_from_attributes`,
    which convert to and from a msgpack-able plain value.
    """

    type_name: ClassVar[str] = "core.data"

    def __init_subclass__(cls, type_name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = type_name or f"{cls.__module__}.{cls.__qualname__}"
        DATA_TYPES[cls.type_name] = cls

    def __init__(self, *, label: str = "", description: str = "") -> None:
        if label and isinstance(label, str):
            check_field_text(label, "a node's label")
        if description and isinstance(description, str):
            check_field_text(description, "a node's description")
        self._pk: int | None = None
        self._uuid: str | None = None  # drawn on first use: most intermediate values never need one
        self._store: Any = None  # the store it was stored in or loaded from (opaque here)
        self._label = label
        self._description = description

    # identity --------------------------------------------------------------------------------

    @property
    def pk(self) -> int | None:
        """The primary key once stored, else ``None``."""
        return self._pk

    @property
    def id(self) -> int | None:
        return self._pk

    @property
    def uuid(self) -> str:
        if self._uuid is None:
            self._uuid = new_uuid()
        return self._uuid

    @property
    def is_stored(self) -> bool:
        return self._pk is not None

    @property
    def label(self) -> str:
        return self._label

    @label.setter
    def label(self, value: str) -> None:
        # As in AiiDA, label and description stay editable once stored (the content does not).
        if isinstance(value, str):
            check_field_text(value, "a node's label")
        if getattr(self, "_pk", None) is not None:
            _get_backend().update_label(self, value, self._description)
        self._label = value

    @property
    def description(self) -> str:
        return self._description

    @description.setter
    def description(self, value: str) -> None:
        if isinstance(value, str):
            check_field_text(value, "a node's description")
        if getattr(self, "_pk", None) is not None:
            _get_backend().update_label(self, self._label, value)
        self._description = value

    @property
    def ctime(self) -> Any:
        """When the node was stored (a UTC datetime; ``None`` while it is not stored)."""
        return None if self._pk is None else _get_backend().node_times(self)[0]

    @property
    def mtime(self) -> Any:
        """When the node last changed (its label or description; ``None`` while unstored)."""
        return None if self._pk is None else _get_backend().node_times(self)[1]

    @property
    def node_type(self) -> str:
        return self.type_name

    def store(self) -> Self:
        """Store this node (once) and return it; storing an already stored node does nothing."""
        if self._pk is None:
            _get_backend().store_data(self)
        return self

    @property
    def base(self) -> Any:
        """``node.base`` as in AiiDA: ``attributes`` (on an unstored node too) and ``links``
        (the node must be stored)."""
        return _get_backend().node_base(self)

    def _attributes_view(self) -> builtins_dict[str, Any]:
        """The content under AiiDA's attribute names, for ``node.base.attributes``: a mapping
        content as it is, anything else under ``value``."""
        content = self._to_attributes()
        if content is None:
            return {}
        if isinstance(content, builtins_dict):
            return _deep_copy(content)  # type: ignore[no-any-return]
        return {"value": content}

    @property
    def creator(self) -> Any:
        """The calcfunction node that created this data, or ``None``."""
        if self._pk is None:
            return None
        incoming = self.base.links.get_incoming(link_type="create")
        return incoming[0].node if incoming else None

    def _check_mutable(self) -> None:
        if self._pk is not None:
            raise ModificationNotAllowed(
                f"{type(self).__name__}<{self._pk}> is stored and therefore immutable"
            )

    def _set_stored(self, pk: int, uuid: str, store: Any = None) -> None:
        self._pk = pk
        self._uuid = uuid
        self._store = store

    def _storage_needs(self) -> StorageNeeds | None:
        """What storing this node needs besides its attributes (``None``: nothing).

        Codes and ``RemoteData`` name their computer, file data the repository objects that
        must be in the database's repository before the node's row commits.
        """
        return None

    # serialisation ---------------------------------------------------------------------------

    def _to_attributes(self) -> Any:
        """Return the content of this node as a msgpack-able plain value."""
        return None

    @classmethod
    def _from_attributes(cls, attributes: Any) -> Self:
        """Rebuild a node (unstored) from what :meth:`_to_attributes` returned."""
        obj = cls.__new__(cls)
        Data.__init__(obj)
        return obj

    def clone(self) -> Self:
        """An unstored copy with the same content."""
        copy = type(self)._from_attributes(self._to_attributes())
        copy.label = self.label
        copy.description = self.description
        return copy

    def __str__(self) -> str:
        return f"uuid: {self.uuid} (pk: {self._pk if self._pk is not None else 'unstored'})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self}>"


DATA_TYPES[Data.type_name] = Data


def data_class(type_name: str) -> type[Data]:
    """The registered Data class for ``type_name``; raises ``UnknownDataTypeError`` naming it.

    miniengine's own Data types above the core (files, remote folders, codes) are registered
    by :mod:`miniengine.runtime.registry`, which the runtime imports before it reads a stored
    node of a type it does not know yet or decodes a checkpoint."""
    try:
        return DATA_TYPES[type_name]
    except KeyError:
        raise UnknownDataTypeError(
            f"the Data type {type_name!r} is not registered in this interpreter; import the "
            "module that defines it before loading this data"
        ) from None


class BaseType(Data, type_name="core.base"):
    """A Data node that wraps one immutable Python value."""

    _value_type: ClassVar[type]

    def __init__(self, value: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if value is None:
            value = self._value_type()
        elif isinstance(value, BaseType):
            value = value.value
        self._value = self._value_type(value)

    @property
    def value(self) -> Any:
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        self._check_mutable()
        self._value = type(self)(value)._value  # the constructor's checks (Int(2.5) raises)

    def _to_attributes(self) -> Any:
        return self._value

    def _attributes_view(self) -> builtins_dict[str, Any]:
        return {"value": self._value}

    @classmethod
    def _from_attributes(cls, attributes: Any) -> Self:
        obj = cls.__new__(cls)
        Data.__init__(obj)
        obj._value = cls._value_type(attributes)
        return obj

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BaseType):
            return bool(self._value == other._value)
        return bool(self._value == other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self._value)

    def __str__(self) -> str:
        return str(self._value)

    def __repr__(self) -> str:
        pk = self._pk if self._pk is not None else "unstored"
        return f"<{type(self).__name__}: uuid: {self.uuid} (pk: {pk}) value: {self._value!r}>"

    def __format__(self, spec: str) -> str:
        return format(self._value, spec)


def _plain(value: Any) -> Any:
    return value._value if isinstance(value, BaseType) else value


def _wrap_number(value: Any) -> Any:
    if isinstance(value, bool):
        return Bool(value)
    if isinstance(value, int):
        return Int(value)
    if isinstance(value, float):
        return Float(value)
    return value


def _binary(op: Callable[[Any, Any], Any], reflected: bool = False) -> Callable[[Any, Any], Any]:
    def method(self: NumericType, other: Any) -> Any:
        other = _plain(other)
        if not isinstance(other, int | float):
            return NotImplemented
        result = op(other, self._value) if reflected else op(self._value, other)
        return _wrap_number(result)

    return method


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    def method(self: NumericType, other: Any) -> Any:
        other = _plain(other)
        if not isinstance(other, int | float):
            return NotImplemented
        return op(self._value, other)

    return method


class NumericType(BaseType, type_name="core.numeric"):
    """Arithmetic returns a new unstored ``Int`` or ``Float``; comparisons return ``bool``."""

    __add__ = _binary(lambda a, b: a + b)
    __radd__ = _binary(lambda a, b: a + b, reflected=True)
    __sub__ = _binary(lambda a, b: a - b)
    __rsub__ = _binary(lambda a, b: a - b, reflected=True)
    __mul__ = _binary(lambda a, b: a * b)
    __rmul__ = _binary(lambda a, b: a * b, reflected=True)
    __truediv__ = _binary(lambda a, b: a / b)
    __rtruediv__ = _binary(lambda a, b: a / b, reflected=True)
    __floordiv__ = _binary(lambda a, b: a // b)
    __rfloordiv__ = _binary(lambda a, b: a // b, reflected=True)
    __mod__ = _binary(lambda a, b: a % b)
    __rmod__ = _binary(lambda a, b: a % b, reflected=True)
    __pow__ = _binary(lambda a, b: a**b)
    __rpow__ = _binary(lambda a, b: a**b, reflected=True)
    __lt__ = _compare(lambda a, b: a < b)
    __le__ = _compare(lambda a, b: a <= b)
    __gt__ = _compare(lambda a, b: a > b)
    __ge__ = _compare(lambda a, b: a >= b)

    def __neg__(self) -> Any:
        return _wrap_number(-self._value)

    def __pos__(self) -> Any:
        return _wrap_number(+self._value)

    def __abs__(self) -> Any:
        return _wrap_number(abs(self._value))

    def __int__(self) -> int:
        return int(self._value)

    def __float__(self) -> float:
        return float(self._value)

    def __round__(self, ndigits: int | None = None) -> Any:
        return round(self._value, ndigits)

    def __bool__(self) -> bool:
        return bool(self._value)

    __hash__ = BaseType.__hash__


_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


class Int(NumericType, type_name="core.int"):
    """An integer."""

    _value_type = int

    def __init__(self, value: Any = None, **kwargs: Any) -> None:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"Int cannot hold the non-integral value {value!r}")
        super().__init__(value, **kwargs)

    def __index__(self) -> int:
        return int(self._value)

    def _to_attributes(self) -> Any:
        # msgpack holds 64-bit integers; a larger one is kept as its decimal string, which
        # ``_from_attributes`` turns back into the int (``int("...")``).
        if not _INT64_MIN <= self._value <= _UINT64_MAX:
            return str(self._value)
        return self._value


class Float(NumericType, type_name="core.float"):
    """A floating point number."""

    _value_type = float

    def __eq__(self, other: object) -> bool:
        other = _plain(other)
        if isinstance(self._value, float) and math.isnan(self._value):
            return isinstance(other, float) and math.isnan(other)
        return bool(self._value == other)

    __hash__ = BaseType.__hash__


class Str(BaseType, type_name="core.str"):
    """A string."""

    _value_type = str

    def __init__(self, value: Any = None, **kwargs: Any) -> None:
        super().__init__(value, **kwargs)
        check_text(self._value, "Str")

    def __len__(self) -> int:
        return len(self._value)

    def __contains__(self, item: object) -> bool:
        return _plain(item) in self._value

    def __lt__(self, other: object) -> bool:
        return bool(self._value < _plain(other))


class Bool(BaseType, type_name="core.bool"):
    """A boolean."""

    _value_type = bool

    def __bool__(self) -> bool:
        return bool(self._value)

    def __int__(self) -> int:
        return int(self._value)


class Dict(Data, type_name="core.dict"):
    """A dictionary with string keys and plain (msgpack-able) values; immutable once stored."""

    def __init__(
        self,
        value: Mapping[str, Any] | None = None,
        *,
        dict: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        content = dict if dict is not None else value
        if isinstance(content, Dict):
            content = content.get_dict()
        self._dict: builtins_dict[str, Any] = _check_plain_mapping(content or {}, "Dict")

    @property
    def value(self) -> builtins_dict[str, Any]:
        return self.get_dict()

    @property
    def dict(self) -> _AttributeView:
        """Attribute access to the keys: ``d.dict.key``."""
        return _AttributeView(self._dict)

    def get_dict(self) -> builtins_dict[str, Any]:
        """A deep copy of the content."""
        return _deep_copy(self._dict)  # type: ignore[no-any-return]

    def set_dict(self, value: Mapping[str, Any]) -> None:
        self._check_mutable()
        self._dict = _check_plain_mapping(value, "Dict")

    def update_dict(self, value: Mapping[str, Any]) -> None:
        self._check_mutable()
        self._dict.update(_check_plain_mapping(value, "Dict"))

    def keys(self) -> Any:
        return self._dict.keys()

    def values(self) -> Any:
        return self._dict.values()

    def items(self) -> Any:
        return self._dict.items()

    def get(self, key: str, default: Any = None) -> Any:
        return self._dict.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._dict[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_mutable()
        self._dict.update(_check_plain_mapping({key: value}, "Dict"))

    def __delitem__(self, key: str) -> None:
        self._check_mutable()
        del self._dict[key]

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Dict):
            return self._dict == other._dict
        return bool(self._dict == other)

    __hash__ = None  # type: ignore[assignment]

    def _to_attributes(self) -> Any:
        return self._dict

    @classmethod
    def _from_attributes(cls, attributes: Any) -> Self:
        obj = cls.__new__(cls)
        Data.__init__(obj)
        obj._dict = builtins_dict(attributes)
        return obj

    def __str__(self) -> str:
        return str(self._dict)

    def __repr__(self) -> str:
        pk = self._pk if self._pk is not None else "unstored"
        return f"<Dict: uuid: {self.uuid} (pk: {pk}) value: {self._dict!r}>"


class List(Data, type_name="core.list"):
    """A list of plain (msgpack-able) values; immutable once stored."""

    def __init__(self, value: Any = None, *, list: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        content = list if list is not None else value
        if isinstance(content, List):
            content = content.get_list()
        self._list: builtins_list[Any] = _check_plain_sequence(content or [], "List")

    @property
    def value(self) -> builtins_list[Any]:
        return self.get_list()

    def get_list(self) -> builtins_list[Any]:
        """A deep copy of the content."""
        return _deep_copy(self._list)  # type: ignore[no-any-return]

    def _attributes_view(self) -> builtins_dict[str, Any]:
        return {"list": self.get_list()}  # AiiDA's attribute name

    def set_list(self, value: Any) -> None:
        self._check_mutable()
        self._list = _check_plain_sequence(value, "List")

    def append(self, value: Any) -> None:
        self._check_mutable()
        self._list.extend(_check_plain_sequence([value], "List"))

    def extend(self, values: Any) -> None:
        self._check_mutable()
        self._list.extend(_check_plain_sequence(values, "List"))

    def insert(self, index: int, value: Any) -> None:
        self._check_mutable()
        self._list.insert(index, _check_plain_sequence([value], "List")[0])

    def remove(self, value: Any) -> None:
        self._check_mutable()
        self._list.remove(value)

    def pop(self, index: int = -1) -> Any:
        self._check_mutable()
        return self._list.pop(index)

    def sort(self, *, key: Any = None, reverse: bool = False) -> None:
        self._check_mutable()
        self._list.sort(key=key, reverse=reverse)

    def reverse(self) -> None:
        self._check_mutable()
        self._list.reverse()

    def index(self, value: Any) -> int:
        return self._list.index(value)

    def count(self, value: Any) -> int:
        return self._list.count(value)

    def __getitem__(self, index: Any) -> Any:
        return self._list[index]

    def __setitem__(self, index: int, value: Any) -> None:
        self._check_mutable()
        self._list[index] = _check_plain_sequence([value], "List")[0]

    def __delitem__(self, index: int) -> None:
        self._check_mutable()
        del self._list[index]

    def __len__(self) -> int:
        return len(self._list)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._list)

    def __contains__(self, value: object) -> bool:
        return value in self._list

    def __eq__(self, other: object) -> bool:
        if isinstance(other, List):
            return self._list == other._list
        return bool(self._list == other)

    __hash__ = None  # type: ignore[assignment]

    def _to_attributes(self) -> Any:
        return self._list

    @classmethod
    def _from_attributes(cls, attributes: Any) -> Self:
        obj = cls.__new__(cls)
        Data.__init__(obj)
        obj._list = builtins_list(attributes)
        return obj

    def __str__(self) -> str:
        return str(self._list)

    def __repr__(self) -> str:
        pk = self._pk if self._pk is not None else "unstored"
        return f"<List: uuid: {self.uuid} (pk: {pk}) value: {self._list!r}>"


builtins_dict = dict
builtins_list = list


class _AttributeView:
    """Read-only attribute access to a mapping (``Dict.dict.key``)."""

    def __init__(self, mapping: builtins_dict[str, Any]) -> None:
        self._mapping = mapping

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["_mapping"][key]
        except KeyError:
            raise AttributeError(f"the Dict has no key {key!r}") from None

    def __dir__(self) -> builtins_list[str]:
        return builtins_list(self._mapping)


_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)


def is_plain_value(value: Any) -> bool:
    """True for values a Dict or List can hold: scalars, and lists/dicts (str keys) of them."""
    if isinstance(value, _PLAIN_SCALARS):
        return True
    if isinstance(value, builtins_list | tuple):
        return all(is_plain_value(item) for item in value)
    if isinstance(value, builtins_dict):
        return all(isinstance(k, str) and is_plain_value(v) for k, v in value.items())
    return False


class DataValueError(MiniengineError, ValueError):
    """A value that a Data node cannot hold: nested deeper than :data:`MAX_NESTING`, a
    string that UTF-8 cannot encode (a lone surrogate), or an int beyond 64 bits in a container.
    Raised when the node is made, so nothing is stored; a process that wraps a plain input
    reports it naming the port."""


#: How deep the lists and dicts in a ``Dict`` or ``List`` may nest: far beyond real data, and
#: well within what the recursive copy, Python's recursion limit and the msgpack encoder (511
#: levels, some taken by a checkpoint's own wrapping) can take.
MAX_NESTING = 256


def check_text(text: str, what: str) -> None:
    """Refuse a string that cannot be stored as UTF-8 (it holds a lone surrogate)."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataValueError(
            f"{what} cannot hold a string with the lone surrogate U+{ord(text[exc.start]):04X} "
            f"(at index {exc.start}), which UTF-8 cannot encode; decode bytes with "
            "errors='replace', or keep binary data as bytes"
        ) from None


def check_field_text(text: str, what: str) -> None:
    """Refuse a label, description or comment that a database column cannot hold: a lone
    surrogate (:func:`check_text`) or NUL, which PostgreSQL's text refuses.  Refused on sqlite
    too, before anything is written, so that a database can be copied to PostgreSQL."""
    check_text(text, what)
    if "\x00" in text:
        raise DataValueError(
            f"{what} cannot hold the character NUL (at index {text.index(chr(0))}), which "
            "PostgreSQL cannot store (refused on any backend, so that databases can be copied)"
        )


#: The values that hold no text (so no NUL) and no other values.
_NO_TEXT = frozenset({int, float, bool, type(None), bytes})


def nul_path(content: Any) -> str | None:
    """Where the stored ``content`` of a Data node holds the character NUL, in a string or a
    mapping's key (``['k'][0]``, ``(in the key 'a\\x00')``; ``''`` for the content itself), or
    ``None``.  Iterative, as :func:`_check_storable`; most nodes are one scalar, checked at
    once."""
    if isinstance(content, str):
        return "" if "\x00" in content else None
    if not isinstance(content, dict | builtins_list | tuple):
        return None
    if type(content) is dict:  # the common node, a mapping of numbers: {'value': 3}
        for key, value in content.items():
            if type(value) not in _NO_TEXT or (type(key) is str and "\x00" in key):
                break
        else:
            return None
    stack: builtins_list[tuple[Any, str]] = [(content, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
        elif isinstance(item, dict):
            for key, value in item.items():
                if isinstance(key, str) and "\x00" in key:
                    return f"{path} (in the key {key!r})" if path else f"(in the key {key!r})"
                stack.append((value, f"{path}[{key!r}]"))
        elif isinstance(item, builtins_list | tuple):
            stack.extend((value, f"{path}[{index}]") for index, value in enumerate(item))
    return None


def check_no_nul(content: Any, what: str) -> None:
    """Refuse the stored ``content`` of a Data node (``what`` names it) holding NUL, which
    PostgreSQL's text and jsonb cannot hold; refused on every backend when a node is written,
    so that a database can be copied and archived into any other (nodes stored before this
    rule are still read)."""
    path = nul_path(content)
    if path is not None:
        where = "" if not path else f" {path}" if path.startswith("(") else f" at {path}"
        raise DataValueError(
            f"{what} holds the character NUL{where}, which PostgreSQL cannot store (refused "
            "on any backend, so that databases can be copied)"
        )


#: The ints that msgpack stores inside a ``Dict`` or ``List`` (an ``Int`` node holds any int).
_CONTAINER_INTS = range(-(2**63), 2**64)


def _check_storable(value: Any, what: str) -> None:
    """Refuse nesting deeper than :data:`MAX_NESTING`, strings UTF-8 cannot encode and ints
    that msgpack cannot store (beyond 64 bits), so that they fail here, naming the input, and
    not as a bare ``OverflowError`` when the node is stored.

    Iterative, so that a value nested thousands deep gives this error, not ``RecursionError``.
    """
    stack: builtins_list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            check_text(item, what)
        elif isinstance(item, int) and item not in _CONTAINER_INTS:
            raise DataValueError(
                f"{what} cannot hold the int {item}, which needs more than 64 bits; store it "
                "as an Int node of its own, or as a str"
            )
        elif isinstance(item, builtins_dict | builtins_list | tuple):
            if depth > MAX_NESTING:
                raise DataValueError(
                    f"{what} is nested more than {MAX_NESTING} levels deep (lists and dicts "
                    "inside one another); flatten it, or store the parts as separate nodes"
                )
            if isinstance(item, builtins_dict):
                for key, child in item.items():
                    if isinstance(key, str):
                        check_text(key, what)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_plain_mapping(value: Any, what: str) -> builtins_dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} needs a mapping, got {type(value).__name__}")
    _check_storable(builtins_dict(value), what)
    result = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} keys must be strings, got {key!r}")
        if not is_plain_value(item):
            raise TypeError(
                f"{what} cannot hold the value of {key!r} of type {type(item).__name__}: only "
                "None, bool, int, float, str, bytes and lists/dicts of them"
            )
        result[key] = _deep_copy(item)
    return result


def _check_plain_sequence(value: Any, what: str) -> builtins_list[Any]:
    if isinstance(value, str | bytes | Mapping) or not hasattr(value, "__iter__"):
        raise TypeError(f"{what} needs a sequence, got {type(value).__name__}")
    items = builtins_list(value)
    _check_storable(items, what)
    for index, item in enumerate(items):
        if not is_plain_value(item):
            raise TypeError(
                f"{what} cannot hold item {index} of type {type(item).__name__}: only None, "
                "bool, int, float, str, bytes and lists/dicts of them"
            )
    return [_deep_copy(item) for item in items]


def _deep_copy(value: Any) -> Any:
    if isinstance(value, builtins_dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, builtins_list | tuple):
        return [_deep_copy(v) for v in value]
    return value


def to_data(value: Any) -> Data:
    """Wrap a plain Python value in its Data type (``1 -> Int(1)``), or return Data unchanged.

    Raises ``TypeError`` for anything else; callers turn it into an error naming the port.
    """
    if isinstance(value, Data):
        return value
    if isinstance(value, bool):
        return Bool(value)
    if isinstance(value, int):
        return Int(value)
    if isinstance(value, float):
        return Float(value)
    if isinstance(value, str):
        return Str(value)
    if isinstance(value, builtins_dict):
        return Dict(value)
    if isinstance(value, builtins_list | tuple):
        return List(builtins_list(value))
    raise TypeError(f"a {type(value).__name__} cannot be converted to Data")


def load_data_from_attributes(
    type_name: str,
    attributes: Any,
    pk: int | None,
    uuid: str,
    label: str = "",
    description: str = "",
    store: Any = None,
) -> Data:
    """Rebuild a Data object from its stored form (used by the store and the codec)."""
    obj = data_class(type_name)._from_attributes(attributes)
    obj.label = label
    obj.description = description
    if pk is not None:
        obj._set_stored(pk, uuid, store)
    else:
        obj._uuid = uuid
    return obj
