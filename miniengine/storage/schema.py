"""The database schema, its version, and opening a file safely.

A miniengine database is recognised by ``PRAGMA application_id``; its schema version lives in
``PRAGMA user_version``.  Opening never writes to a file until it is known to be either empty or a
miniengine database of this or an older version, so a foreign file is left untouched.  Creation and
migrations run under ``BEGIN IMMEDIATE`` and re-check the version inside the lock, which makes them
idempotent when several processes open a new (or 0-byte) file at the same moment.
"""

from __future__ import annotations

import os
import sqlite3
import time
import warnings
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from urllib.parse import quote

from miniengine.exceptions import (
    DatabaseFullError,
    DatabaseLockedError,
    IncompatibleDatabaseError,
    ReadOnlyDatabaseError,
    StoreError,
)
from miniengine.storage.paths import ensure_folder
from miniengine.storage.permissions import check_not_shared, os_error
from miniengine.storage.sqlite.msgpack_functions import register as register_msgpack_functions

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "connect", "ensure_schema"]

#: "MiNi" in ASCII: marks a sqlite file as a miniengine database.
APPLICATION_ID = 0x4D694E69

_SCHEMA_V1 = """
CREATE TABLE nodes (
    pk             INTEGER PRIMARY KEY,
    uuid           TEXT NOT NULL UNIQUE,
    node_type      TEXT NOT NULL,
    process_type   TEXT,
    process_label  TEXT,
    process_state  TEXT,
    process_status TEXT,
    exit_status    INTEGER,
    exit_message   TEXT,
    exception      TEXT,
    paused         INTEGER NOT NULL DEFAULT 0,
    label          TEXT NOT NULL DEFAULT '',
    description    TEXT NOT NULL DEFAULT '',
    attributes     BLOB,
    owner          TEXT,
    lease_epoch    INTEGER NOT NULL DEFAULT 0,
    lease_expires  REAL,
    ctime          REAL NOT NULL,
    mtime          REAL NOT NULL
);
CREATE INDEX nodes_process_label ON nodes (process_label) WHERE process_label IS NOT NULL;
CREATE INDEX nodes_active ON nodes (process_state)
    WHERE process_state IN ('created', 'running', 'waiting');

CREATE TABLE links (
    pk         INTEGER PRIMARY KEY,
    in_pk      INTEGER NOT NULL REFERENCES nodes (pk),
    out_pk     INTEGER NOT NULL REFERENCES nodes (pk),
    link_type  TEXT NOT NULL,
    label      TEXT NOT NULL
);
CREATE INDEX links_in ON links (in_pk);
CREATE INDEX links_out ON links (out_pk);

CREATE TABLE logs (
    pk         INTEGER PRIMARY KEY,
    node_pk    INTEGER NOT NULL REFERENCES nodes (pk),
    time       REAL NOT NULL,
    levelname  TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX logs_node ON logs (node_pk);

CREATE TABLE checkpoints (
    node_pk    INTEGER PRIMARY KEY REFERENCES nodes (pk),
    seq        INTEGER NOT NULL,
    data       BLOB NOT NULL
);
"""

#: the schema version this miniengine creates and migrates to: ``len(MIGRATIONS)``
SCHEMA_VERSION = 14

#: ``MIGRATIONS[n]`` brings a database from version ``n`` to ``n + 1``.  Only creating or
#: migrating a database needs them, so the ``schema_vN`` modules are imported on first use
#: (:func:`_migrations`; ``schema.MIGRATIONS`` from outside), not by every script at start-up.
MIGRATIONS: dict[int, str]


def _migrations() -> dict[int, str]:
    """:data:`MIGRATIONS`, imported when first asked for (or as a test replaced it)."""
    found: dict[int, str] | None = globals().get("MIGRATIONS")
    if found is None:
        found = {0: _SCHEMA_V1}
        for version in range(2, SCHEMA_VERSION + 1):
            module = import_module(f"miniengine.storage.schema_v{version}")
            found[version - 1] = getattr(module, f"SCHEMA_V{version}")
        globals()["MIGRATIONS"] = found
    return found


def __getattr__(name: str) -> object:
    if name == "MIGRATIONS":
        return _migrations()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_RETRY_SECONDS = 30.0


