"""A private PostgreSQL cluster: Debian's ``initdb`` and ``pg_ctl`` in a temp folder.

The binaries come from ``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package,
which ``.ci/run`` installs); nothing of the machine's own clusters is read or changed.  The server
listens on a free loopback port and on a unix socket in its own folder.  PostgreSQL refuses to run
as root, so as root the cluster belongs to the ``postgres`` user that Debian's package creates
(its folder is a fresh one under the system temp folder, since pytest's are private to root).

Connections over TCP need the password of an ordinary role (it is in :attr:`PostgresServer.url`,
never on a command line); the admin connection uses the socket, which only the cluster's user
and root can reach.  Each test gets a database of its own, copied from an empty template
(``CREATE DATABASE ... TEMPLATE``), which takes milliseconds rather than a new cluster's second.
A :class:`DatabasePool` thread makes the next copies while tests run and drops the used ones
behind them, so that a test waits for neither (600 PostgreSQL tests, ~0.1 s each otherwise).
"""

from __future__ import annotations

import functools
import glob
import itertools
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.services.sshd import free_port

#: The role the tests connect as (not a superuser: the engine needs none).
ROLE = "miniengine"

#: The empty database each test's database is copied from.
TEMPLATE = "miniengine_template"

#: The same with miniengine's schema created (made on first use): a copy skips creating it.
SCHEMA_TEMPLATE = "miniengine_schema_template"

#: Settings for a throwaway cluster: durability is not wanted, speed and connections are.
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "32MB",
    "listen_addresses": "127.0.0.1",
}


def put_meta(connection: Any, key: str, value: str) -> int:
    """Set ``key`` in a miniengine database's ``miniengine_meta`` (a store's write function)."""
    connection.execute(
        "INSERT INTO miniengine_meta (key, value) VALUES (%s, %s) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
    return 1


def get_meta(connection: Any, key: str) -> str | None:
    """The value of ``key`` in ``miniengine_meta`` (a store's read function)."""
    row = connection.execute("SELECT value FROM miniengine_meta WHERE key = %s", (key,)).fetchone()
    return None if row is None else str(row[0])


def postgres_bin() -> Path | None:
    """The ``bin`` folder of the newest PostgreSQL installed by Debian's packages, if any."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        version = Path(initdb).parent.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version):
            found.append((tuple(int(part) for part in version.split(".")), Path(initdb).parent))
    return max(found)[1] if found else None


def require_postgres() -> Path:
    """The binaries' folder; skip the test (fail under ``CI``) when PostgreSQL is missing."""
    folder = postgres_bin()
    reason = None
    if folder is None:
        reason = "PostgreSQL is not installed (apt-get install postgresql)"
    elif os.geteuid() == 0 and not _has_user("postgres"):
        reason = "running as root needs the 'postgres' user of Debian's postgresql package"
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            reason = "psycopg is not installed (pip install -e '.[postgresql]')"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: .ci/run installs Debian's postgresql and the test extra")
        print(f"skipped: {reason}")
        pytest.skip(reason)
    assert folder is not None
    return folder


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass
class PostgresServer:
    """A running private cluster."""

    folder: Path
    bin: Path
    port: int
    socket_dir: Path
    password: str
    #: the OS user running the server (``None``: this user)
    run_as: str | None
    _names: Iterator[int] = field(default_factory=itertools.count)
    _schema_template_made: bool = False
    _pool: DatabasePool | None = None

    @property
    def url(self) -> str:
        """The URL of the role's own database (password included)."""
        return self.database_url(ROLE)

    def database_url(self, database: str) -> str:
        return (
            f"postgresql://{ROLE}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/"
            f"{quote(database, safe='')}"
        )

    def admin(self, sql: str) -> None:
        """Run ``sql`` as the cluster's superuser, over the unix socket (autocommit)."""
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=self.run_as or _user(),
            dbname="postgres",
            autocommit=True,
        ) as connection:
            connection.execute(sql.encode())

    def create_database(self, name: str | None = None, *, with_schema: bool = False) -> str:
        """A new database owned by the role, its URL: empty (a copy of the template), or with
        ``with_schema`` a copy of one in which miniengine created its schema, as a first open
        of the empty one would (the copy takes less time than creating the schema)."""
        if name is None:
            name = self.next_name()
        if with_schema:
            # copying the files (PostgreSQL 15's default logs every page) takes half the time
            strategy = " STRATEGY FILE_COPY" if self._version() >= 15 else ""
            template = self._schema_template() + strategy
        else:
            template = TEMPLATE
        self.admin(f'CREATE DATABASE "{name}" OWNER {ROLE} TEMPLATE {template}')
        return self.database_url(name)

    def next_name(self) -> str:
        """A database name not used before in this run (the pid tells parallel runs apart)."""
        return f"test_{os.getpid()}_{next(self._names)}"

    def _version(self) -> int:
        """The server's major version (the name of the folder of its ``bin``)."""
        return int(self.bin.parent.name.split(".")[0])

    def _schema_template(self) -> str:
        if not self._schema_template_made:
            from miniengine.storage.open import open_backend

            self.admin(f"CREATE DATABASE {SCHEMA_TEMPLATE} OWNER {ROLE} TEMPLATE {TEMPLATE}")
            open_backend(self.database_url(SCHEMA_TEMPLATE)).close()  # creates the schema
            self._schema_template_made = True
        return SCHEMA_TEMPLATE

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending the connections still open to it."""
        self.admin(drop_statement(name))

    def pool(self) -> DatabasePool:
        """The pool of this server's ready databases with the schema (started on first use)."""
        if self._pool is None:
            self._pool = DatabasePool(self)
        return self._pool

    def start(self) -> None:
        """Start the server on its port and socket, and return once it accepts connections."""
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.socket_dir}",
                *(f"-c {key}={value}" for key, value in SETTINGS.items()),
            ]
        )
        _run(
            [
                str(self.bin / "pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.folder / "data"),
                "-l",
                str(self.folder / "server.log"),
                "-o",
                options,
            ],
            self.run_as,
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are ended); :meth:`start` starts
        it again with the same data."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        _run(
            [str(self.bin / "pg_ctl"), "stop", "-D", str(self.folder / "data"), "-m", "fast"],
            self.run_as,
            check=False,
        )


