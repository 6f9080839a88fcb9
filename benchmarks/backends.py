"""The databases the suite measures: a sqlite file, or a database on a private PostgreSQL cluster.

``--backend`` chooses ``sqlite``, ``postgresql`` or ``both`` (the default when Debian's PostgreSQL
binaries and psycopg are here).  For PostgreSQL the suite starts one throwaway cluster in a temp
folder for the whole run (``tests/services/postgres.py``: Debian's ``initdb``/``pg_ctl``, a free
loopback port, ``fsync`` and ``synchronous_commit`` off as in the tests) and gives every
repetition a fresh empty database on it, as every sqlite repetition gets a fresh file.  The
cluster is stopped when the run ends.

The workloads read the database of their repetition with :func:`db_location`; the few checks they
make with SQL of their own (counting states, orphans, duplicates) go through :func:`probe`, which
opens either engine directly so that a check never depends on the engine it checks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from miniengine.daemon.files import DaemonFiles

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
BACKENDS = (SQLITE, POSTGRESQL)

#: Set in a child's environment: the backend of its repetition.
ENV_VAR = "MINIENGINE_BENCH_BACKEND"


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be measured here (``None``: it can)."""
    import glob
    import pwd

    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "PostgreSQL's binaries are not installed (Debian's postgresql package)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root needs the 'postgres' user of Debian's postgresql package"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgresql]')"
    return None


def current_backend() -> str:
    """The backend of this repetition (in a child)."""
    return os.environ.get(ENV_VAR, SQLITE)


def db_location() -> Path | str:
    """The database of this repetition: a file path, or a ``postgresql://`` URL."""
    value = os.environ["MINIENGINE_DB"]
    return value if value.startswith(("postgresql://", "postgres://")) else Path(value)


class Cluster:
    """A private PostgreSQL cluster for one run of the suite; a fresh database per repetition."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._server: Any = None
        self._count = 0

    def start(self) -> None:
        from tests.services.postgres import running_postgres

        folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pg-")))
        self._server = self._stack.enter_context(running_postgres(folder / "cluster"))

    def stop(self) -> None:
        self._stack.close()

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database for one repetition (dropped afterwards); its URL."""
        self._count += 1
        name = f"bench_{os.getpid()}_{self._count}"
        url: str = self._server.create_database(name)
        try:
            yield url
        finally:
            self._server.drop_database(name)
            # the daemon's files of a database that is gone (the log, once stopped)
            shutil.rmtree(DaemonFiles(url).folder, ignore_errors=True)


# checks of the workloads' results, on either engine -----------------------------------------


class Probe:
    """A read connection of the benchmark's own to the database (``?`` placeholders on both)."""

    def __init__(self, db: Path | str) -> None:
        self.postgres = isinstance(db, str)
        if self.postgres:
            import psycopg

            self._connection: Any = psycopg.connect(str(db), autocommit=True)
        else:
            self._connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            sql = sql.replace("?", "%s")
        return [tuple(row) for row in self._connection.execute(sql, tuple(args)).fetchall()]

    def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...]:
        return self.all(sql, args)[0]

    def close(self) -> None:
        self._connection.close()


@contextlib.contextmanager
def probe(db: Path | str) -> Iterator[Probe]:
    connection = Probe(db)
    try:
        yield connection
    finally:
        connection.close()
