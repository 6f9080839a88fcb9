"""Where the daemon keeps its pid file and log: next to the database it serves.

Every one of these files is opened with ``O_NOFOLLOW`` and created 0600: a symbolic link planted
in place of the log would otherwise make the supervisor (perhaps root) append to a file of the
planter's choosing.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from miniengine.storage.permissions import open_private

__all__ = ["DaemonFiles", "process_alive"]


@dataclass(frozen=True)
class DaemonFiles:
    """The pid file (JSON: supervisor pid, state) and the log file of one database's daemon."""

    db: Path

    @property
    def pid_file(self) -> Path:
        return self.db.with_name(self.db.name + ".daemon.pid")

    @property
    def log_file(self) -> Path:
        return self.db.with_name(self.db.name + ".daemon.log")

    @property
    def lock_file(self) -> Path:
        return self.db.with_name(self.db.name + ".daemon.lock")

    def open_log(self) -> IO[bytes]:
        """The log file for appending, created readable only by the user (it holds tracebacks)."""
        return os.fdopen(
            open_private(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "daemon's log"),
            "ab",
        )

    def lock(self) -> IO[str] | None:
        """Take the daemon lock of this database, or None if a live supervisor holds it.

        The lock (``flock`` on :attr:`lock_file`) lasts as long as the returned file stays open,
        and the kernel drops it when its process dies, however it dies: two supervisors can never
        serve one database, even when started at the same instant.
        """
        handle = os.fdopen(
            open_private(self.lock_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "daemon's lock"),
            "a",
        )
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        return handle

    def read(self) -> dict[str, object] | None:
        """The pid file's content if a live supervisor wrote it, else None (stale files go)."""
        try:
            with os.fdopen(os.open(self.pid_file, os.O_RDONLY | os.O_NOFOLLOW), "r") as handle:
                content = json.loads(handle.read())
        except (OSError, ValueError):
            return None
        if not isinstance(content, dict):
            return None
        pid = content.get("pid")
        if not isinstance(pid, int) or not process_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return content

    def write(self, **content: object) -> None:
        """Write the pid file atomically (rename), readable only by the user."""
        temporary = self.pid_file.with_name(self.pid_file.name + f".{os.getpid()}.tmp")
        temporary.unlink(missing_ok=True)  # left by a crash of a process with our pid, or planted
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        with os.fdopen(open_private(temporary, flags, "daemon's pid file"), "w") as handle:
            handle.write(json.dumps(content))
        os.replace(temporary, self.pid_file)

    def remove(self) -> None:
        self.pid_file.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists (and is not a zombie we could see)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