def drop_statement(name: str) -> str:
    """The statement dropping database ``name``, ending the connections still open to it."""
    return f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'


class DatabasePool:
    """Databases with miniengine's schema made ahead, and used ones dropped behind, by a thread.

    A test's :meth:`take` returns a database made while earlier tests ran, and :meth:`give_back`
    returns at once, the drop being done by the thread; both used to cost a test ~0.1 s of
    waiting for the server.  The thread keeps :attr:`AHEAD` databases ready (the server's work
    overlaps the tests' own waits) and, once they are, drops the used ones in order.  Its own
    admin connection (over the socket) is kept open.  An error of the thread is raised by the
    next :meth:`take`.
    """

    #: how many databases are made ahead of the tests
    AHEAD = 2

    def __init__(self, server: PostgresServer) -> None:
        server._schema_template()  # made here, before the thread copies it
        self._server = server
        self._ready: deque[str] = deque()
        self._drops: deque[str] = deque()
        self._wanted = self.AHEAD
        self._error: BaseException | None = None
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name="postgres-pool", daemon=True)
        self._thread.start()

    def take(self, timeout: float = 120.0) -> str:
        """The URL of a fresh database with the schema (a copy of the schema template)."""
        with self._changed:
            self._wanted += 1
            self._changed.notify_all()
            ready = self._changed.wait_for(
                lambda: self._ready or self._error is not None, timeout=timeout
            )
            if self._error is not None:
                raise RuntimeError(f"the database pool failed: {self._error!r}") from self._error
            if not ready:
                raise RuntimeError(f"no database was made ready in {timeout:.0f} s")
            return self._server.database_url(self._ready.popleft())

    def give_back(self, name: str) -> None:
        """Drop database ``name`` soon (its connections are ended then); returns at once."""
        with self._changed:
            self._drops.append(name)
            self._changed.notify_all()

    def close(self) -> None:
        """Stop the thread (the databases still listed go with the cluster)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout=30)

    def _next(self) -> Callable[[], None] | None:
        """The thread's next job (called with the lock held): make one, drop one, or ``None``
        once closed."""
        while True:
            if self._closed:
                return None
            if self._wanted > 0:
                self._wanted -= 1
                return self._make
            if self._drops:
                return functools.partial(self._drop, self._drops.popleft())
            self._changed.wait()

    def _make(self) -> None:
        name = self._server.next_name()
        strategy = " STRATEGY FILE_COPY" if self._server._version() >= 15 else ""
        self._admin.execute(
            f'CREATE DATABASE "{name}" OWNER {ROLE} TEMPLATE {SCHEMA_TEMPLATE}{strategy}'.encode()
        )
        with self._changed:
            self._ready.append(name)
            self._changed.notify_all()

    def _drop(self, name: str) -> None:
        self._admin.execute(drop_statement(name).encode())

    def _serve(self) -> None:
        import psycopg

        try:
            with psycopg.connect(
                host=str(self._server.socket_dir),
                port=self._server.port,
                user=self._server.run_as or _user(),
                dbname="postgres",
                autocommit=True,
            ) as self._admin:
                while True:
                    with self._changed:
                        job = self._next()
                    if job is None:
                        return
                    job()
        except BaseException as exc:  # reported to the test waiting in take()
            with self._changed:
                self._error = exc
                self._changed.notify_all()


def _user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _run(
    command: list[str], run_as: str | None, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    if run_as is not None:
        command = ["runuser", "-u", run_as, "--", *command]
    result = subprocess.run(
        command, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd="/", check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}): {result.stdout}{result.stderr}"
        )
    return result


#: Run beside the tests: waits for the end of its stdin, which comes when the test process ends
#: however it ends (a SIGTERM from ``timeout`` or a SIGKILL runs no ``finally``), then stops the
#: server (its command is the arguments) and removes its folder (the last argument, if any).
_WATCHDOG = """
import shutil, subprocess, sys
sys.stdin.buffer.read()
*command, folder = sys.argv[1:]
subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, cwd="/")
if folder:
    shutil.rmtree(folder, ignore_errors=True)
