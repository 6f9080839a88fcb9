"""The computers concern of a backend (see :mod:`miniengine.storage.interfaces`).

Computers live apart from the provenance graph (they are configured and edited, never linked);
the nodes that run on one (codes, ``RemoteData``) refer to it, so that a computer still in use
cannot be deleted.  Codes are Data nodes; this concern finds them by label and computer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from miniengine.exceptions import ValidationError
from miniengine.storage.interfaces.transaction import Transaction

__all__ = ["CODE_TYPES", "CodeRow", "ComputerInUseError", "ComputerRow", "Computers"]

#: The node types of codes.
CODE_TYPES = ("core.code.installed", "core.code.portable")


class ComputerInUseError(ValidationError):
    """A computer that codes or ``RemoteData`` nodes refer to cannot be deleted."""


@dataclass(frozen=True)
class ComputerRow:
    """One stored computer; ``configuration`` is ``None`` until the computer is configured."""

    pk: int
    uuid: str
    label: str
    hostname: str
    description: str
    transport_type: str
    scheduler_type: str
    metadata: dict[str, Any]
    configuration: dict[str, Any] | None
    ctime: float
    mtime: float


class CodeRow(NamedTuple):
    """A stored code as ``code list`` shows it."""

    pk: int
    node_type: str
    label: str
    #: the label of its computer (``None`` for a portable code)
    computer_label: str | None


class Computers(Protocol):
    """Store, edit, delete and find computers, and find codes by label."""

    @property
    def insert_computer(
        self,
    ) -> Transaction[
        [str, str, str, str, str, str, dict[str, Any], dict[str, Any] | None], tuple[int, float]
    ]:
        """``(uuid, label, hostname, description, transport type, scheduler type, metadata,
        configuration)``: store a computer; returns its pk and creation time.  A label that
        another computer has is refused (``ValidationError``) by name."""
        ...

    @property
    def update_computer(self) -> Transaction[[int, dict[str, Any]], None]:
        """``(pk, fields)``: set some fields of a stored computer (label, hostname,
        description, transport_type, scheduler_type, metadata, configuration)."""
        ...

    @property
    def delete_computer(self) -> Transaction[[int], None]:
        """``(pk)``: delete a computer; :class:`ComputerInUseError` while any node refers to
        it."""
        ...

    def read_computer(self, identifier: int | str) -> ComputerRow:
        """A computer by pk (an int), or by label, uuid or unique uuid prefix (a str).

        ``NotExistent`` when nothing matches; ``MultipleObjectsError`` for an ambiguous
        prefix."""
        ...

    def read_computers(self) -> list[ComputerRow]:
        """Every stored computer, oldest first."""
        ...

    def code_pks(self, label: str, computer_label: str | None) -> list[int]:
        """The pks of the codes labelled ``label`` (on the computer ``computer_label`` if
        given), oldest first."""
        ...

    def code_rows(self) -> list[CodeRow]:
        """Every stored code, oldest first."""
        ...
