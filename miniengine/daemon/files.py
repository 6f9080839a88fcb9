"""Where the daemon keeps its pid file, lock and log.

Next to a sqlite database file, as ``<file>.daemon.pid`` etc.  A PostgreSQL database has no
file, and daemons on several hosts serve it at once: each keeps its files in a folder of its own
on its host, ``~/.miniengine/daemons/<host>/<database name>-<hash>/`` (0700), where ``<host>`` is
``$MINIENGINE_HOST`` or the hostname and ``<hash>`` a short hash of the database's server and
name, so that two databases of the same name on different servers never share a daemon, and two
spellings of one database's URL never get two.

Every one of these files is opened with ``O_NOFOLLOW`` and created 0600: a symbolic link planted
in place of the log would otherwise make the supervisor (perhaps root) append to a file of the
planter's choosing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import parse_qsl, unquote, urlsplit

from miniengine.exceptions import StoreError
from miniengine.storage.host import current_host
from miniengine.storage.paths import database_identity, url_without_password
from miniengine.storage.permissions import check_not_shared, open_private, os_error

__all__ = [
    "DAEMONS_FOLDER",
    "DaemonFiles",
    "daemon_folder",
    "db_arguments",
    "process_alive",
    "shown",
    "url_without_password",
]

#: The folder under which the daemons of PostgreSQL databases keep their files, one folder per
#: host and database.
DAEMONS_FOLDER = Path("~/.miniengine/daemons")


@dataclass(frozen=True)
class DaemonFiles:
    """The pid file (JSON: supervisor pid, state), the lock and the log file of the daemon of
    one database (a sqlite file's path, or a PostgreSQL URL) on this host."""

    db: Path | str

    @property
    def folder(self) -> Path:
        """The folder holding the files: the database file's, or this host's folder of the
        PostgreSQL database (see the module's docstring)."""
        if isinstance(self.db, Path):
            return self.db.parent
        return daemon_folder(self.db)

    def _file(self, suffix: str) -> Path:
        if isinstance(self.db, Path):
            return self.db.with_name(self.db.name + ".daemon." + suffix)
        return self.folder / ("daemon." + suffix)

    @property
    def pid_file(self) -> Path:
        return self._file("pid")

    @property
    def log_file(self) -> Path:
        return self._file("log")

    @property
    def lock_file(self) -> Path:
        return self._file("lock")

    def ensure_folder(self) -> None:
        """Create the folder of a PostgreSQL database's daemon files (0700, only ours) if it is
        missing; a sqlite database's folder is the database's, checked when it is opened."""
        if isinstance(self.db, Path):
            return
        folder = self.folder
        missing = [folder, *folder.parents]
        missing = missing[: next(i for i, path in enumerate(missing) if path.is_dir())]
        try:
            for path in reversed(missing):  # each level 0700 (mkdir's parents get the umask's)
                path.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, f"cannot create the daemon's folder {folder}") from exc
        if not folder.is_dir() or folder.is_symlink():
            raise StoreError(f"the daemon's folder {folder} is not a folder")
        check_not_shared(folder / "daemon.pid")

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


def shown(db: Path | str) -> str:
    """The database as messages name it: a file's path, a URL without its password."""
    return str(db) if isinstance(db, Path) else url_without_password(db)


def db_arguments(db: Path | str) -> tuple[list[str], dict[str, str]]:
    """How a child process (supervisor, worker) is told the database: a file's path on its
    command line; a URL, which may hold a password, in its environment (``$MINIENGINE_DB``,
    readable by this user only) and never on a command line, which every user can read."""
    if isinstance(db, Path):
        return ["--db", str(db)], dict(os.environ)
    return [], {**os.environ, "MINIENGINE_DB": db}


def daemon_folder(url: str, host: str | None = None, base: Path | None = None) -> Path:
    """The folder of the daemon files of the PostgreSQL database ``url`` on ``host`` (default:
    this one), under ``base`` (default: :data:`DAEMONS_FOLDER` of this user)."""
    base = base if base is not None else DAEMONS_FOLDER.expanduser().absolute()
    return base / (host if host is not None else current_host()) / _url_folder(url)


def _url_folder(url: str) -> str:
    """``<database name>-<12 hex digits>``: one folder per database, readable by a person, never
    the same for two servers, and the same for every spelling of one database's URL."""
    shown = url_without_password(url)
    parts = urlsplit(shown)
    name = unquote(parts.path.lstrip("/"))
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "dbname" and value:
            name = value
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:64] or "postgres"
    digest = hashlib.sha256(database_identity(url).encode()).hexdigest()[:12]
    return f"{name}-{digest}"