def split_statements(script: str) -> list[str]:
    """Split a migration into statements (a trigger's body holds ``;`` of its own)."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        statements.append(pending.strip())
    return statements


def is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    message = str(exc)
    return "locked" in message or "busy" in message


def retry_busy(action: Callable[[], object], path: Path, what: str) -> None:
    """Run ``action``, retrying while the database is locked by another connection."""
    deadline = time.monotonic() + _RETRY_SECONDS
    delay = 0.001
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise store_error(path, f"cannot {what}", exc) from exc
            if time.monotonic() > deadline:
                raise DatabaseLockedError(
                    f"{path}: cannot {what}: the database stayed locked for {_RETRY_SECONDS:.0f} s"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


#: File systems on which sqlite's WAL mode (shared memory between processes) is unsafe.
NETWORK_FILE_SYSTEMS = frozenset(
    {"nfs", "nfs4", "lustre", "cifs", "smb3", "smbfs", "gpfs", "beegfs", "fuse.sshfs", "9p"}
)


def file_system_type(path: Path) -> str | None:
    """The type of the file system holding ``path`` (Linux: from /proc/mounts), if known."""
    try:
        with open("/proc/mounts") as mounts:
            entries = [line.split() for line in mounts]
    except OSError:
        return None
    target = str(path.resolve())
    best, kind = "", None
    for entry in entries:
        if len(entry) < 3:
            continue
        mount_point = entry[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > len(best):
            best, kind = mount_point, entry[2]
    return kind


def warn_if_network_file_system(path: Path) -> None:
    """WAL needs shared memory that network file systems do not provide: say so, loudly."""
    kind = file_system_type(path.parent)
    if kind in NETWORK_FILE_SYSTEMS:
        warnings.warn(
            f"{path} is on a {kind} file system, where sqlite's WAL mode is unsafe across "
            "machines and can corrupt the database; put the database on a local disk (set "
            "MINIENGINE_DB) and share results another way",
            RuntimeWarning,
            stacklevel=3,
        )


def create_file(path: Path) -> None:
    """Check the folder and the file are ours alone, then create an empty 0600 file if missing.

    sqlite gives the write-ahead log and shared-memory files the mode of the database file, so
    they are 0600 too.  Only the default folder is created (see ``paths.ensure_folder``).
    """
    ensure_folder(path)
    check_not_shared(path)
    if path.exists():
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    except FileExistsError:  # another process made it first
        pass
    except OSError as exc:
        raise os_error(exc, f"cannot create the database {path}") from exc


def readonly_uri(path: Path) -> str:
    """The URI that opens ``path`` for reading only, also in a folder this user cannot write.

    A WAL database needs its shared-memory file to be read; where that file is missing and
    cannot be created (a read-only folder) and no write-ahead log exists, nobody can be writing
    it, so it is opened ``immutable`` (no locks, no shared memory).
    """
    uri = f"file:{quote(os.fsencode(path))}?mode=ro"
    folder_writable = os.access(path.parent, os.W_OK | os.X_OK)
    if not folder_writable and not any(
        os.path.lexists(f"{os.fspath(path)}{suffix}") for suffix in ("-wal", "-shm", "-journal")
    ):
        uri += "&immutable=1"
    return uri


def store_error(path: Path, what: str, exc: sqlite3.Error) -> StoreError:
    """The :class:`StoreError` for a sqlite error: a full disk and a read-only file by name."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return DatabaseFullError(
            f"{path}: {what}: the disk, or the database's size limit, is full ({exc}); the "
            "transaction was rolled back and everything stored before is intact"
        )
    if code == sqlite3.SQLITE_READONLY:
        return ReadOnlyDatabaseError(
            f"{path}: {what}: the database is read-only for this user ({exc}); it can be read, "
            "but nothing can be stored in it"
        )
    return StoreError(f"{path}: {what}: {exc}")


def check_readable_schema(connection: sqlite3.Connection, path: Path) -> None:
    """Check the header of a database opened read-only: ours, and current, since a read-only
    file can be neither created nor migrated."""
    header: tuple[int, int, int] = (0, 0, 0)

    def read_header() -> None:
        nonlocal header
        header = _header(connection)

    try:
        retry_busy(read_header, path, "read the database header")
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        raise IncompatibleDatabaseError(
            f"{path} is not a sqlite database ({exc}); it was left untouched"
        ) from exc
    app_id, version, tables = header
    if _check_header(path, app_id, version, tables):
        if app_id == 0 and tables == 0:
            raise ReadOnlyDatabaseError(
                f"{path} is empty and read-only for this user: no database can be created in it"
            )
        raise ReadOnlyDatabaseError(
            f"{path} has schema version {version} and needs migrating to {SCHEMA_VERSION}, but "
            "it is read-only for this user; run `miniengine db migrate` as a user who can write "
            "it and its folder"
        )


