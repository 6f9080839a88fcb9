"""``core.ssh``: a remote computer over one SSH connection, with asyncssh (the ``ssh`` extra).

Commands run on the connection's channels and files move over its SFTP session, so a worker
needs one connection per computer however many jobs it watches there.  Host keys are checked
against ``known_hosts`` (``key_policy='RejectPolicy'``, the default); ``'AutoAddPolicy'`` trusts
a host on first use and records its key, and still refuses a key that changed.
"""

from __future__ import annotations

import os
import posixpath
import stat
import warnings
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar

import anyio

from miniengine.schedulers.escaping import escape_for_bash
from miniengine.transports.errors import TransportError, TransportFileNotFoundError
from miniengine.transports.transport import AuthParam, CommandResult, Transport

__all__ = ["SshTransport"]

_KEY_POLICIES = ("RejectPolicy", "AutoAddPolicy")


def _asyncssh() -> Any:
    try:
        with warnings.catch_warnings():
            # asyncssh still names DSA keys, and newer ``cryptography`` releases warn about that
            # at import: a library's deprecation notice, not something a user can act on
            warnings.filterwarnings("ignore", module=r"asyncssh(\.|$)")
            import asyncssh
    except ImportError:
        raise TransportError(
            "the core.ssh transport needs asyncssh: pip install 'miniengine[ssh]'"
        ) from None
    return asyncssh


