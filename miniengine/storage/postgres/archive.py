"""The archive concern on PostgreSQL: the statements of :mod:`miniengine.storage.archive_rows`
with psycopg's parameter marker and ``jsonb`` extras (read as their text, written cast).

An export reads in one ``REPEATABLE READ READ ONLY`` transaction (one snapshot).  An import is
one transaction; the pks of its new nodes are drawn from the identity's sequence (other
writers go on meanwhile), and inserted with ``OVERRIDING SYSTEM VALUE``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from miniengine.exceptions import ArchiveError
from miniengine.storage import archive_rows
from miniengine.storage.interfaces.archive import (
    ArchiveSink,
    ArchiveSource,
    ExportSelection,
    ImportOptions,
    ImportReport,
)
from miniengine.storage.postgres.attribute_rows import json_of_blob, nul_in_blob
from miniengine.storage.postgres.rows import Connection
from miniengine.storage.postgres.transaction import PostgresTransaction

if TYPE_CHECKING:
    from miniengine.storage.postgres.store import PostgresStore

__all__ = ["PostgresArchives"]


def _allocate(connection: Connection, count: int) -> list[int]:
    """``count`` pks drawn from the sequence of ``nodes.pk`` (another writer's may interleave).
    The sequence is looked up once: as an argument of ``nextval`` in the same row it would be
    looked up again for every pk (0.3 s of server CPU per 100,000 pks)."""
    row = connection.execute(
        "WITH s AS MATERIALIZED (SELECT pg_get_serial_sequence('nodes', 'pk')::regclass AS seq) "
        "SELECT array_agg(nextval(s.seq)) FROM s, generate_series(1, %s)",
        (count,),
    ).fetchone()
    return [int(pk) for pk in row[0]] if row is not None and row[0] is not None else []


def _copy(connection: Connection, table: str, columns: Sequence[str], rows: Iterable[Any]) -> None:
    """``COPY ... FROM STDIN``: several times faster than inserting row by row, and it writes
    the identity column as given (the pks drawn from its sequence).  ``rows`` stream: the
    server stores what it has while the client prepares the next.  New nodes get the JSON
    copy of their attributes in the same row."""
    names = list(columns)
    if table == "nodes":
        at = names.index("attributes")
        rows = _storable(rows, at, names.index("uuid"))
        names.append("attributes_json")
        rows = ((*row, json_of_blob(row[at])) for row in rows)
    with connection.cursor().copy(f"COPY {table} ({', '.join(names)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _storable(rows: Iterable[Any], at: int, uuid: int) -> Iterator[Any]:
    """``rows``, each checked before it is written: an archive made from a sqlite database
    of an older version may hold a node whose attributes PostgreSQL cannot store (NUL)."""
    for row in rows:
        path = nul_in_blob(row[at])
        if path is not None:
            where = f" {path}" if path.startswith("(") else f" at {path}" if path else ""
            raise ArchiveError(
                f"the archive's node {row[uuid]} holds the character NUL in its attributes"
                f"{where}, which PostgreSQL cannot store; nothing was imported (import the "
                "archive into a sqlite database, or export without that node)"
            )
        yield row


DIALECT = archive_rows.Dialect(
    mark="%s",
    extras_out="extras::text",
    extras_in="CAST(%s AS jsonb)",
    overriding="OVERRIDING SYSTEM VALUE",
    begin_snapshot="BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    allocate=_allocate,
    copy=_copy,
    arrays=True,
    array_mark="%b",
)


def _export(
    connection: Connection, selection: ExportSelection, sink: ArchiveSink
) -> dict[str, int]:
    return archive_rows.export_rows(connection, selection, sink, DIALECT)


def import_rows_tx(
    connection: Connection, source: ArchiveSource, options: ImportOptions
) -> ImportReport:
    """Merge an archive into the database (see ``Archives.import_rows``); the new nodes carry
    the JSON copy of their attributes that queries read (written with them by ``COPY``).

    Reading a large archive may keep the transaction waiting for this process between two
    statements longer than the writer's limit for a stalled session, so it is lifted here."""
    connection.execute(b"SET LOCAL idle_in_transaction_session_timeout = 0")
    return archive_rows.import_rows(connection, source, options, DIALECT)


#: Attempts of an import whose rows another writer committed first (unique_violation).
_ATTEMPTS = 3


class PostgresArchives:
    """:class:`miniengine.storage.interfaces.archive.Archives` on a :class:`PostgresStore`."""

    __slots__ = ("_import", "_store")

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._import = PostgresTransaction(store, import_rows_tx)

    def export_rows(self, selection: ExportSelection, sink: ArchiveSink) -> dict[str, int]:
        return self._store.read(_export, selection, sink)

    def import_rows(self, source: ArchiveSource, options: ImportOptions) -> ImportReport:
        """One transaction, run again whole when another writer committed a row of the same
        uuid (or label) first: it looked new to this import, which finds it the next time and
        merges it (two imports of one archive at once both succeed)."""
        from miniengine.exceptions import StoreError

        for attempt in range(_ATTEMPTS):
            try:
                return self._import(source, options)
            except StoreError as exc:
                cause = exc.__cause__
                if attempt + 1 == _ATTEMPTS or getattr(cause, "sqlstate", None) != "23505":
                    raise
        raise AssertionError("unreachable")
