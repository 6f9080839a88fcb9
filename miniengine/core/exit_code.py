"""Exit codes, as in aiida-core: a named tuple of status, message and ``invalidates_cache``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

__all__ = ["ExitCode", "ExitCodesNamespace"]


class ExitCode(NamedTuple):
    """The exit status of a process; ``0`` means finished ok."""

    status: int = 0
    message: str | None = None
    invalidates_cache: bool = False

    def format(self, **kwargs: Any) -> ExitCode:
        """Return a copy whose message has ``kwargs`` substituted (``str.format`` placeholders)."""
        if self.message is None:
            return self
        try:
            message = self.message.format(**kwargs)
        except KeyError as exc:
            raise ValueError(
                f"exit code {self.status}: the message needs the parameter {exc}"
            ) from None
        return self._replace(message=message)


class ExitCodesNamespace:
    """The exit codes of a process class, by label: ``Proc.exit_codes.ERROR_X``."""

    def __init__(self, codes: dict[str, ExitCode] | None = None) -> None:
        self._codes: dict[str, ExitCode] = dict(codes or {})

    def __getattr__(self, label: str) -> ExitCode:
        try:
            return self.__dict__["_codes"][label]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(f"no exit code with the label {label!r}") from None

    def __getitem__(self, label: str) -> ExitCode:
        try:
            return self._codes[label]
        except KeyError:
            raise KeyError(f"no exit code with the label {label!r}") from None

    def __contains__(self, label: object) -> bool:
        return label in self._codes

    def __iter__(self) -> Iterator[str]:
        return iter(self._codes)

    def __len__(self) -> int:
        return len(self._codes)

    def __call__(self, identifier: int | str) -> ExitCode:
        """Look an exit code up by label or status."""
        if isinstance(identifier, str):
            return self[identifier]
        for code in self._codes.values():
            if code.status == identifier:
                return code
        raise ValueError(f"no exit code with the status {identifier}")

    def items(self) -> Iterator[tuple[str, ExitCode]]:
        return iter(self._codes.items())

    def __repr__(self) -> str:
        return f"ExitCodesNamespace({self._codes!r})"