"""


def _watchdog(server: PostgresServer, folder: Path | None) -> subprocess.Popen[bytes]:
    """A process that stops ``server`` once this process is gone, so that no cluster outlives
    an interrupted test run."""
    command = [str(server.bin / "pg_ctl"), "stop", "-D", str(server.folder / "data"), "-m", "fast"]
    if server.run_as is not None:
        command = ["runuser", "-u", server.run_as, "--", *command]
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, *command, str(folder) if folder else ""],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C of the test run does not reach it
    )


@contextmanager
def running_postgres(folder: Path) -> Iterator[PostgresServer]:
    """Start a cluster (in ``folder``, or as root in a temp folder of its own) and stop it on
    exit; yields the server with the role, its database and the template created."""
    bin_folder = require_postgres()
    run_as = "postgres" if os.geteuid() == 0 else None
    folder.mkdir(parents=True, exist_ok=True)
    # a unix socket path has at most 107 bytes, and as root the folder must be the server's
    owned = run_as is not None or len(str(folder)) > 60
    base = Path(tempfile.mkdtemp(prefix="miniengine-pg-")) if owned else folder
    try:
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(base, entry.pw_uid, entry.pw_gid)
        os.chmod(base, 0o700)
        password = secrets.token_urlsafe(16)
        port = free_port()
        server = PostgresServer(base, bin_folder, port, base, password, run_as)
        data = base / "data"
        _run(
            [
                str(bin_folder / "initdb"),
                "-D",
                str(data),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            run_as,
        )
        server.start()
        watchdog = _watchdog(server, base if owned else None)
        try:
            # the password goes over the socket, never on a command line
            server.admin(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'")
            server.admin(f"CREATE DATABASE {ROLE} OWNER {ROLE}")
            server.admin(f"CREATE DATABASE {TEMPLATE} OWNER {ROLE}")
            yield server
        finally:
            watchdog.kill()  # this process stops the server itself
            watchdog.wait()
            server.stop()
    finally:
        if owned:
            shutil.rmtree(base, ignore_errors=True)
