"""``core.local``: the worker's own machine, through the file system and bash subprocesses.

File operations run in a worker thread (a slow or network file system must not block the loop);
commands run as subprocesses in a session of their own, so that a signal meant for the worker
does not reach a job's shell, and are terminated if the call is cancelled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from miniengine.transports.errors import TransportError, TransportFileNotFoundError
from miniengine.transports.transport import CommandResult, Transport

__all__ = ["LocalTransport"]

_T = TypeVar("_T")


class LocalTransport(Transport):
    """Files and commands on the machine the worker runs on (AiiDA's ``core.local``)."""

    def __init__(self, machine: str = "localhost", **params: object) -> None:
        super().__init__(machine, **params)
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def exec_command_wait(
        self, command: str, *, stdin: str | bytes | None = None, workdir: str | None = None
    ) -> CommandResult:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        try:
            completed = await anyio.run_process(
                self._shell(command, workdir),
                input=data if data is not None else b"",
                check=False,
                start_new_session=True,
            )
        except OSError as exc:
            raise TransportError(f"{self}: cannot run bash: {exc}") from exc
        return CommandResult(
            completed.returncode,
            completed.stdout.decode(errors="replace"),
            completed.stderr.decode(errors="replace"),
        )

    async def makedirs(self, path: str, ignore_existing: bool = False) -> None:
        target = self._absolute(path)
        await self._file_op(lambda: os.makedirs(target, mode=0o700, exist_ok=ignore_existing), path)

    async def put(self, localpath: str | PathLike[str], remotepath: str) -> None:
        await self._file_op(
            lambda: _copy(Path(localpath), Path(self._absolute(remotepath))), localpath
        )

    async def get(self, remotepath: str, localpath: str | PathLike[str]) -> None:
        await self._file_op(
            lambda: _copy(Path(self._absolute(remotepath)), Path(localpath)), remotepath
        )

    async def read_bytes(self, path: str) -> bytes:
        return await self._file_op(Path(self._absolute(path)).read_bytes, path)

    async def write_bytes(self, path: str, data: bytes) -> None:
        target = self._absolute(path)
        await self._file_op(lambda: _atomic_write(target, data), path)

    async def listdir(self, path: str) -> list[str]:
        return await self._file_op(lambda: sorted(os.listdir(self._absolute(path))), path)

    async def isdir(self, path: str) -> bool:
        return await anyio.to_thread.run_sync(os.path.isdir, self._absolute(path))

    async def isfile(self, path: str) -> bool:
        return await anyio.to_thread.run_sync(os.path.isfile, self._absolute(path))

    async def remove(self, path: str) -> None:
        await self._file_op(lambda: os.remove(self._absolute(path)), path)

    async def rmtree(self, path: str) -> None:
        target = self._absolute(path)
        await self._file_op(
            lambda: shutil.rmtree(target) if os.path.lexists(target) else None, path
        )

    async def _file_op(self, operation: Callable[[], _T], path: object) -> _T:
        try:
            return await anyio.to_thread.run_sync(operation)
        except FileNotFoundError as exc:
            raise TransportFileNotFoundError(f"{self}: no such file or folder: {path}") from exc
        except OSError as exc:
            raise TransportError(f"{self}: {exc.strerror or exc} ({path})") from exc


def _copy(source: Path, destination: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, destination, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, destination)


def _atomic_write(target: str, data: bytes) -> None:
    folder = os.path.dirname(target)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".miniengine-")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