def connect(
    path: Path,
    *,
    synchronous: str = "NORMAL",
    busy_timeout_ms: int = 10_000,
    readonly: bool = False,
) -> sqlite3.Connection:
    """Open a connection with the engine's pragmas, in autocommit mode (we issue BEGIN)."""
    # Quoted: in a URI, "?" and "#" would end the file name and "%" would start an escape.
    uri = readonly_uri(path) if readonly else f"file:{quote(os.fsencode(path))}?mode=rw"
    try:
        connection = sqlite3.connect(
            uri,
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=busy_timeout_ms / 1e3,
        )
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the database: {exc}") from exc
    # the SQL functions that read attributes: an expression index on one needs them to write
    register_msgpack_functions(connection)
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not readonly:
            # This pragma reads the schema, so it is the first statement to meet a foreign file,
            # or a lock held by another process that is creating the schema right now.
            retry_busy(
                lambda: connection.execute(f"PRAGMA synchronous = {synchronous}"),
                path,
                "open the database",
            )
    except sqlite3.DatabaseError as exc:  # "file is not a database" (busy is retried above)
        connection.close()
        raise IncompatibleDatabaseError(
            f"{path} is not a sqlite database ({exc}); it was left untouched"
        ) from exc
    except BaseException:
        connection.close()
        raise
    return connection


def _header(connection: sqlite3.Connection) -> tuple[int, int, int]:
    app_id = connection.execute("PRAGMA application_id").fetchone()[0]
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    return app_id, version, tables


def _check_header(path: Path, app_id: int, version: int, tables: int) -> bool:
    """Raise for a foreign or newer database; return True when the schema needs work."""
    if app_id == 0 and tables == 0:
        return True
    if app_id != APPLICATION_ID:
        raise IncompatibleDatabaseError(
            f"{path} is not a miniengine database (it is a sqlite file of another program); "
            "it was left untouched"
        )
    if version < 0 or (version == 0 and tables > 0):
        raise IncompatibleDatabaseError(
            f"{path} is a miniengine database, but its schema version ({version}) is not one "
            "miniengine writes: it was changed by hand. Restore it from a backup, or set the "
            "version its tables have again (PRAGMA user_version); it was left untouched"
        )
    if version > SCHEMA_VERSION:
        raise IncompatibleDatabaseError(
            f"{path} was written by a newer miniengine (schema version {version}, this version "
            f"understands up to {SCHEMA_VERSION}); upgrade miniengine to open it"
        )
    return version < SCHEMA_VERSION


def refuse_without_writing(path: Path) -> None:
    """Refuse a foreign or newer database that has a write-ahead log beside it, read-only.

    Closing the last read-write connection of a WAL database checkpoints the log into the file,
    so refusing such a file after opening it read-write would change it (a program that crashed
    leaves such a log).  A read-only connection never writes.  Without a log there is nothing to
    checkpoint, and :func:`ensure_schema` checks the header on the read-write connection.
    """
    if not Path(f"{os.fspath(path)}-wal").exists():
        return
    header: tuple[int, int, int] = (0, 0, 0)
    try:
        connection = sqlite3.connect(
            f"file:{quote(os.fsencode(path))}?mode=ro", uri=True, isolation_level=None, timeout=0
        )
    except sqlite3.Error:
        return  # the read-write path reports what is wrong
    try:

        def read_header() -> None:
            nonlocal header
            header = _header(connection)

        retry_busy(read_header, path, "read the database header")
    except (StoreError, sqlite3.Error):
        return
    finally:
        connection.close()
    _check_header(path, *header)


def ensure_schema(connection: sqlite3.Connection, path: Path) -> None:
    """Validate the file, then create or migrate the schema and switch to WAL, idempotently."""
    header: tuple[int, int, int] = (0, 0, 0)

    def read_header() -> None:
        nonlocal header
        header = _header(connection)

    try:
        retry_busy(read_header, path, "read the database header")
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        raise IncompatibleDatabaseError(
            f"{path} is not a sqlite database ({exc}); it was left untouched"
        ) from exc
    needs_work = _check_header(path, *header)
    if needs_work:
        retry_busy(lambda: _create_or_migrate(connection, path), path, "create the schema")
    retry_busy(lambda: _enable_wal(connection, path), path, "switch to WAL mode")


def _create_or_migrate(connection: sqlite3.Connection, path: Path) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        app_id, version, tables = _header(connection)
        if _check_header(path, app_id, version, tables):
            migrations = _migrations()
            for step in range(version, SCHEMA_VERSION):
                for statement in split_statements(migrations[step]):
                    connection.execute(statement)
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _enable_wal(connection: sqlite3.Connection, path: Path) -> None:
    mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != "wal":
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: cannot switch to WAL mode (journal mode is {mode})")
