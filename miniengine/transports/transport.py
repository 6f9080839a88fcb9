"""The transport plugin interface: files and commands on a computer, local or remote.

Every method is a coroutine: a worker drives hundreds of jobs on one event loop, and a slow
file system or network must never block it.  Cancelling a call (a kill) ends what it started:
a command's process is terminated, a transfer is abandoned.  Paths on the computer are absolute
POSIX paths; a transport has no current directory (commands take ``workdir``).

A transport is opened once and shared by every job of its computer in a worker (see
:mod:`miniengine.transports.pool`); ``safe_interval`` is the least time between two opens, which
keeps a cluster's login node from seeing a burst of connections.
"""

from __future__ import annotations

import abc
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from types import TracebackType
from typing import Any, ClassVar

from miniengine.schedulers.escaping import escape_for_bash
from miniengine.transports.errors import TransportError

__all__ = ["AuthParam", "CommandResult", "Transport"]


@dataclass(frozen=True)
class AuthParam:
    """One setting of ``Computer.configure(...)`` for a transport: its type, default and help."""

    type: type
    default: Any
    help: str


@dataclass(frozen=True)
class CommandResult:
    """What a command left behind: its exit status and its decoded output."""

    retval: int
    stdout: str
    stderr: str

    def __iter__(self) -> Any:  # ``retval, stdout, stderr = await t.exec_command_wait(...)``
        return iter((self.retval, self.stdout, self.stderr))


class Transport(abc.ABC):
    """Base class of transport plugins (``core.local``, ``core.ssh``, third-party ones)."""

    #: Seconds between two opens of a connection to the same computer, unless configured.
    _DEFAULT_SAFE_OPEN_INTERVAL: ClassVar[float] = 0.0

    #: The settings ``Computer.configure`` accepts for this transport, by name.
    auth_params: ClassVar[Mapping[str, AuthParam]] = {
        "safe_interval": AuthParam(
            float, None, "least seconds between two connections opened to this computer"
        ),
        "use_login_shell": AuthParam(
            bool, True, "run commands in a login shell (bash -l), so that profiles are read"
        ),
    }

    def __init__(self, machine: str = "localhost", **params: Any) -> None:
        self.machine = machine
        self.params = self.validate_params(params)

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """The complete settings, defaults filled in; ``ValueError`` naming a bad key."""
        checked: dict[str, Any] = {}
        for name, value in params.items():
            spec = cls.auth_params.get(name)
            if spec is None:
                raise ValueError(
                    f"{cls.__name__} has no setting {name!r}; it takes "
                    f"{', '.join(sorted(cls.auth_params))}"
                )
            if value is not None and not _is_of(value, spec.type):
                raise ValueError(
                    f"the setting {name!r} of {cls.__name__} must be {spec.type.__name__}, "
                    f"not {type(value).__name__} ({value!r})"
                )
            checked[name] = float(value) if spec.type is float and value is not None else value
        for name, spec in cls.auth_params.items():
            checked.setdefault(name, spec.default)
        if checked.get("safe_interval") is None:
            checked["safe_interval"] = cls._DEFAULT_SAFE_OPEN_INTERVAL
        elif checked["safe_interval"] < 0:
            raise ValueError(f"safe_interval must not be negative, not {checked['safe_interval']}")
        return checked

    @property
    def safe_interval(self) -> float:
        return float(self.params["safe_interval"])

    def __str__(self) -> str:
        return f"{type(self).__name__}({self.machine})"

    # connection -------------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def is_open(self) -> bool: ...

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; :class:`TransportError` naming the computer if it cannot."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect; closing a closed transport does nothing."""

    async def __aenter__(self) -> Transport:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # commands ---------------------------------------------------------------------------------

    @abc.abstractmethod
    async def exec_command_wait(
        self, command: str, *, stdin: str | bytes | None = None, workdir: str | None = None
    ) -> CommandResult:
        """Run ``command`` with bash in ``workdir`` and wait for it; cancelling ends it."""

    def _shell(self, command: str, workdir: str | None) -> list[str]:
        """The argv that runs ``command``: bash (login or not), after a ``cd`` to ``workdir``."""
        if workdir is not None:
            command = f"cd {escape_for_bash(self._absolute(workdir))} && {command}"
        return (
            ["bash", "-l", "-c", command]
            if self.params["use_login_shell"]
            else [
                "bash",
                "-c",
                command,
            ]
        )

    async def whoami(self) -> str:
        """The user name the transport acts as on the computer."""
        result = await self.exec_command_wait("id -un")
        if result.retval != 0:
            raise TransportError(f"{self}: 'id -un' failed: {result.stderr.strip()}")
        return result.stdout.strip()

    # files ------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def makedirs(self, path: str, ignore_existing: bool = False) -> None:
        """Create ``path`` and its parents; an existing ``path`` is an error unless ignored."""

    @abc.abstractmethod
    async def put(self, localpath: str | PathLike[str], remotepath: str) -> None:
        """Copy a local file or folder (recursively) to ``remotepath`` on the computer."""

    @abc.abstractmethod
    async def get(self, remotepath: str, localpath: str | PathLike[str]) -> None:
        """Copy a file or folder (recursively) from the computer to ``localpath``."""

    @abc.abstractmethod
    async def read_bytes(self, path: str) -> bytes:
        """The whole content of a (small) file on the computer."""

    @abc.abstractmethod
    async def write_bytes(self, path: str, data: bytes) -> None:
        """Write a file atomically: readers see the old content or the new, never a part."""

    @abc.abstractmethod
    async def listdir(self, path: str) -> list[str]:
        """The names in a folder (without ``.`` and ``..``), sorted."""

    @abc.abstractmethod
    async def isdir(self, path: str) -> bool: ...

    @abc.abstractmethod
    async def isfile(self, path: str) -> bool: ...

    async def path_exists(self, path: str) -> bool:
        return await self.isdir(path) or await self.isfile(path)

    @abc.abstractmethod
    async def remove(self, path: str) -> None:
        """Remove a file (or a symlink)."""

    @abc.abstractmethod
    async def rmtree(self, path: str) -> None:
        """Remove a folder and everything in it; a missing folder is not an error."""

    async def copy(self, source: str, destination: str) -> None:
        """Copy a file or folder within the computer (AiiDA's ``remote_copy_list``)."""
        await self._run_checked(
            f"cp -r {escape_for_bash(source)} {escape_for_bash(destination)}", "copy"
        )

    async def symlink(self, source: str, link: str) -> None:
        """Make ``link`` point at ``source`` on the computer (``remote_symlink_list``)."""
        await self._run_checked(
            f"ln -s {escape_for_bash(source)} {escape_for_bash(link)}", "symlink"
        )

    async def _run_checked(self, command: str, what: str) -> None:
        result = await self.exec_command_wait(command)
        if result.retval != 0:
            raise TransportError(f"{self}: {what} failed ({command}): {result.stderr.strip()}")

    def _absolute(self, path: str) -> str:
        if not posixpath.isabs(path):
            raise ValueError(f"{self}: paths on the computer must be absolute, not {path!r}")
        return posixpath.normpath(path)


def _is_of(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)
