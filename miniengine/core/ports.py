"""Ports and port namespaces: what a process accepts and returns.

A spec's inputs and outputs are :class:`PortNamespace` trees.  :meth:`PortNamespace.pre_process`
turns what a user passed (plain values, builders, nested dicts) into the process's inputs (defaults
filled in, serializers applied) and :meth:`PortNamespace.validate` returns the first problem as a
message naming the dotted port, so that bad input is refused before anything is stored.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from miniengine.core.data import Data, DataValueError
from miniengine.exceptions import InputValidationError

__all__ = [
    "NAMESPACE_SEPARATOR",
    "UNSPECIFIED",
    "InputPort",
    "OutputPort",
    "Port",
    "PortNamespace",
    "copy_port",
    "flatten_namespace",
    "unflatten_namespace",
]

#: Link labels join namespaces with this separator, as in AiiDA (``ns__port``).
NAMESPACE_SEPARATOR = "__"


class _Unspecified:
    def __repr__(self) -> str:
        return "UNSPECIFIED"

    def __bool__(self) -> bool:
        return False


UNSPECIFIED: Any = _Unspecified()

Validator = Callable[[Any, "Port"], str | None]
ValidType = type | tuple[type, ...] | None


def _type_names(valid_type: ValidType) -> str:
    if valid_type is None:
        return "anything"
    types = valid_type if isinstance(valid_type, tuple) else (valid_type,)
    return ", ".join(t.__name__ for t in types)


class Port:
    """One named input or output."""

    def __init__(
        self,
        name: str,
        *,
        valid_type: ValidType = None,
        required: bool = True,
        default: Any = UNSPECIFIED,
        validator: Validator | None = None,
        help: str | None = None,
        serializer: Callable[[Any], Any] | None = None,
        non_db: bool = False,
    ) -> None:
        if NAMESPACE_SEPARATOR in name or "." in name:
            raise ValueError(f"the port name {name!r} may not contain '.' or '__'")
        self.name = name
        self.valid_type = valid_type
        self.required = required
        self._default = default
        self.validator = validator
        self.help = help
        self.serializer = serializer
        self.non_db = non_db

    @property
    def has_default(self) -> bool:
        return self._default is not UNSPECIFIED

    @property
    def default(self) -> Any:
        return self._default

    @default.setter
    def default(self, value: Any) -> None:
        """Change the default of a declared port, as AiiDA plugins do in ``define``
        (``spec.inputs['metadata']['options']['resources'].default = {...}``); a port with a
        default is optional."""
        self._default = value
        if value is not UNSPECIFIED:
            self.required = False

    def get_default(self) -> Any:
        """The default; a callable default is called each time (``default=lambda: Int(1)``)."""
        if callable(self._default) and not isinstance(self._default, type | Data):
            return self._default()
        return self._default

    def serialize(self, value: Any) -> Any:
        """Apply the port's serializer, only to values that are not already Data."""
        if self.serializer is not None and not isinstance(value, Data):
            try:
                return self.serializer(value)
            except DataValueError as exc:
                raise InputValidationError(f"invalid value for '{self.name}': {exc}") from None
        return value

    def validate(self, value: Any, breadcrumb: str) -> str | None:
        if value is UNSPECIFIED:
            if self.required:
                return f"required value was not provided for '{breadcrumb}'"
            return None
        if self.valid_type is not None and not isinstance(value, self.valid_type):
            return (
                f"invalid type for '{breadcrumb}': got {type(value).__name__}, expected "
                f"{_type_names(self.valid_type)}"
            )
        if self.validator is not None:
            message = self.validator(value, self)
            if message:
                return f"invalid value for '{breadcrumb}': {message}"
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} valid_type={_type_names(self.valid_type)}>"


class InputPort(Port):
    """A port of a process's inputs; ``default`` makes it optional."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        if kwargs.get("default", UNSPECIFIED) is not UNSPECIFIED and "required" not in kwargs:
            kwargs["required"] = False
        super().__init__(name, **kwargs)


class OutputPort(Port):
    """A port of a process's outputs."""


