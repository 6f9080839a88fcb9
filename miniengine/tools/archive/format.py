"""The archive file: a zip of ``metadata.json``, ``db.sqlite`` and ``repo/<sha256>`` members.

``metadata.json`` holds the format version, the miniengine version and time that wrote the file,
its counts and groups, and the sha256 of every other member; the zip's comment holds the sha256
of ``metadata.json`` itself (the seal).  Reading checks, in this order and before anything is
imported: that the file is a zip with a ``metadata.json`` of a format this code reads, the seal,
that the members are exactly those listed, and every member's checksum (which also reads every
byte through the zip's own CRC).  Each failure is a :class:`~miniengine.exceptions.CorruptArchive`
(or :class:`~miniengine.exceptions.IncompatibleArchiveVersionError`) naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from miniengine.exceptions import ArchiveError, CorruptArchive, IncompatibleArchiveVersionError
from miniengine.storage.archive_file import FORMAT_VERSION

__all__ = [
    "DATABASE",
    "FORMAT",
    "METADATA",
    "ArchiveReader",
    "add_member",
    "object_member",
    "seal",
]

FORMAT = "miniengine-archive"
METADATA = "metadata.json"
DATABASE = "db.sqlite"
_OBJECTS = "repo/"
_SEAL = b"miniengine-archive metadata sha256="
_CHUNK = 1 << 20
#: The errors a damaged zip member raises while it is read.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError)


def object_member(key: str) -> str:
    """The member holding the repository object ``key``."""
    return f"{_OBJECTS}{key}"


def seal(metadata: bytes) -> bytes:
    """The zip comment that seals ``metadata.json``."""
    return _SEAL + hashlib.sha256(metadata).hexdigest().encode()


def add_member(archive: zipfile.ZipFile, name: str, stream: IO[bytes]) -> str:
    """Write ``stream`` to the member ``name``; return its sha256."""
    digest = hashlib.sha256()
    with archive.open(name, "w", force_zip64=True) as member:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            member.write(chunk)
    return digest.hexdigest()


class ArchiveReader:
    """An archive opened for reading: its metadata parsed and its format version checked (the
    members are checked by :meth:`verify`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.shown = str(self.path)
        if not self.path.is_file():
            raise ArchiveError(f"{self.shown}: no such archive file")
        try:
            self.zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise CorruptArchive(
                f"{self.shown} is not a miniengine archive: not a zip file, or a truncated one "
                f"({exc})"
            ) from exc
        try:
            self.metadata_bytes = self._read_metadata()
            self.metadata = self._parse(self.metadata_bytes)
        except BaseException:
            self.zip.close()
            raise

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_metadata(self) -> bytes:
        try:
            return self.zip.read(METADATA)
        except KeyError:
            raise CorruptArchive(
                f"{self.shown} is not a miniengine archive: it has no {METADATA}"
            ) from None
        except _DAMAGED as exc:
            raise CorruptArchive(f"{self.shown}: its {METADATA} is damaged ({exc})") from exc

    def _parse(self, data: bytes) -> dict[str, Any]:
        try:
            metadata = json.loads(data)
        except ValueError as exc:
            raise CorruptArchive(f"{self.shown}: its {METADATA} is not JSON ({exc})") from exc
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            raise CorruptArchive(
                f"{self.shown} is not a miniengine archive: its {METADATA} does not say "
                f'"format": "{FORMAT}"'
            )
        version = metadata.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CorruptArchive(f"{self.shown}: its format version {version!r} is not valid")
        if version > FORMAT_VERSION:
            writer = metadata.get("miniengine_version", "a newer miniengine")
            raise IncompatibleArchiveVersionError(
                f"{self.shown} has archive format version {version} (written by miniengine "
                f"{writer}); this miniengine reads up to version {FORMAT_VERSION}: upgrade "
                "miniengine to import it"
            )
        members = metadata.get("members")
        if not isinstance(members, dict) or not all(
            isinstance(name, str) and isinstance(digest, str) for name, digest in members.items()
        ):
            raise CorruptArchive(f"{self.shown}: its {METADATA} lists no member checksums")
        return metadata

    @property
    def members(self) -> dict[str, str]:
        """The members other than ``metadata.json`` and their sha256, as the metadata says."""
        members: dict[str, str] = self.metadata["members"]
        return members

    def verify(self, extract_database_to: Path | None = None) -> None:
        """Check the seal, the list of members and every member's checksum; with
        ``extract_database_to``, write the database there on the way (it is read once)."""
        if self.zip.comment != seal(self.metadata_bytes):
            raise CorruptArchive(
                f"{self.shown}: {METADATA} does not match the archive's seal (its checksum in "
                "the zip comment): the file was changed after it was written"
            )
        names = [info.filename for info in self.zip.infolist()]
        if len(names) != len(set(names)):
            raise CorruptArchive(f"{self.shown}: a member appears twice in the zip")
        present = set(names) - {METADATA}
        missing = sorted(set(self.members) - present)
        if missing:
            raise CorruptArchive(
                f"{self.shown}: the member {missing[0]} is missing"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + "; the file is truncated or was changed"
            )
        unexpected = sorted(present - set(self.members))
        if unexpected:
            raise CorruptArchive(
                f"{self.shown}: the member {unexpected[0]} is not listed in {METADATA}; the "
                "file was changed after it was written"
            )
        if DATABASE not in self.members:
            raise CorruptArchive(f"{self.shown}: it has no {DATABASE}")
        for name in names:
            if name == METADATA:
                continue
            if name == DATABASE and extract_database_to is not None:
                with open(extract_database_to, "wb") as target:
                    self._check_member(name, target)
            else:
                self._check_member(name, None)

    def _check_member(self, name: str, copy_to: IO[bytes] | None) -> None:
        digest = hashlib.sha256()
        try:
            with self.zip.open(name) as member:
                while chunk := member.read(_CHUNK):
                    digest.update(chunk)
                    if copy_to is not None:
                        copy_to.write(chunk)
        except _DAMAGED as exc:
            raise CorruptArchive(f"{self.shown}: the member {name} is damaged ({exc})") from exc
        expected = self.members[name]
        if digest.hexdigest() != expected:
            raise CorruptArchive(
                f"{self.shown}: the member {name} was changed after the archive was written "
                f"(its sha256 is {digest.hexdigest()}, {METADATA} says {expected})"
            )
        if name.startswith(_OBJECTS) and name[len(_OBJECTS) :] != expected:
            raise CorruptArchive(
                f"{self.shown}: the member {name} does not hold the object its name says "
                f"(its content hashes to {expected})"
            )

    @contextmanager
    def open_object(self, key: str) -> Iterator[IO[bytes]]:
        """The content of the repository object ``key`` (checked by :meth:`verify`)."""
        name = object_member(key)
        if name not in self.members:
            raise CorruptArchive(
                f"{self.shown}: a node names the repository object {key}, which the archive "
                "does not hold"
            )
        try:
            with self.zip.open(name) as member:
                yield member
        except _DAMAGED as exc:
            raise CorruptArchive(f"{self.shown}: the member {name} is damaged ({exc})") from exc


def remove_tree(path: Path) -> None:
    """Remove a temporary folder, whatever is left in it."""
    shutil.rmtree(path, ignore_errors=True)