class SshTransport(Transport):
    """A computer reached over SSH (AiiDA's ``core.ssh``, on asyncssh)."""

    _DEFAULT_SAFE_OPEN_INTERVAL = 5.0
    #: Commands running at once on the connection.  OpenSSH serves at most ``MaxSessions``
    #: channels per connection (10 by default) and refuses more, and the SFTP session is one of
    #: them: the jobs sharing the connection wait for a free session rather than fail.
    max_sessions: ClassVar[int] = 8

    auth_params: ClassVar[Mapping[str, AuthParam]] = {
        **Transport.auth_params,
        "username": AuthParam(str, None, "login name (default: the local user's)"),
        "port": AuthParam(int, 22, "the SSH server's port"),
        "look_for_keys": AuthParam(bool, True, "try the keys in ~/.ssh"),
        "key_filename": AuthParam(str, None, "a private key file to log in with"),
        "timeout": AuthParam(float, 60.0, "seconds to wait for the connection"),
        "allow_agent": AuthParam(bool, True, "use keys from a running ssh-agent"),
        "proxy_command": AuthParam(str, None, "a command whose stdin/stdout reach the server"),
        "proxy_jump": AuthParam(str, None, "a host (user@host:port) to tunnel through"),
        "compress": AuthParam(bool, False, "compress the connection"),
        "key_policy": AuthParam(
            str, "RejectPolicy", "RejectPolicy: only known hosts; AutoAddPolicy: trust on first use"
        ),
        "known_hosts": AuthParam(str, None, "the known_hosts file (default: ~/.ssh/known_hosts)"),
    }

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        checked = super().validate_params(params)
        if checked["key_policy"] not in _KEY_POLICIES:
            raise ValueError(
                f"key_policy must be one of {', '.join(_KEY_POLICIES)}, "
                f"not {checked['key_policy']!r}"
            )
        if not 0 < checked["port"] < 65536:
            raise ValueError(f"port must be between 1 and 65535, not {checked['port']}")
        return checked

    def __init__(self, machine: str = "localhost", **params: Any) -> None:
        super().__init__(machine, **params)
        self._connection: Any = None
        self._sftp: Any = None
        self._sessions = anyio.Semaphore(self.max_sessions)
        self._sftp_lock = anyio.Lock()

    def __str__(self) -> str:
        user = self.params["username"]
        return f"core.ssh({user + '@' if user else ''}{self.machine}:{self.params['port']})"

    # connection -------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def open(self) -> None:
        if self.is_open:
            return
        # a dropped connection's SFTP client is dead too: never reuse it on the new one
        self._connection = self._sftp = None
        asyncssh = _asyncssh()
        known_hosts = self._known_hosts_path()
        try:
            try:
                # a missing file trusts no host (asyncssh would fail reading it)
                trusted = str(known_hosts) if known_hosts.exists() else ([], [], [])
                self._connection = await asyncssh.connect(
                    self.machine, known_hosts=trusted, **self._connect_options()
                )
            except asyncssh.HostKeyNotVerifiable:
                if self.params["key_policy"] != "AutoAddPolicy" or self._host_is_known(known_hosts):
                    raise
                self._connection = await asyncssh.connect(
                    self.machine, known_hosts=None, **self._connect_options()
                )
                self._remember_host_key(known_hosts)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise TransportError(
                f"{self}: the host key is not in {known_hosts} or differs from it ({exc}); "
                f"check it and add it (ssh-keyscan -p {self.params['port']} {self.machine}), "
                "or configure key_policy='AutoAddPolicy' to trust a new host on first use"
            ) from exc
        except (OSError, asyncssh.Error) as exc:
            raise TransportError(f"{self}: cannot connect: {exc}") from exc

    async def close(self) -> None:
        connection, self._connection, self._sftp = self._connection, None, None
        if connection is not None:
            connection.close()
            await connection.wait_closed()

    def _connect_options(self) -> dict[str, Any]:
        params = self.params
        options: dict[str, Any] = {
            "port": params["port"],
            "connect_timeout": params["timeout"],
        }
        if params["username"]:
            options["username"] = params["username"]
        if params["key_filename"]:
            options["client_keys"] = [os.path.expanduser(params["key_filename"])]
        elif not params["look_for_keys"]:
            options["client_keys"] = []
        if not params["allow_agent"]:
            options["agent_path"] = None
        if params["proxy_command"]:
            options["proxy_command"] = params["proxy_command"]
        if params["proxy_jump"]:
            options["tunnel"] = params["proxy_jump"]
        if params["compress"]:
            options["compression_algs"] = ["zlib@openssh.com", "zlib"]
        return options

    def _known_hosts_path(self) -> Path:
        configured = self.params["known_hosts"]
        return Path(os.path.expanduser(configured or "~/.ssh/known_hosts"))

    def _host_pattern(self) -> str:
        port = self.params["port"]
        return self.machine if port == 22 else f"[{self.machine}]:{port}"

    def _host_is_known(self, known_hosts: Path) -> bool:
        """Whether ``known_hosts`` has any key for this host (then a mismatch is an attack)."""
        if not known_hosts.exists():
            return False
        asyncssh = _asyncssh()
        entries = asyncssh.read_known_hosts(str(known_hosts))
        matched = entries.match(self.machine, "", self.params["port"])
        return any(matched[:3])

    def _remember_host_key(self, known_hosts: Path) -> None:
        key = self._connection.get_server_host_key()
        line = f"{self._host_pattern()} {key.export_public_key('openssh').decode().strip()}\n"
        known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a") as stream:
            stream.write(line)

    def _require_connection(self) -> Any:
        if not self.is_open:
            raise TransportError(f"{self}: the connection is not open")
        return self._connection

    async def _sftp_client(self) -> Any:
        # one SFTP session for the jobs that all need it at once on a new connection: one each
        # would use up the server's sessions (MaxSessions) and leave none for commands
        async with self._sftp_lock:
            connection = self._require_connection()
            if self._sftp is None:
                try:
                    self._sftp = await connection.start_sftp_client()
                except (OSError, _asyncssh().Error) as exc:
                    raise TransportError(f"{self}: cannot start SFTP: {exc}") from exc
            return self._sftp

    # commands ---------------------------------------------------------------------------------

    async def exec_command_wait(
        self, command: str, *, stdin: str | bytes | None = None, workdir: str | None = None
    ) -> CommandResult:
        connection = self._require_connection()
        asyncssh = _asyncssh()
        remote_command = " ".join(escape_for_bash(arg) for arg in self._shell(command, workdir))
        try:
            async with self._sessions:
                completed = await connection.run(
                    remote_command,
                    input=stdin.decode() if isinstance(stdin, bytes) else stdin,
                    check=False,
                    encoding="utf-8",
                    errors="replace",
                )
        except (OSError, asyncssh.Error) as exc:
            raise TransportError(f"{self}: running a command failed: {exc}") from exc
        retval = completed.exit_status
        if retval is None:  # ended by a signal
            retval = 128 + 9 if completed.exit_signal else 255
        return CommandResult(retval, completed.stdout or "", completed.stderr or "")

    # files ------------------------------------------------------------------------------------

    async def makedirs(self, path: str, ignore_existing: bool = False) -> None:
        asyncssh = _asyncssh()
        sftp = await self._sftp_client()
        target = self._absolute(path)
        with self._mapped(path):
            if not ignore_existing and await sftp.exists(target):
                raise TransportError(f"{self}: {target} exists already")
            await sftp.makedirs(target, attrs=asyncssh.SFTPAttrs(permissions=0o700), exist_ok=True)

    async def put(self, localpath: str | PathLike[str], remotepath: str) -> None:
        sftp = await self._sftp_client()
        source, target = Path(localpath), self._absolute(remotepath)
        if not source.exists():
            raise TransportFileNotFoundError(f"{self}: no local file or folder {source}")
        with self._mapped(remotepath):
            await self._put(sftp, source, target)

    async def _put(self, sftp: Any, source: Path, target: str) -> None:
        if source.is_dir():
            if not await sftp.isdir(target):
                await sftp.mkdir(target)
            for child in sorted(source.iterdir()):
                await self._put(sftp, child, posixpath.join(target, child.name))
        else:
            await sftp.put(str(source), target)
            # as a local copy of a folder does: a PortableCode's executable stays executable
            await sftp.chmod(target, stat.S_IMODE(source.stat().st_mode))

    async def get(self, remotepath: str, localpath: str | PathLike[str]) -> None:
        sftp = await self._sftp_client()
        with self._mapped(remotepath):
            await self._get(sftp, self._absolute(remotepath), Path(localpath))

    async def _get(self, sftp: Any, source: str, target: Path) -> None:
        attributes = await sftp.stat(source)
        if attributes.permissions is not None and stat.S_ISDIR(attributes.permissions):
            target.mkdir(parents=True, exist_ok=True)
            for name in await self._names(sftp, source):
                await self._get(sftp, posixpath.join(source, name), target / name)
        else:
            await sftp.get(source, str(target))

    async def read_bytes(self, path: str) -> bytes:
        sftp = await self._sftp_client()
        with self._mapped(path):
            async with sftp.open(self._absolute(path), "rb") as stream:
                data: bytes = await stream.read()
                return data

    async def write_bytes(self, path: str, data: bytes) -> None:
        sftp = await self._sftp_client()
        target = self._absolute(path)
        temporary = posixpath.join(
            posixpath.dirname(target), f".miniengine-{os.urandom(6).hex()}.tmp"
        )
        with self._mapped(path):
            async with sftp.open(temporary, "wb") as stream:
                await stream.write(data)
            await sftp.posix_rename(temporary, target)

    async def listdir(self, path: str) -> list[str]:
        sftp = await self._sftp_client()
        with self._mapped(path):
            return await self._names(sftp, self._absolute(path))

    @staticmethod
    async def _names(sftp: Any, path: str) -> list[str]:
        return sorted(name for name in await sftp.listdir(path) if name not in (".", ".."))

    async def isdir(self, path: str) -> bool:
        sftp = await self._sftp_client()
        with self._mapped(path):
            return bool(await sftp.isdir(self._absolute(path)))

    async def isfile(self, path: str) -> bool:
        sftp = await self._sftp_client()
        with self._mapped(path):
            return bool(await sftp.isfile(self._absolute(path)))

    async def remove(self, path: str) -> None:
        sftp = await self._sftp_client()
        with self._mapped(path):
            await sftp.remove(self._absolute(path))

    async def rmtree(self, path: str) -> None:
        sftp = await self._sftp_client()
        target = self._absolute(path)
        with self._mapped(path):
            if await sftp.exists(target):
                await sftp.rmtree(target)

    def _mapped(self, path: object) -> _SftpErrors:
        return _SftpErrors(self, path)


class _SftpErrors:
    """Maps SFTP and connection errors to the transport's errors, naming the computer and path."""

    def __init__(self, transport: SshTransport, path: object) -> None:
        self.transport = transport
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _: object
    ) -> None:
        if exc is None or isinstance(exc, TransportError):
            return
        asyncssh = _asyncssh()
        if isinstance(exc, asyncssh.SFTPNoSuchFile | FileNotFoundError):
            raise TransportFileNotFoundError(
                f"{self.transport}: no such file or folder: {self.path}"
            ) from exc
        if isinstance(exc, asyncssh.Error | OSError):
            raise TransportError(f"{self.transport}: {exc} ({self.path})") from exc
