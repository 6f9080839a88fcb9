"""Process builders: ``builder = Proc.get_builder(); builder.x = Int(1); run(builder)``.

A builder is a tree of namespaces mirroring the process's input ports, so that names complete in
a shell or notebook; assigning to a port runs its serializer (only on values that are not Data
yet) and then validates the value, and assigning to an unknown name in a non-dynamic namespace
fails at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from miniengine.core.data import Data
from miniengine.core.ports import PortNamespace
from miniengine.exceptions import InputValidationError

__all__ = ["ProcessBuilder", "ProcessBuilderNamespace"]


class ProcessBuilderNamespace(MutableMapping[str, Any]):
    """One namespace of a builder."""

    def __init__(self, port_namespace: PortNamespace, path: str = "") -> None:
        object.__setattr__(self, "_port_namespace", port_namespace)
        object.__setattr__(self, "_path", path)  # the dotted name of this namespace
        data: dict[str, Any] = {}
        for name, port in port_namespace.ports.items():
            if isinstance(port, PortNamespace):
                data[name] = ProcessBuilderNamespace(port, _join(path, name))
        object.__setattr__(self, "_data", data)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        self[name] = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        data = object.__getattribute__(self, "_data")
        try:
            return data[name]
        except KeyError:
            namespace = object.__getattribute__(self, "_port_namespace")
            port = namespace.ports.get(name)
            if port is not None:
                # An unset port reads as its default, or None, as in AiiDA.
                return port.default if port.has_default else None
            raise AttributeError(f"the namespace '{namespace.name}' has no port {name!r}") from None

    def __setitem__(self, name: str, value: Any) -> None:
        namespace: PortNamespace = self._port_namespace
        if "." in name:
            head, _, rest = name.partition(".")
            target = self._data.get(head)
            if target is None:
                if head not in namespace.ports and not namespace.dynamic:
                    raise AttributeError(f"the namespace '{namespace.name}' has no port {head!r}")
                target = self._data[head] = ProcessBuilderNamespace(
                    PortNamespace(head, dynamic=True), _join(self._path, head)
                )
            if not isinstance(target, ProcessBuilderNamespace):
                raise AttributeError(f"'{head}' is a port, not a namespace")
            target[rest] = value
            return
        port = namespace.ports.get(name)
        if port is None and not namespace.dynamic:
            known = ", ".join(sorted(namespace.ports)) or "none"
            raise AttributeError(
                f"the namespace '{namespace.name}' has no port {name!r} (ports: {known})"
            )
        if isinstance(port, PortNamespace):
            if not isinstance(value, Mapping):
                raise ValueError(f"'{name}' is a namespace: assign a mapping to it")
            sub = ProcessBuilderNamespace(port, _join(self._path, name))
            for key, item in value.items():
                sub[key] = item
            self._data[name] = sub
            return
        if port is not None:
            if not isinstance(value, Data):
                value = port.serialize(value)
            if value is not None:
                # Checked at once, as AiiDA's builders do; None leaves the port unset.
                message = port.validate(value, _join(self._path, name))
                if message:
                    raise InputValidationError(message)
        self._data[name] = value

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __delitem__(self, name: str) -> None:
        del self._data[name]

    def __delattr__(self, name: str) -> None:
        try:
            del self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __dir__(self) -> list[str]:
        return sorted(set(self._port_namespace.ports) | set(self._data))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ProcessBuilderNamespace):
            other = other._inputs(prune=False)
        return self._inputs(prune=False) == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inputs(prune=False)!r})"

    def _update(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, Mapping) and isinstance(
                self._data.get(key), ProcessBuilderNamespace
            ):
                self._data[key]._update(value)
            else:
                self[key] = value

    def _inputs(self, prune: bool = True) -> dict[str, Any]:
        """The assigned values as nested dicts; ``prune`` drops empty namespaces."""
        result: dict[str, Any] = {}
        for key, value in self._data.items():
            if isinstance(value, ProcessBuilderNamespace):
                nested = value._inputs(prune)
                if nested or not prune:
                    result[key] = nested
            else:
                result[key] = value
        return result


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class ProcessBuilder(ProcessBuilderNamespace):
    """The builder of one process class; pass it to ``run``/``submit``."""

    def __init__(self, process_class: Any) -> None:
        super().__init__(process_class.spec().inputs)
        object.__setattr__(self, "_process_class", process_class)

    @property
    def process_class(self) -> Any:
        return self._process_class
