"""The sqlite side of ``db copy``: dump a database file's tables in batches, or load them into an
empty one, in one transaction.

The dump reads one snapshot (a read transaction on a read-only connection: in WAL mode a writer
may go on meanwhile and the dump does not see it) and streams each table in key order, a batch
at a time.  The load holds the file's write lock (``BEGIN IMMEDIATE``) from the emptiness check
to the ``COMMIT``, so the copy is all or nothing and nobody writes in between.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniengine.exceptions import IncompatibleDatabaseError, StoreError
from miniengine.storage import schema
from miniengine.storage.repository import Repository

if TYPE_CHECKING:
    from miniengine.storage.copy import CopiedTable

__all__ = ["SqliteDump", "SqliteLoad", "sqlite_columns"]

_COLUMNS = "SELECT name FROM pragma_table_info(?) ORDER BY cid"


def sqlite_columns(connection: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    """The tables of the schema and their columns (sqlite's own tables left out)."""
    tables = [
        name
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    return {
        table: tuple(name for (name,) in connection.execute(_COLUMNS, (table,))) for table in tables
    }


def _select(table: CopiedTable) -> str:
    return f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {', '.join(table.order)}"


class SqliteDump:
    """A sqlite database file read for copying, in one snapshot (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise StoreError(f"no database at {path}")
        self.path = path
        self.location = str(path)
        self._connection = schema.connect(path, readonly=True)
        try:
            self._connection.execute("BEGIN")
            self._connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            self._connection.close()
            raise self._error("cannot read the database", exc) from exc

    def _error(self, what: str, exc: sqlite3.Error) -> StoreError:
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            return IncompatibleDatabaseError(f"{self.path} is not a sqlite database ({exc})")
        return schema.store_error(self.path, what, exc)

    def close(self) -> None:
        self._connection.close()

    def schema_version(self) -> int | None:
        """The schema version, ``None`` without a miniengine schema (an empty or foreign file)."""
        try:
            app_id = self._connection.execute("PRAGMA application_id").fetchone()[0]
            version = int(self._connection.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._error("cannot read the database header", exc) from exc
        return version if app_id == schema.APPLICATION_ID else None

    def columns(self) -> dict[str, tuple[str, ...]]:
        return sqlite_columns(self._connection)

    def count(self, table: str) -> int:
        try:
            return int(self._connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._error(f"cannot count the rows of {table}", exc) from exc

    def live_owners(self, now: float) -> dict[str, int]:
        """The owners of process leases that have not expired at ``now`` (scripts running
        processes with ``run()``, workers of a daemon), with how many processes each holds."""
        try:
            return {
                str(owner): int(count)
                for owner, count in self._connection.execute(
                    "SELECT owner, count(*) FROM nodes WHERE owner IS NOT NULL "
                    "AND lease_expires > ? GROUP BY owner ORDER BY owner",
                    (now,),
                )
            }
        except sqlite3.Error as exc:
            raise self._error("cannot read the leases", exc) from exc

    def live_workers(self, since: float) -> list[str]:
        """The workers whose last heartbeat is after ``since`` (a daemon serves the file)."""
        try:
            return [
                f"{worker} (pid {pid} on {host})"
                for worker, pid, host in self._connection.execute(
                    "SELECT id, pid, coalesce(nullif(host, ''), hostname) FROM workers "
                    "WHERE heartbeat > ? ORDER BY id",
                    (since,),
                )
            ]
        except sqlite3.Error as exc:
            raise self._error("cannot read the workers", exc) from exc

    def event_watermark(self) -> int:
        """The last event id ever handed out (pruned events included)."""
        try:
            row = self._connection.execute(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), "
                "coalesce((SELECT max(id) FROM events), 0))"
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._error("cannot read the events' sequence", exc) from exc
        return int(row[0])

    def rows(self, table: CopiedTable, batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of ``table`` in key order, ``batch_size`` at a time."""
        try:
            cursor = self._connection.execute(_select(table))
            while batch := cursor.fetchmany(batch_size):
                yield batch
        except sqlite3.Error as exc:
            raise self._error(f"cannot read {table.name}", exc) from exc

    def repository(self) -> Repository | None:
        return Repository.for_database(self.path)


class SqliteLoad:
    """An empty sqlite database (created if missing) filled in one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        schema.create_file(path)
        schema.refuse_without_writing(path)
        self._connection = schema.connect(path)
        try:
            schema.ensure_schema(self._connection, path)
        except BaseException:
            self._connection.close()
            raise

    def close(self) -> None:
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")
        self._connection.close()

    def columns(self) -> dict[str, tuple[str, ...]]:
        return sqlite_columns(self._connection)

    def occupied(self, tables: Sequence[str]) -> dict[str, int]:
        """The rows held by each of ``tables`` that holds any."""
        held: dict[str, int] = {}
        for table in tables:
            try:
                count = int(self._connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            except sqlite3.Error as exc:
                raise schema.store_error(
                    self.path, f"cannot count the rows of {table}", exc
                ) from exc
            if count:
                held[table] = count
        return held

    def repository(self) -> Repository | None:
        return Repository.for_database(self.path)

    def record_repository(self, root: Path) -> None:
        raise StoreError(
            f"{self.path}: a sqlite database keeps its files beside it "
            f"({Repository.for_database(self.path).root}); no other repository folder can be "
            "recorded for it"
        )

    def begin(self, tables: Sequence[str]) -> None:
        """Take the file's write lock (waiting for another writer as any write does): it keeps
        every other writer out, of ``tables`` and the rest, until the commit."""
        try:
            schema.retry_busy(
                lambda: self._connection.execute("BEGIN IMMEDIATE"), self.path, "lock the database"
            )
        except BaseException:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise

    def insert(self, table: CopiedTable, rows: Sequence[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" for _ in table.columns)
        try:
            self._connection.executemany(
                f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})", rows
            )
        except sqlite3.Error as exc:
            raise schema.store_error(self.path, f"cannot insert into {table.name}", exc) from exc

    def finish(self, tables: Sequence[CopiedTable], event_watermark: int) -> None:
        """Carry the events' sequence over, so no event id is handed out twice.  (Plain rowid
        tables number from their largest pk, as on the source.)"""
        current = self._connection.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
        ).fetchone()
        if current is None:
            self._connection.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (event_watermark,)
            )
        elif int(current[0]) < event_watermark:
            self._connection.execute(
                "UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (event_watermark,)
            )

    def commit(self) -> None:
        try:
            self._connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise schema.store_error(self.path, "cannot commit the copy", exc) from exc
        try:  # a copy leaves a write-ahead log as large as itself: fold it back in
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # a reader in the log: the engine's own checkpoints take it later

    def rollback(self) -> None:
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")
