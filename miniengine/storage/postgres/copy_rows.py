"""The PostgreSQL side of ``db copy``: dump a database's tables in batches, or load them into an
empty one, in one transaction.

The dump reads in one ``REPEATABLE READ READ ONLY`` transaction (one snapshot) through a
server-side cursor per table, so a table of a million rows is never held by the client at once.
The load runs in one transaction that locks the tables against other writers (readers go on),
inserts with ``COPY`` (which writes the identity columns as given, so pks are kept), sets every
identity sequence after the largest pk copied, and notifies the commit channel as every write
does, so a daemon already waiting on the (empty) database looks at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniengine.exceptions import StoreError
from miniengine.storage.postgres import computer_rows
from miniengine.storage.postgres.attribute_rows import DERIVED_COLUMNS, backfill, nul_in_blob
from miniengine.storage.postgres.clock import SERVER_NOW
from miniengine.storage.postgres.connection import (
    COMMIT_CHANNEL,
    connect,
    store_error,
    without_password,
)
from miniengine.storage.postgres.schema import (
    REPOSITORY_KEY,
    ensure_schema,
    read_schema_version,
    write_meta_tx,
)
from miniengine.storage.repository import Repository, RepositoryError

if TYPE_CHECKING:
    import psycopg

    from miniengine.storage.copy import CopiedTable

__all__ = ["PostgresDump", "PostgresLoad", "postgres_columns"]


def postgres_columns(connection: psycopg.Connection[Any]) -> dict[str, tuple[str, ...]]:
    """The tables on the connection's ``search_path`` and their columns, in their order (but
    not the columns derived from others, which a load fills again: the attributes' JSON)."""
    found: dict[str, list[str]] = {}
    for table, column in connection.execute(
        "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
        "AND n.nspname = ANY(current_schemas(false)) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY c.relname, a.attnum"
    ):
        if str(column) not in DERIVED_COLUMNS.get(str(table), ()):
            found.setdefault(str(table), []).append(str(column))
    return {table: tuple(columns) for table, columns in found.items()}


def _repository(connection: psycopg.Connection[Any], location: str) -> Repository | None:
    import psycopg

    try:
        return computer_rows.repository(connection)
    except RepositoryError:
        return None
    except psycopg.Error as exc:
        raise store_error(location, "cannot read the repository folder", exc) from exc


