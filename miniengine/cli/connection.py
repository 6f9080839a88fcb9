"""Opening a database for reading only: no file is created, migrated or changed.

The read-only commands use a plain ``sqlite3`` connection in ``mode=ro`` rather than a
:class:`~miniengine.storage.store.Store`, which would create a missing file, migrate an old one
and import the event-loop machinery; in WAL mode such a reader never waits for a writer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from miniengine.cli.errors import CliError
from miniengine.storage.schema import APPLICATION_ID, SCHEMA_VERSION, readonly_uri

__all__ = ["BUSY_TIMEOUT_MS", "open_readonly", "require_file", "schema_version"]

BUSY_TIMEOUT_MS = 5000


def require_file(path: Path) -> None:
    """Refuse a path with no database file at it, in one line that says how to pick another."""
    if path.is_dir():
        raise CliError(f"{path} is a folder, not a database file")
    if not path.exists():
        raise CliError(f"no database at {path} (pass --db PATH or set $MINIENGINE_DB)")


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to the miniengine database at ``path``, its header checked."""
    require_file(path)
    try:
        connection = sqlite3.connect(
            readonly_uri(path),
            uri=True,
            isolation_level=None,
            timeout=BUSY_TIMEOUT_MS / 1e3,
        )
    except sqlite3.Error as exc:
        raise CliError(f"{path}: cannot open the database: {exc}") from exc
    try:
        schema_version(connection, path)
    except BaseException:
        connection.close()
        raise
    return connection


def schema_version(connection: sqlite3.Connection, path: Path) -> int:
    """The schema version of the database, after checking that it is one of ours we can read."""
    try:
        app_id = connection.execute("PRAGMA application_id").fetchone()[0]
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.OperationalError as exc:  # unreadable, or locked beyond the busy timeout
        raise CliError(f"{path}: cannot read the database: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        raise CliError(f"{path} is not a sqlite database ({exc})") from exc
    if app_id == 0 and tables == 0:
        raise CliError(f"{path} is empty: no miniengine database was created in it yet")
    if app_id != APPLICATION_ID:
        raise CliError(f"{path} is not a miniengine database (a sqlite file of another program)")
    if version > SCHEMA_VERSION:
        raise CliError(
            f"{path} was written by a newer miniengine (schema version {version}; this one "
            f"understands up to {SCHEMA_VERSION}): upgrade miniengine to read it"
        )
    return version
