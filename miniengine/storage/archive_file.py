"""The small sqlite database inside an archive: its schema, writing it, and reading it back.

Its tables are those of :data:`~miniengine.storage.interfaces.archive.ARCHIVE_TABLES`, keyed by
the source database's pks, plus ``objects``: the repository keys the nodes' attributes name
(found in the msgpack blobs without decoding them, as ``db maintain`` does), so that creating an
archive knows which files to pack and importing one which files to expect.  The file is marked
as an archive (``application_id``) and carries its format version (``user_version``).

It is written by one connection without a journal (a failed export deletes the file) and read
through a read-only connection, after checking its integrity and that every reference in it
points at a row of it (``PRAGMA foreign_key_check``): an archive whose rows contradict each
other is refused before anything is imported.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from miniengine.exceptions import CorruptArchive
from miniengine.storage.interfaces.archive import ARCHIVE_TABLES
from miniengine.storage.repository_rows import _KEY_IN_MSGPACK

__all__ = ["ARCHIVE_APPLICATION_ID", "FORMAT_VERSION", "ArchiveDatabase", "ArchiveWriter"]

#: "MiAr" in ASCII: marks a sqlite file as a miniengine archive's database.
ARCHIVE_APPLICATION_ID = 0x4D694172

#: The version of the archive format this code writes (and the newest it reads).
FORMAT_VERSION = 1

_OBJECT_KEY = re.compile(r"^[0-9a-f]{64}$")

#: Rows per batch read from an archive's database.
BATCH = 5000

_SCHEMA = """
CREATE TABLE computers (
    pk              INTEGER PRIMARY KEY,
    uuid            TEXT NOT NULL,
    label           TEXT NOT NULL,
    hostname        TEXT NOT NULL,
    description     TEXT NOT NULL,
    transport_type  TEXT NOT NULL,
    scheduler_type  TEXT NOT NULL,
    metadata        BLOB NOT NULL,
    ctime           REAL NOT NULL,
    mtime           REAL NOT NULL
);
CREATE TABLE nodes (
    pk             INTEGER PRIMARY KEY,
    uuid           TEXT NOT NULL,
    node_type      TEXT NOT NULL,
    process_type   TEXT,
    process_label  TEXT,
    process_state  TEXT,
    process_status TEXT,
    exit_status    INTEGER,
    exit_message   TEXT,
    exception      TEXT,
    label          TEXT NOT NULL,
    description    TEXT NOT NULL,
    attributes     BLOB,
    extras         TEXT NOT NULL,
    ctime          REAL NOT NULL,
    mtime          REAL NOT NULL,
    computer_pk    INTEGER REFERENCES computers (pk),
    node_hash      TEXT
);
CREATE TABLE links (
    pk         INTEGER PRIMARY KEY,
    in_pk      INTEGER NOT NULL REFERENCES nodes (pk),
    out_pk     INTEGER NOT NULL REFERENCES nodes (pk),
    link_type  TEXT NOT NULL,
    label      TEXT NOT NULL
);
CREATE TABLE logs (
    pk         INTEGER PRIMARY KEY,
    node_pk    INTEGER NOT NULL REFERENCES nodes (pk),
    time       REAL NOT NULL,
    levelname  TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE TABLE comments (
    pk         INTEGER PRIMARY KEY,
    uuid       TEXT NOT NULL,
    node_pk    INTEGER NOT NULL REFERENCES nodes (pk),
    ctime      REAL NOT NULL,
    mtime      REAL NOT NULL,
    content    TEXT NOT NULL
);
CREATE TABLE groups (
    pk           INTEGER PRIMARY KEY,
    uuid         TEXT NOT NULL,
    label        TEXT NOT NULL,
    type_string  TEXT NOT NULL,
    description  TEXT NOT NULL,
    extras       TEXT NOT NULL,
    ctime        REAL NOT NULL
);
CREATE TABLE group_nodes (
    group_pk   INTEGER NOT NULL REFERENCES groups (pk),
    node_pk    INTEGER NOT NULL REFERENCES nodes (pk),
    PRIMARY KEY (group_pk, node_pk)
) WITHOUT ROWID;
CREATE TABLE objects (
    key        TEXT PRIMARY KEY
) WITHOUT ROWID;
"""

#: Built once the rows are in (a sorted build, much faster than keeping them up to date row by
#: row); an archive whose uuids repeat cannot be written, and one without them is refused.
_UNIQUE = """
CREATE UNIQUE INDEX computers_uuid ON computers (uuid);
CREATE UNIQUE INDEX nodes_uuid ON nodes (uuid);
CREATE UNIQUE INDEX comments_uuid ON comments (uuid);
CREATE UNIQUE INDEX groups_uuid ON groups (uuid)
"""

#: The tables keyed by an archive-local rowid (written in order; read back in that order).
_ROWID_TABLES = ("links", "logs", "comments")


def _unique_indexes() -> list[str]:
    return [statement.split()[3] for statement in _UNIQUE.split(";")]


def _insert(table: str) -> str:
    columns = ARCHIVE_TABLES[table]
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


class ArchiveWriter:
    """Writes an archive's database (the :class:`ArchiveSink` of an export)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection = sqlite3.connect(path, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode = OFF")
        self._connection.execute("PRAGMA synchronous = OFF")
        self._connection.execute("PRAGMA cache_size = -65536")  # 64 MiB: the index builds
        self._attributes_at = ARCHIVE_TABLES["nodes"].index("attributes")

    def begin(self) -> None:
        connection = self._connection
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        for (table,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        ).fetchall():
            connection.execute(f"DROP TABLE {table}")
        connection.execute(f"PRAGMA application_id = {ARCHIVE_APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        connection.execute("BEGIN")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)

    def write(self, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
        self._connection.executemany(_insert(table), rows)
        if table == "nodes":
            at = self._attributes_at
            keys = [
                (match.decode(),)
                for row in rows
                if row[at] is not None
                for match in _KEY_IN_MSGPACK.findall(bytes(row[at]))
            ]
            if keys:
                self._connection.executemany(
                    "INSERT INTO objects (key) VALUES (?) ON CONFLICT DO NOTHING", keys
                )

    @property
    def connection(self) -> sqlite3.Connection:
        """The archive's connection, for an export that fills it in SQL (sqlite sources)."""
        return self._connection

    def add_object_keys(self, blobs: Iterator[bytes]) -> None:
        """Record the repository keys named in these attribute blobs."""
        keys = [(match.decode(),) for blob in blobs for match in _KEY_IN_MSGPACK.findall(blob)]
        if keys:
            self._connection.executemany(
                "INSERT INTO objects (key) VALUES (?) ON CONFLICT DO NOTHING", keys
            )

    def commit(self) -> None:
        """Index the uuids and commit: the file is complete (and can still be read here)."""
        from miniengine.exceptions import ArchiveError

        try:
            for statement in _UNIQUE.split(";"):
                self._connection.execute(statement)
        except sqlite3.IntegrityError as exc:
            raise ArchiveError(f"the exported rows repeat a uuid ({exc})") from exc
        if self._connection.in_transaction:
            self._connection.execute("COMMIT")

    def object_keys(self) -> Iterator[str]:
        """The repository keys the written nodes name, in order."""
        for (key,) in self._connection.execute("SELECT key FROM objects ORDER BY key"):
            yield str(key)

    def groups(self) -> list[dict[str, Any]]:
        """The written groups with the number of their written nodes, by label."""
        return [
            {"uuid": uuid, "label": label, "type_string": type_string, "nodes": int(count)}
            for uuid, label, type_string, count in self._connection.execute(
                "SELECT uuid, label, type_string, "
                "(SELECT count(*) FROM group_nodes WHERE group_pk = groups.pk) "
                "FROM groups ORDER BY label, type_string"
            )
        ]

    def close(self) -> None:
        self._connection.close()


class ArchiveDatabase:
    """An archive's database read back (the :class:`ArchiveSource` of an import)."""

    def __init__(self, path: Path, shown: str) -> None:
        self.path = path
        self.shown = shown
        try:
            self._connection = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise CorruptArchive(f"{shown}: cannot open the archive's database: {exc}") from exc

    def close(self) -> None:
        self._connection.close()

    def check(self) -> None:
        """Refuse a database that is not an archive's, of a newer format, damaged, or whose
        rows name rows it does not hold."""
        from miniengine.exceptions import IncompatibleArchiveVersionError

        connection = self._connection
        try:
            app_id = connection.execute("PRAGMA application_id").fetchone()[0]
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if app_id != ARCHIVE_APPLICATION_ID:
                raise CorruptArchive(f"{self.shown}: its database is not an archive's")
            if version > FORMAT_VERSION:
                raise IncompatibleArchiveVersionError(
                    f"{self.shown}: its database has format version {version}; this miniengine "
                    f"reads up to version {FORMAT_VERSION}: import it with a newer miniengine"
                )
            problems = [row[0] for row in connection.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise CorruptArchive(
                    f"{self.shown}: its database is damaged: {'; '.join(problems[:3])}"
                )
            dangling = connection.execute("PRAGMA foreign_key_check").fetchmany(3)
            if dangling:
                named = "; ".join(
                    f"a row of {table} names a missing row of {parent}"
                    for table, _, parent, _ in dangling
                )
                raise CorruptArchive(f"{self.shown}: its database is inconsistent: {named}")
            entries = connection.execute("SELECT type, name FROM sqlite_master").fetchall()
            foreign = [f"{kind} {name}" for kind, name in entries if kind in ("view", "trigger")]
            if foreign:
                # an import reads these tables in SQL: nothing in the file may run code there
                raise CorruptArchive(
                    f"{self.shown}: its database holds {', '.join(foreign)}, which no archive has"
                )
            tables = {name for kind, name in entries if kind == "table"}
            present = tables | {name for kind, name in entries if kind == "index"}
            missing = [
                name
                for name in (*ARCHIVE_TABLES, "objects", *_unique_indexes())
                if name not in present
            ]
            if missing:
                raise CorruptArchive(f"{self.shown}: its database lacks {', '.join(missing)}")
            self._check_values()
        except sqlite3.Error as exc:
            raise CorruptArchive(f"{self.shown}: its database cannot be read: {exc}") from exc

    def _check_values(self) -> None:
        """Refuse values no export writes, which the import would copy as they are: a process
        that has not finished (its importer could not carry it on), a link of no known type,
        and extras that are not a JSON object."""
        from miniengine.core.links import LinkType

        connection = self._connection
        active = connection.execute(
            "SELECT pk, process_label, process_state FROM nodes "
            "WHERE process_state IN ('created', 'running', 'waiting') ORDER BY pk LIMIT 3"
        ).fetchall()
        if active:
            named = ", ".join(
                f"{pk} ({label or 'process'}, {state})" for pk, label, state in active
            )
            raise CorruptArchive(
                f"{self.shown}: its database holds processes that have not finished ({named}), "
                "which no archive holds"
            )
        types = [link.value for link in LinkType]
        bad_link = connection.execute(
            f"SELECT link_type FROM links WHERE link_type NOT IN ({', '.join('?' for _ in types)}) "
            "LIMIT 1",
            types,
        ).fetchone()
        if bad_link is not None:
            raise CorruptArchive(
                f"{self.shown}: its database holds a link of type {bad_link[0]!r}, which is no "
                f"link type ({', '.join(types)})"
            )
        for table in ("nodes", "groups"):
            bad_extras = connection.execute(
                f"SELECT pk FROM {table} WHERE NOT json_valid(extras) "
                "OR json_type(extras) != 'object' LIMIT 1"
            ).fetchone()
            if bad_extras is not None:
                raise CorruptArchive(
                    f"{self.shown}: the extras of its {table[:-1]} {bad_extras[0]} are not a "
                    "JSON object"
                )

    def count(self, table: str) -> int:
        return int(self._connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def object_keys(self) -> list[str]:
        """The repository keys the archive's nodes name (each checked to be a sha256)."""
        keys = [str(key) for (key,) in self._connection.execute("SELECT key FROM objects")]
        for key in keys:
            if not _OBJECT_KEY.match(key):
                raise CorruptArchive(f"{self.shown}: {key!r} is not a repository key")
        return keys

    def batches(
        self, table: str, columns: Sequence[str] | None = None
    ) -> Iterator[list[tuple[Any, ...]]]:
        order = (
            "rowid"
            if table in _ROWID_TABLES
            else ("group_pk, node_pk" if table == "group_nodes" else "pk")
        )
        names = ARCHIVE_TABLES[table] if columns is None else columns
        if not set(names) <= set(ARCHIVE_TABLES[table]):
            raise ValueError(
                f"{table} has no column {sorted(set(names) - set(ARCHIVE_TABLES[table]))}"
            )
        try:
            cursor = self._connection.execute(
                f"SELECT {', '.join(names)} FROM {table} ORDER BY {order}"
            )
            while rows := cursor.fetchmany(BATCH):
                yield rows
        except sqlite3.Error as exc:
            raise CorruptArchive(f"{self.shown}: cannot read its {table}: {exc}") from exc