class PostgresDump:
    """A PostgreSQL database read for copying, in one snapshot."""

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.location = without_password(url)
        self._connection = connect(url)
        # jsonb (extras) as its text, as sqlite holds it, rather than parsed into Python values
        from psycopg.types.string import TextLoader

        self._connection.adapters.register_loader("jsonb", TextLoader)
        try:
            self._connection.execute(b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        except psycopg.Error as exc:
            self._connection.close()
            raise store_error(self.location, "cannot read the database", exc) from exc
        self._cursors = 0

    def close(self) -> None:
        self._connection.close()

    def _error(self, what: str, exc: Exception) -> StoreError:
        return store_error(self.location, what, exc)

    def schema_version(self) -> int | None:
        """The schema version, ``None`` without a miniengine schema."""
        try:
            return read_schema_version(self._connection)
        except self._psycopg.Error as exc:
            raise self._error("cannot read the schema version", exc) from exc

    def columns(self) -> dict[str, tuple[str, ...]]:
        return postgres_columns(self._connection)

    def count(self, table: str) -> int:
        try:
            row = self._connection.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
        except self._psycopg.Error as exc:
            raise self._error(f"cannot count the rows of {table}", exc) from exc
        return 0 if row is None else int(row[0])

    def live_owners(self, now: float) -> dict[str, int]:
        """The owners of process leases that have not expired, by the server's clock as every
        lease (``now`` is for sqlite): scripts running processes with ``run()``, workers of a
        daemon; with how many processes each holds."""
        try:
            return {
                str(owner): int(count)
                for owner, count in self._connection.execute(
                    "SELECT owner, count(*) FROM nodes WHERE owner IS NOT NULL "
                    f"AND lease_expires > {SERVER_NOW} GROUP BY owner ORDER BY owner"
                )
            }
        except self._psycopg.Error as exc:
            raise self._error("cannot read the leases", exc) from exc

    def live_workers(self, since: float) -> list[str]:
        """The workers, of any host, whose last heartbeat is after ``since``."""
        try:
            return [
                f"{worker} (pid {pid} on {host})"
                for worker, pid, host in self._connection.execute(
                    "SELECT id, pid, coalesce(nullif(host, ''), hostname) FROM workers "
                    "WHERE heartbeat > %s ORDER BY id",
                    (since,),
                )
            ]
        except self._psycopg.Error as exc:
            raise self._error("cannot read the workers", exc) from exc

    def event_watermark(self) -> int:
        """The last event id handed out (pruned events included): the identity's last value."""
        try:
            row = self._connection.execute(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence('events', 'id'))"
            ).fetchone()
            largest = self._connection.execute("SELECT max(id) FROM events").fetchone()
        except self._psycopg.Error as exc:
            raise self._error("cannot read the events' sequence", exc) from exc
        values = [int(value[0]) for value in (row, largest) if value and value[0] is not None]
        return max(values, default=0)

    def rows(self, table: CopiedTable, batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of ``table`` in key order, ``batch_size`` at a time (a server-side cursor)."""
        self._cursors += 1
        query = (
            f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {', '.join(table.order)}"
        )
        try:
            with self._connection.cursor(name=f"miniengine_copy_{self._cursors}") as cursor:
                cursor.itersize = batch_size
                cursor.execute(query.encode())
                while batch := cursor.fetchmany(batch_size):
                    yield batch
        except self._psycopg.Error as exc:
            raise self._error(f"cannot read {table.name}", exc) from exc

    def repository(self) -> Repository | None:
        """The repository as the engine finds it on this host (``None``: there is none)."""
        return _repository(self._connection, self.location)


class PostgresLoad:
    """An empty PostgreSQL database (its schema created if missing) filled in one transaction."""

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.location = without_password(url)
        self._connection = connect(url)
        try:
            ensure_schema(self._connection, self.location)
        except BaseException:
            self._connection.close()
            raise
        self._began = False

    def close(self) -> None:
        self.rollback()
        self._connection.close()

    def _error(self, what: str, exc: Exception) -> StoreError:
        return store_error(self.location, what, exc)

    def columns(self) -> dict[str, tuple[str, ...]]:
        return postgres_columns(self._connection)

    def occupied(self, tables: Sequence[str]) -> dict[str, int]:
        """The rows held by each of ``tables`` that holds any."""
        held: dict[str, int] = {}
        try:
            for table in tables:
                row = self._connection.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
                if row is not None and row[0]:
                    held[table] = int(row[0])
        except self._psycopg.Error as exc:
            raise self._error("cannot count the rows of the database", exc) from exc
        return held

    def repository(self) -> Repository | None:
        """The repository as the engine finds it on this host (``None``: there is none)."""
        return _repository(self._connection, self.location)

    def record_repository(self, root: Path) -> None:
        """Record ``root`` as the repository folder (in the copy's transaction)."""
        try:
            write_meta_tx(self._connection, REPOSITORY_KEY, str(root))
        except self._psycopg.Error as exc:
            raise self._error("cannot record the repository folder", exc) from exc

    def begin(self, tables: Sequence[str]) -> None:
        """Start the transaction and keep other writers out of ``tables`` until it ends."""
        try:
            self._connection.execute(b"BEGIN ISOLATION LEVEL READ COMMITTED")
            self._began = True
            self._connection.execute(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE".encode())
        except self._psycopg.Error as exc:
            self.rollback()
            raise self._error("cannot lock the tables", exc) from exc

    def insert(self, table: CopiedTable, rows: Sequence[tuple[Any, ...]]) -> None:
        if table.name == "nodes":
            _refuse_nul(table, rows, self.location)
        statement = f"COPY {table.name} ({', '.join(table.columns)}) FROM STDIN"
        try:
            with self._connection.cursor() as cursor, cursor.copy(statement.encode()) as copy:
                for row in rows:
                    copy.write_row(row)
        except self._psycopg.Error as exc:
            raise self._error(f"cannot insert into {table.name}", exc) from exc

    def finish(self, tables: Sequence[CopiedTable], event_watermark: int) -> None:
        """Set each identity after the largest value copied (the events' after the source's
        last id handed out), so that new rows never reuse a copied pk; write the attributes'
        JSON copy of the nodes copied (a sqlite source has none)."""
        try:
            if any(table.name == "nodes" for table in tables):
                backfill(self._connection)
            for table in tables:
                if table.identity is None:
                    continue
                floor = event_watermark if table.name == "events" else 0
                self._connection.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{table.identity}'), "
                    f"greatest(coalesce(max({table.identity}), 0), %s) + 1, false) "
                    f"FROM {table.name}".encode(),
                    (floor,),
                )
        except self._psycopg.Error as exc:
            raise self._error("cannot set the identity sequences", exc) from exc

    def commit(self) -> None:
        try:
            self._connection.execute(f"NOTIFY {COMMIT_CHANNEL}; COMMIT".encode())
        except self._psycopg.Error as exc:
            self.rollback()
            raise self._error("cannot commit the copy", exc) from exc
        self._began = False

    def rollback(self) -> None:
        if not self._began:
            return
        self._began = False
        if self._connection.closed:
            return
        try:
            self._connection.execute(b"ROLLBACK")
        except self._psycopg.Error:
            pass  # a broken connection: the server rolls back what it ends


def _refuse_nul(table: CopiedTable, rows: Sequence[tuple[Any, ...]], location: str) -> None:
    """Refuse a batch of nodes holding one whose attributes PostgreSQL cannot store (NUL in a
    string: a sqlite database written before such values were refused), before it is written,
    naming the node; the copy's one transaction then leaves the target empty."""
    at, uuid = table.columns.index("attributes"), table.columns.index("uuid")
    for row in rows:
        path = nul_in_blob(row[at])
        if path is not None:
            where = f" {path}" if path.startswith("(") else f" at {path}" if path else ""
            raise StoreError(
                f"{location}: cannot copy the node {row[uuid]}: its attributes hold the "
                f"character NUL{where}, which PostgreSQL cannot store; nothing was copied "
                "(delete the node in the source, or copy into a sqlite file)"
            )
