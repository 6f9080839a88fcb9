"""Dictionaries with attribute access: the WorkChain context and its (read-only) inputs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["AttributeDict", "FrozenAttributeDict"]


class AttributeDict(dict[str, Any]):
    """A dict whose keys are also attributes: ``self.ctx.total``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"the context has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(f"the context has no attribute {name!r}") from None

    def __dir__(self) -> list[str]:
        return list(self)


class FrozenAttributeDict(Mapping[str, Any]):
    """A read-only mapping with attribute access: ``self.inputs.x``.  Nested mappings are frozen
    too, so a step cannot change what the process was started with."""

    def __init__(self, content: Mapping[str, Any]) -> None:
        frozen = {
            key: FrozenAttributeDict(value)
            if isinstance(value, Mapping) and not hasattr(value, "pk")
            else value
            for key, value in content.items()
        }
        object.__setattr__(self, "_content", frozen)

    def __getattr__(self, name: str) -> Any:
        content = object.__getattribute__(self, "_content")
        if name in content:
            return content[name]
        raise AttributeError(f"there is no input {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"the inputs are read-only; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"the inputs are read-only; cannot delete {name!r}")

    def __getitem__(self, key: str) -> Any:
        return self._content[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._content)

    def __len__(self) -> int:
        return len(self._content)

    def __dir__(self) -> list[str]:
        return list(self._content)

    def __repr__(self) -> str:
        return f"FrozenAttributeDict({self._content!r})"

    def to_dict(self) -> dict[str, Any]:
        return {
            key: value.to_dict() if isinstance(value, FrozenAttributeDict) else value
            for key, value in self._content.items()
        }
