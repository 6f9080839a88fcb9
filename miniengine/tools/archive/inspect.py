"""Describing an archive without importing it (AiiDA's ``verdi archive info``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miniengine.exceptions import CorruptArchive

__all__ = ["ArchiveInfo", "inspect_archive"]

#: The order counts are shown in (any other count follows, by name).
_ORDER = ("nodes", "links", "groups", "group_nodes", "comments", "logs", "computers", "objects")


def _ordered(counts: dict[str, Any]) -> dict[str, int]:
    rank = {name: number for number, name in enumerate(_ORDER)}
    names = sorted(counts, key=lambda name: (rank.get(name, len(rank)), name))
    return {str(name): int(counts[name]) for name in names}


@dataclass(frozen=True)
class ArchiveInfo:
    """What an archive says it holds, and whether its checksums hold.

    ``checksum_ok`` is ``None`` when the members were not checked, else whether every member
    is present, unchanged and listed; ``problem`` says what is wrong when it is false.
    """

    path: Path
    format_version: int
    miniengine_version: str
    created: str
    counts: dict[str, int]
    groups: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    checksum_ok: bool | None = None
    problem: str | None = None

    @classmethod
    def from_metadata(
        cls,
        path: Path,
        metadata: dict[str, Any],
        *,
        checksum_ok: bool | None,
        problem: str | None = None,
    ) -> ArchiveInfo:
        counts = metadata.get("counts")
        groups = metadata.get("groups")
        return cls(
            path=path,
            format_version=int(metadata.get("format_version", 0)),
            miniengine_version=str(metadata.get("miniengine_version", "unknown")),
            created=str(metadata.get("created", "unknown")),
            counts=_ordered(counts) if isinstance(counts, dict) else {},
            groups=list(groups) if isinstance(groups, list) else [],
            size=path.stat().st_size if path.exists() else 0,
            checksum_ok=checksum_ok,
            problem=problem,
        )

    def as_dict(self) -> dict[str, Any]:
        """The info as plain JSON values."""
        return {
            "path": str(self.path),
            "format_version": self.format_version,
            "miniengine_version": self.miniengine_version,
            "created": self.created,
            "size": self.size,
            "counts": dict(self.counts),
            "groups": list(self.groups),
            "checksum_ok": self.checksum_ok,
            "problem": self.problem,
        }


def inspect_archive(path: str | os.PathLike[str], *, verify: bool = True) -> ArchiveInfo:
    """The format version, writer, creation time, counts and groups of the archive ``path``,
    and (``verify``, the default) whether every member's checksum holds.

    Raises :class:`~miniengine.exceptions.CorruptArchive` for a file that is no archive at all
    (not a zip, no readable ``metadata.json``) and
    :class:`~miniengine.exceptions.IncompatibleArchiveVersionError` for a newer format; a
    changed or missing member is reported in the result (``checksum_ok`` false).
    """
    from miniengine.tools.archive.format import ArchiveReader

    with ArchiveReader(path) as reader:
        checksum_ok: bool | None = None
        problem = None
        if verify:
            try:
                reader.verify()
                checksum_ok = True
            except CorruptArchive as exc:
                checksum_ok, problem = False, str(exc)
        return ArchiveInfo.from_metadata(
            reader.path, reader.metadata, checksum_ok=checksum_ok, problem=problem
        )
