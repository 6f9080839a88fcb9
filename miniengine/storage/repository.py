"""The file repository: content-addressed objects in a folder beside the database.

Files of ``SinglefileData``, ``FolderData`` and a CalcJob's retrieved output are stored once per
distinct content, under the sha256 of their bytes.  An object is written completely (to a
temporary file, flushed and renamed) **before** the database transaction that refers to it
commits, so a committed node never names a missing or partial file; a crash in between only
leaves an unreferenced object, which :meth:`Repository.maintain` removes after a grace period.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from miniengine.exceptions import StoreError

__all__ = ["Repository", "RepositoryError"]

_KEY = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class RepositoryError(StoreError):
    """An object is missing, corrupt, or the repository folder cannot be written."""


class Repository:
    """Objects under ``root/objects/<2 hex>/<62 hex>``; temporary files in ``root/tmp``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"

    @classmethod
    def for_database(cls, database: str | os.PathLike[str]) -> Repository:
        """The repository of a database file: ``engine.sqlite`` -> ``engine.repository/``."""
        path = Path(database)
        return cls(path.with_name(f"{path.stem}.repository"))

    def __repr__(self) -> str:
        return f"Repository({str(self.root)!r})"

    # writing ----------------------------------------------------------------------------------

    def put_object_from_filelike(self, stream: BinaryIO) -> str:
        """Store the rest of ``stream``; return its key (the sha256 of its content)."""
        self._make_folders()
        digest = hashlib.sha256()
        descriptor, temporary = _temporary_file(self._tmp)
        try:
            with os.fdopen(descriptor, "wb") as target:
                while chunk := stream.read(_CHUNK):
                    digest.update(chunk)
                    target.write(chunk)
                target.flush()
                os.fsync(target.fileno())
            key = digest.hexdigest()
            final = self._path(key)
            final.parent.mkdir(mode=0o700, exist_ok=True)
            if final.exists():
                # the same content is stored already; a fresh mtime keeps maintain() from
                # removing it before the transaction that now refers to it commits
                os.unlink(temporary)
                os.utime(final)
            else:
                os.replace(temporary, final)
                _fsync_folder(final.parent)
            return key
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise RepositoryError(f"cannot write to the repository {self.root}: {exc}") from exc

    def put_object_from_bytes(self, data: bytes) -> str:
        return self.put_object_from_filelike(io.BytesIO(data))

    def put_object_from_file(self, path: str | os.PathLike[str]) -> str:
        try:
            with open(path, "rb") as stream:
                return self.put_object_from_filelike(stream)
        except FileNotFoundError as exc:
            raise RepositoryError(f"no file {path} to store") from exc

    # reading ----------------------------------------------------------------------------------

    def has_object(self, key: str) -> bool:
        return self._path(key).is_file()

    def open(self, key: str) -> BinaryIO:
        """The object's content as a binary stream (close it, or use ``with``)."""
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise RepositoryError(f"the repository {self.root} has no object {key}") from None

    def get_object_content(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def get_object_size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise RepositoryError(f"the repository {self.root} has no object {key}") from None

    def copy_object_to(self, key: str, target: str | os.PathLike[str]) -> None:
        """Write the object's content to the file ``target``."""
        with self.open(key) as source, open(target, "wb") as destination:
            shutil.copyfileobj(source, destination, _CHUNK)

    def verify(self, key: str) -> bool:
        """Whether the object's content still hashes to its key (disk corruption check)."""
        digest = hashlib.sha256()
        with self.open(key) as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest() == key

    def modified_before(self, key: str, cutoff: float) -> bool:
        """Whether the object was last written (or stored again) before ``cutoff``."""
        return self._path(key).stat().st_mtime < cutoff

    def list_objects(self) -> Iterator[str]:
        if not self._objects.is_dir():
            return
        for shard in sorted(self._objects.iterdir()):
            for entry in sorted(shard.iterdir()):
                key = shard.name + entry.name
                if _KEY.match(key):
                    yield key

    # maintenance ------------------------------------------------------------------------------

    def delete_objects(self, keys: Iterable[str]) -> int:
        deleted = 0
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                self._path(key).unlink()
                deleted += 1
        return deleted

    def maintain(self, referenced: Iterable[str], grace_seconds: float = 3600.0) -> int:
        """Remove objects no node refers to and leftover temporary files, if older than
        ``grace_seconds`` (younger ones may belong to a transaction about to commit)."""
        keep = set(referenced)
        cutoff = time.time() - grace_seconds
        stale = [
            key
            for key in self.list_objects()
            if key not in keep and self.modified_before(key, cutoff)
        ]
        removed = self.delete_objects(stale)
        if self._tmp.is_dir():
            for leftover in self._tmp.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if leftover.stat().st_mtime < cutoff:
                        leftover.unlink()
        return removed

    # helpers ----------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"{key!r} is not a repository key (64 lowercase hex digits)")
        return self._objects / key[:2] / key[2:]

    def _make_folders(self) -> None:
        for folder in (self.root, self._objects, self._tmp):
            folder.mkdir(mode=0o700, exist_ok=True)


def _temporary_file(folder: Path) -> tuple[int, str]:
    name = folder / f"{os.getpid()}-{os.urandom(8).hex()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.open(name, flags, 0o600), str(name)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable: the folder's entry must reach the disk too."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
