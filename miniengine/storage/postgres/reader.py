"""A PostgreSQL database opened only to read, for the operator's read-only commands.

A :class:`~miniengine.storage.postgres.store.PostgresStore` would create or migrate the schema
and start a listener and a heartbeat; this opens one autocommit connection in a read-only
session instead, after checking the schema version, so a command never changes the database.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from miniengine.exceptions import IncompatibleDatabaseError, ReadOnlyDatabaseError, StoreError
from miniengine.storage.postgres.connection import connect, store_error, without_password
from miniengine.storage.postgres.queries import PostgresQueries

if TYPE_CHECKING:
    from typing import Self

    from miniengine.storage.interfaces.queries import Reader
    from miniengine.storage.postgres.broker import PostgresBroker
    from miniengine.storage.postgres.calcjobs import PostgresCalcJobs
    from miniengine.storage.postgres.provenance import PostgresProvenance
    from miniengine.storage.postgres.query_builder import PostgresQueryBuilder
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresReader"]

T = TypeVar("T")


class PostgresReader:
    """:class:`miniengine.storage.interfaces.queries.Reader` on a PostgreSQL database.

    ``check=False`` skips the schema check; :meth:`check` runs it later.
    """

    __slots__ = ("_broker", "_calcjobs", "_connection", "_provenance", "location", "queries", "url")

    readonly = True

    def __init__(self, url: str, *, check: bool = True) -> None:
        import psycopg

        self.url = url
        self.location = without_password(url)
        self._connection = connect(url)
        try:
            # the server refuses every write of this session, whatever a caller tries
            self._connection.execute(b"SET default_transaction_read_only = on")
            if check:
                self.check()
        except psycopg.Error as exc:
            self._connection.close()
            raise store_error(self.location, "cannot read the database", exc) from exc
        except BaseException:
            self._connection.close()
            raise
        self.queries = PostgresQueries(cast("PostgresStore", self))
        self._provenance: PostgresProvenance | None = None
        self._calcjobs: PostgresCalcJobs | None = None
        self._broker: PostgresBroker | None = None

    # The other concerns are built on first use, as on sqlite; they only call read() for their
    # reads, and their transactions reach the write methods below, which refuse.

    @property
    def provenance(self) -> PostgresProvenance:
        if self._provenance is None:
            from miniengine.storage.postgres.provenance import PostgresProvenance

            self._provenance = PostgresProvenance(cast("PostgresStore", self))
        return self._provenance

    @property
    def broker(self) -> PostgresBroker:
        """The queue and the workers, to read (``db info`` lists the live workers)."""
        if self._broker is None:
            from miniengine.storage.postgres.broker import PostgresBroker

            self._broker = PostgresBroker(cast("PostgresStore", self))
        return self._broker

    @property
    def calcjobs(self) -> PostgresCalcJobs:
        if self._calcjobs is None:
            from miniengine.storage.postgres.calcjobs import PostgresCalcJobs

            self._calcjobs = PostgresCalcJobs(cast("PostgresStore", self))
        return self._calcjobs

    @property
    def query_builder(self) -> PostgresQueryBuilder:
        from miniengine.storage.postgres.query_builder import PostgresQueryBuilder

        return PostgresQueryBuilder(cast("PostgresStore", self))  # two small objects: per use

    def __repr__(self) -> str:
        return f"<PostgresReader {self.location!r}>"

    def check(self) -> int:
        """The schema version, after checking that the database holds a miniengine schema that
        this version can read."""
        from miniengine.storage.postgres.schema import SCHEMA_VERSION, read_schema_version

        version = self.read(read_schema_version)
        if version is None:
            raise StoreError(f"{self.location} has no miniengine database in it yet")
        if version > SCHEMA_VERSION:
            raise IncompatibleDatabaseError(
                f"{self.location} was written by a newer miniengine (schema version {version}; "
                f"this one understands up to {SCHEMA_VERSION}): upgrade miniengine to read it"
            )
        return version

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the read-only connection; a failing query is a
        :class:`StoreError` that names the database."""
        import psycopg

        try:
            return fn(self._connection, *args)
        except psycopg.Error as exc:
            raise store_error(self.location, "read failed", exc) from exc

    def backup(self, target: Path) -> None:
        raise StoreError(
            f"{self.location} is a PostgreSQL database: back it up with pg_dump (or copy it into "
            "a sqlite file with `db copy`)"
        )

    def vacuum(self) -> None:
        """``VACUUM`` the whole database (a write of the server's own, allowed in this session
        only for the statement)."""
        self.read(lambda connection: connection.execute(b"SET default_transaction_read_only = off"))
        try:
            self.read(lambda connection: connection.execute(b"VACUUM"))
        finally:
            self.read(
                lambda connection: connection.execute(b"SET default_transaction_read_only = on")
            )

    # writes: none ----------------------------------------------------------------------------

    def _refuse(self, *args: object) -> NoReturn:
        raise ReadOnlyDatabaseError(
            f"{self.location} was opened to read only: nothing can be stored"
        )

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


if TYPE_CHECKING:  # mypy checks here that the class implements the interface

    def _is_a_reader(reader: PostgresReader) -> Reader:
        return reader
