"""The spec of a process function, derived from its Python signature.

Each named parameter becomes an input port (type hints become valid types, signature defaults --
values or callables -- make it optional), ``*args`` become inputs ``<name>_0, <name>_1, ...``,
``**kwargs`` make the input namespace dynamic, and a ``metadata`` namespace carries ``label``,
``description``, ``store_provenance`` and ``call_link_label``.  Binding a call checks everything
before any node exists, with errors that name the argument.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from miniengine.core.data import (
    Bool,
    Data,
    DataValueError,
    Dict,
    Float,
    Int,
    List,
    Str,
    check_field_text,
    check_no_nul,
    to_data,
)
from miniengine.core.ports import UNSPECIFIED, InputPort, PortNamespace
from miniengine.exceptions import InputValidationError, MiniengineError

__all__ = ["FunctionSpec", "Metadata", "metadata_namespace"]

_PLAIN_TO_DATA: dict[Any, type[Data]] = {
    int: Int,
    float: Float,
    str: Str,
    bool: Bool,
    dict: Dict,
    list: List,
}


class VarArgsLabelClash(MiniengineError, RuntimeError):
    """An ``*args`` input label collides with a named input (AiiDA raises RuntimeError)."""


class TooManyArguments(MiniengineError, TypeError):
    """More positional arguments than the function accepts."""


@dataclass(frozen=True)
class Metadata:
    """The ``metadata`` inputs of a launch."""

    label: str = ""
    description: str = ""
    store_provenance: bool = True
    call_link_label: str = "CALL"


def _check_str(value: Any, port: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a str, got {type(value).__name__}"


def metadata_namespace() -> PortNamespace:
    """The ``metadata`` namespace every process accepts."""
    namespace = PortNamespace("metadata", required=False, populate_defaults=False, non_db=True)
    namespace.add_port(InputPort("label", valid_type=str, required=False, non_db=True))
    namespace.add_port(InputPort("description", valid_type=str, required=False, non_db=True))
    namespace.add_port(InputPort("store_provenance", valid_type=bool, required=False, non_db=True))
    namespace.add_port(InputPort("call_link_label", valid_type=str, required=False, non_db=True))
    return namespace


def parse_metadata(value: Any, owner: str) -> Metadata:
    if value is None or value is UNSPECIFIED:
        return Metadata()
    message = metadata_namespace().validate(value, "metadata")
    if message:
        raise InputValidationError(f"{owner}: {message}")
    for key in ("label", "description", "call_link_label"):
        text = value.get(key)
        if isinstance(text, str):
            try:
                check_field_text(text, f"metadata.{key}")
            except DataValueError as exc:
                raise InputValidationError(f"{owner}: {exc}") from None
    return Metadata(**value)


def valid_type_from_annotation(annotation: Any) -> type | tuple[type, ...] | None:
    """Map a type hint to Data types: ``int -> Int``, ``Int | None -> (Int, NoneType)``; an
    annotation that names no Data type gives ``None`` (the port then accepts any Data)."""
    if annotation is inspect.Parameter.empty:
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        members: list[type] = []
        for arg in typing.get_args(annotation):
            mapped = valid_type_from_annotation(arg) if arg is not type(None) else type(None)
            if mapped is None:
                return None
            members.extend(mapped if isinstance(mapped, tuple) else (mapped,))
        return tuple(dict.fromkeys(members))
    if annotation in _PLAIN_TO_DATA:
        return _PLAIN_TO_DATA[annotation]
    if origin in (dict, list):  # typing.Dict, typing.List, dict[str, int], list[int]
        return _PLAIN_TO_DATA[origin]
    if isinstance(annotation, type) and issubclass(annotation, Data):
        return annotation
    return None


class FunctionSpec:
    """Ports of a process function and the binding of call arguments to them."""

    def __init__(self, func: Callable[..., Any], name: str) -> None:
        self.name = name
        self.signature = inspect.signature(func)
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # unresolvable forward references: fall back to "any Data"
            hints = {}
        self.inputs = PortNamespace("inputs")
        self.outputs = PortNamespace("outputs", dynamic=True, valid_type=Data)
        self.positional: list[str] = []
        self.var_positional: str | None = None
        self.var_keyword: str | None = None
        # A ``metadata`` parameter is not an input: its default (a dict, as in AiiDA) holds the
        # default label, description, ... of every run.
        self.default_metadata: dict[str, Any] = {}
        for parameter in self.signature.parameters.values():
            kind = parameter.kind
            if parameter.name == "metadata" and kind not in (
                parameter.VAR_POSITIONAL,
                parameter.VAR_KEYWORD,
            ):
                if kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                    self.positional.append(parameter.name)
                if isinstance(parameter.default, Mapping):
                    message = metadata_namespace().validate(parameter.default, "metadata")
                    if message:
                        raise InputValidationError(
                            f"{name}(): the default of the metadata parameter is invalid: {message}"
                        )
                    self.default_metadata = dict(parameter.default)
                continue
            if kind is parameter.VAR_POSITIONAL:
                self.var_positional = parameter.name
                continue
            if kind is parameter.VAR_KEYWORD:
                self.var_keyword = parameter.name
                self.inputs.dynamic = True
                continue
            if kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                self.positional.append(parameter.name)
            valid_type = valid_type_from_annotation(hints.get(parameter.name, parameter.empty))
            if valid_type is None:
                valid_type = Data
            default = parameter.default
            port = InputPort(
                parameter.name,
                valid_type=valid_type,
                serializer=to_data,
                required=default is parameter.empty,
            )
            if default is not parameter.empty and default is not None:
                port._default = default
            self.inputs.add_port(port)
        if self.var_positional is not None:
            self.inputs.dynamic = True
        self.inputs.add_port(metadata_namespace())

    def bind(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[dict[str, Any], Metadata]:
        """Turn a call's arguments into validated, wrapped inputs (and its metadata).

        Raises ``TypeError`` for too many positional arguments or an argument given twice,
        ``RuntimeError`` for an ``*args`` label clash, and ``InputValidationError`` (a
        ``ValueError``) for an unknown, missing, unconvertible or wrong-typed input.
        """
        raw: dict[str, Any] = {}
        n_named = len(self.positional)
        for name, value in zip(self.positional, args, strict=False):
            raw[name] = value
        extra = args[n_named:]
        if extra:
            if self.var_positional is None:
                raise TooManyArguments(
                    f"{self.name}() takes {n_named} positional argument"
                    f"{'s' if n_named != 1 else ''} but {len(args)} were given"
                )
            for index, value in enumerate(extra):
                label = f"{self.var_positional}_{index}"
                if label in kwargs or label in self.inputs:
                    raise VarArgsLabelClash(
                        f"{self.name}(): the *{self.var_positional} input label {label!r} clashes "
                        "with a keyword argument or parameter of the same name"
                    )
                raw[label] = value
        for key, value in kwargs.items():
            if key in raw:
                raise TypeError(f"{self.name}() got multiple values for argument {key!r}")
            raw[key] = value
        given_metadata = raw.pop("metadata", None)
        if isinstance(given_metadata, Mapping):
            given_metadata = {**self.default_metadata, **given_metadata}
        elif given_metadata is None and self.default_metadata:
            given_metadata = self.default_metadata
        metadata = parse_metadata(given_metadata, f"{self.name}()")
        if not isinstance(given_metadata, Mapping) or "label" not in given_metadata:
            # As in AiiDA, a process function's node is labelled with the function's name.
            metadata = dataclasses.replace(metadata, label=self.name)
        inputs: dict[str, Any] = {}
        for key, value in raw.items():
            port = self.inputs.ports.get(key)
            if port is None and not self.inputs.dynamic:
                known = ", ".join(p for p in self.inputs.ports if p != "metadata")
                raise InputValidationError(
                    f"{self.name}(): unexpected input '{key}' (the accepted inputs are: {known})"
                )
            if value is None and port is not None and not port.required:
                continue  # an explicit None for an optional parameter means "not given"
            if port is None and isinstance(value, Mapping) and not isinstance(value, Data):
                # A mapping given to **kwargs is a nested namespace, as in AiiDA: its leaves
                # must already be Data (plain values are wrapped only at the top level).
                inputs[key] = self._check_namespace(value, key)
                continue
            try:
                inputs[key] = data = to_data(value)
                if not data.is_stored:  # refused here, naming the input, not when stored
                    check_no_nul(data._to_attributes(), f"the {type(data).__name__} node")
            except DataValueError as exc:
                raise InputValidationError(
                    f"{self.name}(): the input '{key}' cannot be stored: {exc}"
                ) from None
            except TypeError as exc:
                raise InputValidationError(
                    f"{self.name}(): the input '{key}' cannot be stored: {exc}; pass a Data node "
                    "or a plain int, float, str, bool, dict or list"
                ) from None
        for name, port in self.inputs.ports.items():
            if name not in inputs and port.has_default:
                try:
                    inputs[name] = to_data(port.get_default())
                except TypeError as exc:
                    raise InputValidationError(
                        f"{self.name}(): the default of '{name}' cannot be stored: {exc}"
                    ) from None
        message = self.inputs.validate(inputs)
        if message:
            raise InputValidationError(f"{self.name}(): {message}")
        return inputs, metadata

    def _check_namespace(self, values: Mapping[str, Any], breadcrumb: str) -> dict[str, Any]:
        """Check a nested namespace given to ``**kwargs``: string keys and Data leaves."""
        checked: dict[str, Any] = {}
        for key, value in values.items():
            where = f"{breadcrumb}.{key}"
            if not isinstance(key, str):
                raise InputValidationError(
                    f"{self.name}(): the names in the namespace '{breadcrumb}' must be strings"
                )
            if isinstance(value, Mapping) and not isinstance(value, Data):
                checked[key] = self._check_namespace(value, where)
            elif isinstance(value, Data):
                checked[key] = value
            else:
                raise InputValidationError(
                    f"{self.name}(): the input '{where}' is of type {type(value).__name__}, "
                    "not Data: plain values are wrapped only at the top level; pass a Data node "
                    "in a nested namespace"
                )
        return checked

    def call_arguments(self, inputs: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The ``(args, kwargs)`` to call the function with, from bound inputs."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        parameters = self.signature.parameters
        positional_done = True
        for name in self.positional:
            if name in inputs and positional_done:
                args.append(inputs[name])
            elif name in inputs:
                kwargs[name] = inputs[name]
            else:
                positional_done = False
                default = parameters[name].default
                if self.var_positional is not None and default is not inspect.Parameter.empty:
                    args.append(default)
                    positional_done = True
        if self.var_positional is not None:
            index = 0
            while f"{self.var_positional}_{index}" in inputs:
                args.append(inputs[f"{self.var_positional}_{index}"])
                index += 1
        for name, value in inputs.items():
            if name in self.positional:
                continue
            if self.var_positional is not None and _is_vararg_label(name, self.var_positional):
                continue
            kwargs[name] = value
        return tuple(args), kwargs


def _is_vararg_label(label: str, prefix: str) -> bool:
    head, _, index = label.rpartition("_")
    return head == prefix and index.isdigit()
