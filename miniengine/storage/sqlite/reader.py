"""A sqlite database opened only to read, for the operator's read-only commands.

A :class:`~miniengine.storage.store.Store` would create a missing file, migrate an old one and
bring the event-loop machinery with it; this opens one plain connection in ``mode=ro`` instead,
after checking the file's header, and in WAL mode never waits for a writer.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast
from urllib.parse import quote

from miniengine.exceptions import IncompatibleDatabaseError, ReadOnlyDatabaseError, StoreError
from miniengine.storage.schema import APPLICATION_ID, SCHEMA_VERSION, readonly_uri
from miniengine.storage.sqlite.msgpack_functions import register as register_msgpack_functions
from miniengine.storage.sqlite.queries import SqliteQueries

if TYPE_CHECKING:
    from typing import Self

    from miniengine.storage.sqlite.broker import SqliteBroker
    from miniengine.storage.sqlite.calcjobs import SqliteCalcJobs
    from miniengine.storage.sqlite.provenance import SqliteProvenance
    from miniengine.storage.sqlite.query_builder import SqliteQueryBuilder
    from miniengine.storage.store import Store

__all__ = ["BUSY_TIMEOUT_MS", "SqliteReader"]

T = TypeVar("T")

#: How long a read waits for a lock (only a checkpoint that restarts the WAL takes one).
BUSY_TIMEOUT_MS = 5000


class SqliteReader:
    """:class:`miniengine.storage.interfaces.queries.Reader` on a sqlite file.

    ``check=False`` skips the header check (for a file about to be checked otherwise, such as
    a fresh backup); :meth:`check` runs it later.
    """

    __slots__ = ("_broker", "_calcjobs", "_connection", "_provenance", "path", "queries")

    readonly = True

    def __init__(self, path: Path, *, check: bool = True) -> None:
        self.path = path
        self._connection = self._open()
        try:
            if check:
                self.check()
        except BaseException:
            self._connection.close()
            raise
        self.queries = SqliteQueries(self)
        self._provenance: SqliteProvenance | None = None
        self._calcjobs: SqliteCalcJobs | None = None
        self._broker: SqliteBroker | None = None

    # The other concerns are built on first use: their modules import the checkpoint codec and
    # the data types, which a listing never needs (a read-only command starts in ~100 ms).  They
    # only call read() for their reads and the write methods below for their transactions.

    @property
    def provenance(self) -> SqliteProvenance:
        if self._provenance is None:
            from miniengine.storage.sqlite.provenance import SqliteProvenance

            self._provenance = SqliteProvenance(cast("Store", self))
        return self._provenance

    @property
    def broker(self) -> SqliteBroker:
        """The queue and the workers, to read (``db info`` lists the live workers)."""
        if self._broker is None:
            from miniengine.storage.sqlite.broker import SqliteBroker

            self._broker = SqliteBroker(cast("Store", self))
        return self._broker

    @property
    def calcjobs(self) -> SqliteCalcJobs:
        if self._calcjobs is None:
            from miniengine.storage.sqlite.calcjobs import SqliteCalcJobs

            self._calcjobs = SqliteCalcJobs(cast("Store", self))
        return self._calcjobs

    @property
    def query_builder(self) -> SqliteQueryBuilder:
        from miniengine.storage.sqlite.query_builder import SqliteQueryBuilder

        return SqliteQueryBuilder(cast("Store", self))  # two small objects: built per use

    @property
    def location(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"<SqliteReader {str(self.path)!r}>"

    def check(self) -> int:
        """The schema version, after checking that the file is one of ours we can read."""
        try:
            app_id = self._connection.execute("PRAGMA application_id").fetchone()[0]
            version = int(self._connection.execute("PRAGMA user_version").fetchone()[0])
            tables = self._connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.OperationalError as exc:  # unreadable, or locked beyond the busy timeout
            raise StoreError(f"{self.path}: cannot read the database: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            raise IncompatibleDatabaseError(
                f"{self.path} is not a sqlite database ({exc})"
            ) from exc
        if app_id == 0 and tables == 0:
            raise StoreError(f"{self.path} is empty: no miniengine database was created in it yet")
        if app_id != APPLICATION_ID:
            raise IncompatibleDatabaseError(
                f"{self.path} is not a miniengine database (a sqlite file of another program)"
            )
        if version > SCHEMA_VERSION:
            raise IncompatibleDatabaseError(
                f"{self.path} was written by a newer miniengine (schema version {version}; this "
                f"one understands up to {SCHEMA_VERSION}): upgrade miniengine to read it"
            )
        return version

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the read-only connection; a failing query is a
        :class:`StoreError` that names the file."""
        try:
            return fn(self._connection, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def backup(self, target: Path) -> None:
        # As a URI, so that a file name that is not UTF-8 reaches the file system intact.
        self.read(lambda c: c.execute("VACUUM INTO ?", (f"file:{quote(os.fsencode(target))}",)))

    def vacuum(self) -> None:
        from miniengine.storage import schema

        # The read connection is closed meanwhile, so that the writing one is the last to close
        # and removes the emptied write-ahead log, as after any last close.
        self._connection.close()
        try:
            connection = schema.connect(self.path)
            try:
                connection.execute("VACUUM")
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from exc
            finally:
                connection.close()
        finally:
            self._connection = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                readonly_uri(self.path),
                uri=True,
                isolation_level=None,
                timeout=BUSY_TIMEOUT_MS / 1e3,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the database: {exc}") from exc
        register_msgpack_functions(connection)  # queries on attributes
        return connection

    # writes: none ----------------------------------------------------------------------------

    def _refuse(self, *args: object) -> NoReturn:
        raise ReadOnlyDatabaseError(f"{self.path} was opened to read only: nothing can be stored")

    write_sync = write_sync_deferring_interrupt = write_sync_within = _refuse

    async def write(self, *args: object) -> NoReturn:
        self._refuse()

    # lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
