"""A private OpenSSH server on a free loopback port, with its own host key and one user key.

Started from Debian's ``openssh-server`` (``.ci/run`` installs it) with a config in a temp
folder, so nothing of the machine's own SSH setup is read or changed.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class SshServer:
    host: str
    port: int
    username: str
    key_filename: Path
    known_hosts: Path
    host_key: Path
    process: subprocess.Popen[bytes]
    #: sshd's log lines so far (kept up to date by a reader thread)
    log: list[str] = field(default_factory=list)

    def transport_params(self) -> dict[str, object]:
        """What ``Computer.configure`` / ``SshTransport`` need to reach this server."""
        return {
            "username": self.username,
            "port": self.port,
            "key_filename": str(self.key_filename),
            "look_for_keys": False,
            "allow_agent": False,
            "known_hosts": str(self.known_hosts),
            "use_login_shell": False,
        }

    def connection_pids(self) -> list[int]:
        """The sshd processes serving this server's open connections (the listener's children)."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
            except OSError:
                continue
            if stat and int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                found.append(int(entry.name))
        return found

    def drop_connections(self, pids: list[int] | None = None) -> None:
        """End the open connections (as a network failure would): their clients see them close."""
        for pid in self.connection_pids() if pids is None else pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Stop the server and drop its connections, as a reboot of the host would."""
        connections = self.connection_pids()
        self.process.terminate()
        self.process.wait(timeout=10)
        self.drop_connections(connections)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _lines(stream: IO[bytes]) -> Iterator[str]:
    for line in iter(stream.readline, b""):
        yield line.decode(errors="replace")


def require_sshd() -> None:
    if not os.path.exists(SSHD):
        if os.environ.get("CI"):
            pytest.fail("sshd is missing: .ci/run installs Debian's openssh-server")
        pytest.skip("sshd is not installed (apt-get install openssh-server)")


@contextmanager
def running_sshd(
    folder: Path,
    port: int | None = None,
    host_key: Path | None = None,
    user_key: Path | None = None,
) -> Iterator[SshServer]:
    """Start sshd in ``folder`` (keys made there unless given) and stop it on exit."""
    require_sshd()
    folder.mkdir(parents=True, exist_ok=True)
    if host_key is None:
        host_key = folder / "host_ed25519"
        _keygen(host_key)
    if user_key is None:
        user_key = folder / "user_ed25519"
        _keygen(user_key)
    (folder / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    port = port or free_port()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "Subsystem sftp internal-sftp",
                "LogLevel INFO",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation folder
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert process.stderr is not None
    seen: list[str] = []
    while True:  # sshd says when it listens; until then a connection would be refused
        line = process.stderr.readline().decode(errors="replace")
        if not line:
            process.wait(timeout=10)
            raise RuntimeError(f"sshd exited at start: {''.join(seen)}")
        seen.append(line)
        if "Server listening on 127.0.0.1" in line:
            break
    # keep reading sshd's log, or a full pipe would stall it mid-test
    threading.Thread(target=seen.extend, args=(_lines(process.stderr),), daemon=True).start()
    known_hosts = folder / "known_hosts"
    public = Path(f"{host_key}.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    server = SshServer(
        "127.0.0.1", port, getpass.getuser(), user_key, known_hosts, host_key, process, seen
    )
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
