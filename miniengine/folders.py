"""Folders that CalcJob plugins write their input files into (AiiDA's ``Folder`` and
``SandboxFolder``, with the methods plugins call).

Every name is relative to the folder and must stay inside it: ``../`` or an absolute path raises
``ValueError`` naming it, so a plugin (or an input it copies a name from) cannot write outside the
job's sandbox.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["Folder", "SandboxFolder"]


class Folder:
    """A folder on the local disk, addressed by names relative to it."""

    def __init__(self, abspath: str | os.PathLike[str], folder_limit: str | None = None) -> None:
        path = Path(abspath)
        if not path.is_absolute():
            raise ValueError(f"a Folder needs an absolute path, not {str(abspath)!r}")
        self._abspath = Path(os.path.normpath(path))
        limit = Path(os.path.normpath(folder_limit)) if folder_limit else self._abspath
        if not self._abspath.is_relative_to(limit):
            raise ValueError(f"{self._abspath} is outside the folder limit {limit}")
        self._limit = limit

    @property
    def abspath(self) -> str:
        return str(self._abspath)

    @property
    def folder_limit(self) -> str:
        return str(self._limit)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.abspath!r})"

    # paths ------------------------------------------------------------------------------------

    def get_abs_path(self, relpath: str | os.PathLike[str], check_existence: bool = False) -> str:
        """The absolute path of ``relpath``; ``ValueError`` if it leaves the folder."""
        name = os.fspath(relpath)
        if os.path.isabs(name):
            raise ValueError(f"{name!r} is absolute: names in a Folder are relative to it")
        path = Path(os.path.normpath(self._abspath / name))
        if not path.is_relative_to(self._limit):
            raise ValueError(f"{name!r} points outside the folder {self._limit}")
        if check_existence and not path.exists():
            raise FileNotFoundError(f"{name!r} does not exist in {self.abspath}")
        return str(path)

    def get_subfolder(
        self, subfolder: str, create: bool = False, reset_limit: bool = False
    ) -> Folder:
        """A Folder for ``subfolder`` (made if ``create``); it may not escape this one's limit."""
        path = self.get_abs_path(subfolder)
        child = Folder(path, folder_limit=path if reset_limit else str(self._limit))
        if create:
            child.create()
        return child

    def exists(self) -> bool:
        return self._abspath.is_dir()

    def isfile(self, relpath: str) -> bool:
        return os.path.isfile(self.get_abs_path(relpath))

    def isdir(self, relpath: str) -> bool:
        return os.path.isdir(self.get_abs_path(relpath))

    def get_content_list(self, pattern: str = "*", only_paths: bool = True) -> list[Any]:
        """The names directly in the folder matching ``pattern`` (with ``is_file`` flags if not
        ``only_paths``), sorted."""
        if not self.exists():
            return []
        names = sorted(name for name in os.listdir(self._abspath) if fnmatch.fnmatch(name, pattern))
        if only_paths:
            return names
        return [(name, os.path.isfile(self._abspath / name)) for name in names]

    # writing ----------------------------------------------------------------------------------

    def create(self) -> None:
        self._abspath.mkdir(mode=0o700, parents=True, exist_ok=True)

    def open(self, path: str, mode: str = "r", encoding: str | None = "utf8") -> IO[Any]:
        """Open a file in the folder, as ``open`` does (text mode is UTF-8 by default)."""
        target = self.get_abs_path(path)
        if any(flag in mode for flag in "wax+"):
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        if "b" in mode:
            return open(target, mode)
        return open(target, mode, encoding=encoding)

    def create_file_from_filelike(
        self, filelike: IO[Any], filename: str, mode: str = "wb", encoding: str | None = None
    ) -> str:
        """Copy the rest of ``filelike`` into ``filename``; return the file's absolute path."""
        if mode not in ("w", "wb"):
            raise ValueError(f"mode must be 'w' or 'wb', not {mode!r}")
        target = self.get_abs_path(filename)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        with open(target, mode, encoding=None if mode == "wb" else (encoding or "utf8")) as out:
            shutil.copyfileobj(filelike, out)
        return target

    def insert_path(
        self, src: str | os.PathLike[str], dest_name: str | None = None, overwrite: bool = True
    ) -> str:
        """Copy a local file or folder into this folder (as ``dest_name``, default its name)."""
        source = Path(src)
        if not source.is_absolute():
            raise ValueError(f"insert_path needs an absolute source path, not {str(src)!r}")
        target = Path(self.get_abs_path(dest_name or source.name))
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target.name!r} exists in {self.abspath}")
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=overwrite)
        else:
            shutil.copyfile(source, target)
        return str(target)

    def remove_path(self, filename: str) -> None:
        """Remove a file or folder from this folder; a missing one is not an error."""
        target = Path(self.get_abs_path(filename))
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()

    def erase(self, create_empty_folder: bool = False) -> None:
        if self.exists():
            shutil.rmtree(self._abspath)
        if create_empty_folder:
            self.create()

    def walk(self) -> list[str]:
        """Every file below the folder, as sorted names relative to it (``sub/name``)."""
        found = []
        for root, _, files in os.walk(self._abspath):
            for name in files:
                found.append(os.path.relpath(os.path.join(root, name), self._abspath))
        return sorted(found)


class SandboxFolder(Folder):
    """A private temporary Folder, removed when its ``with`` block ends."""

    def __init__(self, filepath: str | os.PathLike[str] | None = None) -> None:
        path = tempfile.mkdtemp(prefix="miniengine-sandbox-", dir=filepath)
        super().__init__(path)

    def __enter__(self) -> SandboxFolder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.erase()