class PortNamespace(Port):
    """A named group of ports, possibly nested, possibly *dynamic* (accepting any name)."""

    def __init__(
        self,
        name: str = "",
        *,
        dynamic: bool = False,
        valid_type: ValidType = None,
        required: bool = True,
        default: Any = UNSPECIFIED,
        validator: Validator | None = None,
        help: str | None = None,
        populate_defaults: bool = True,
        non_db: bool = False,
    ) -> None:
        self.name = name
        self.ports: dict[str, Port] = {}
        self.dynamic = dynamic or valid_type is not None
        self.valid_type = valid_type
        self.required = required
        self._default = default
        self.validator = validator
        self.help = help
        self.serializer = None
        self.populate_defaults = populate_defaults
        self.non_db = non_db

    # mapping of ports ------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Port:
        return self.ports[name]

    def __contains__(self, name: object) -> bool:
        return name in self.ports

    def __iter__(self) -> Iterator[str]:
        return iter(self.ports)

    def __len__(self) -> int:
        return len(self.ports)

    def keys(self) -> Any:
        return self.ports.keys()

    def items(self) -> Any:
        return self.ports.items()

    def add_port(self, port: Port) -> Port:
        self.ports[port.name] = port
        return port

    def get_port(self, dotted_name: str, create_dynamically: bool = False) -> Port:
        """The port at ``dotted_name``; with ``create_dynamically``, missing namespaces are made."""
        head, _, rest = dotted_name.partition(".")
        if head not in self.ports:
            if not create_dynamically:
                raise ValueError(f"the namespace '{self.name}' has no port '{head}'")
            self.ports[head] = PortNamespace(head) if rest else InputPort(head)
        port = self.ports[head]
        if not rest:
            return port
        if not isinstance(port, PortNamespace):
            raise ValueError(f"'{head}' is a port, not a namespace")
        return port.get_port(rest, create_dynamically)

    def create_namespace(self, dotted_name: str, **kwargs: Any) -> PortNamespace:
        """Create (or return) the namespace ``dotted_name``; kwargs apply to the innermost."""
        head, _, rest = dotted_name.partition(".")
        existing = self.ports.get(head)
        if rest:
            if existing is None:
                existing = self.ports[head] = PortNamespace(head)
            if not isinstance(existing, PortNamespace):
                raise ValueError(f"'{head}' is a port, not a namespace")
            return existing.create_namespace(rest, **kwargs)
        if existing is not None:
            if not isinstance(existing, PortNamespace):
                raise ValueError(f"'{head}' is a port, not a namespace")
            for key, value in kwargs.items():
                setattr(existing, key, value)
            if kwargs.get("valid_type") is not None:
                existing.dynamic = True
            return existing
        namespace = PortNamespace(head, **kwargs)
        self.ports[head] = namespace
        return namespace

    def absorb(
        self,
        other: PortNamespace,
        *,
        exclude: tuple[str, ...] = (),
        include: tuple[str, ...] | None = None,
    ) -> None:
        """Copy ports of ``other`` into this namespace (for ``expose_inputs``)."""
        for name, port in other.ports.items():
            if name in exclude or (include is not None and name not in include):
                continue
            self.ports[name] = copy_port(port)

    # processing values -----------------------------------------------------------------------

    def pre_process(self, values: Mapping[str, Any] | None, breadcrumb: str = "") -> dict[str, Any]:
        """Fill in defaults and apply serializers; the result is ready for :meth:`validate`."""
        result: dict[str, Any] = {}
        values = values or {}
        for key, value in values.items():
            port = self.ports.get(key)
            if isinstance(port, PortNamespace) and isinstance(value, Mapping):
                result[key] = port.pre_process(value, _join(breadcrumb, key))
            elif port is not None:
                result[key] = port.serialize(value)
            else:
                result[key] = value
        if self.populate_defaults:
            for name, port in self.ports.items():
                if name in result:
                    continue
                if isinstance(port, PortNamespace):
                    if port.has_default:
                        result[name] = port.get_default()
                    elif port.populate_defaults and _has_defaults(port):
                        result[name] = port.pre_process({}, _join(breadcrumb, name))
                elif port.has_default:
                    result[name] = port.get_default()
        return result

    def validate(self, value: Any, breadcrumb: str = "") -> str | None:
        """Return the first problem with ``value`` as a message naming the port, or ``None``."""
        if value is UNSPECIFIED:
            if self.required and any(p.required for p in self.ports.values()):
                return f"required value was not provided for '{breadcrumb or self.name}'"
            value = {}
        if not isinstance(value, Mapping):
            return (
                f"invalid type for '{breadcrumb or self.name}': a namespace needs a mapping, got "
                f"{type(value).__name__}"
            )
        for name, port in self.ports.items():
            message = port.validate(value.get(name, UNSPECIFIED), _join(breadcrumb, name))
            if message:
                return message
        for key, item in value.items():
            if key in self.ports:
                continue
            where = _join(breadcrumb, key)
            if not self.dynamic:
                known = ", ".join(sorted(self.ports)) or "none"
                return f"unexpected input '{where}' (the accepted ports are: {known})"
            if isinstance(key, str) and not _utf8(key):
                # it would become a link label, which the database stores as UTF-8
                return f"invalid input name {where!r}: it holds a lone surrogate (not UTF-8)"
            if self.valid_type is not None:
                if isinstance(item, Mapping) and not isinstance(item, Data):
                    message = PortNamespace(key, valid_type=self.valid_type).validate(item, where)
                    if message:
                        return message
                elif not isinstance(item, self.valid_type):
                    return (
                        f"invalid type for '{where}': got {type(item).__name__}, expected "
                        f"{_type_names(self.valid_type)}"
                    )
        if self.validator is not None and value:
            message = self.validator(value, self)
            if message:
                return f"invalid value for '{breadcrumb or self.name}': {message}"
        return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


P = TypeVar("P", bound=Port)


def copy_port(port: P) -> P:
    """A copy of ``port`` (namespaces recursively) that can be changed without changing it."""
    duplicate = copy.copy(port)
    if isinstance(port, PortNamespace):
        assert isinstance(duplicate, PortNamespace)
        duplicate.ports = {name: copy_port(sub) for name, sub in port.ports.items()}
    return duplicate


def _has_defaults(namespace: PortNamespace) -> bool:
    for port in namespace.ports.values():
        if port.has_default:
            return True
        if isinstance(port, PortNamespace) and _has_defaults(port):
            return True
    return False


def _join(breadcrumb: str, name: str) -> str:
    return f"{breadcrumb}.{name}" if breadcrumb else name


def flatten_namespace(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': x}} -> {'a__b': x}``: the link labels of nested inputs and outputs."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        label = f"{prefix}{NAMESPACE_SEPARATOR}{key}" if prefix else key
        if isinstance(value, Mapping) and not isinstance(value, Data):
            flat.update(flatten_namespace(value, label))
        else:
            flat[label] = value
    return flat


def unflatten_namespace(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten_namespace`."""
    nested: dict[str, Any] = {}
    for label, value in flat.items():
        parts = label.split(NAMESPACE_SEPARATOR)
        target = nested
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return nested
