"""The archive concern on sqlite: the statements of :mod:`miniengine.storage.archive_rows` with
sqlite's parameter marker and JSON-text extras.

An export reads on this thread's read connection inside one ``BEGIN`` (a WAL snapshot: the
daemon may go on writing meanwhile).  An import is one ``BEGIN IMMEDIATE`` transaction, which
holds the file's write lock throughout, so the pks of new nodes are simply taken after the
largest one.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from miniengine.storage import archive_rows
from miniengine.storage.interfaces.archive import (
    ArchiveSink,
    ArchiveSource,
    ExportSelection,
    ImportOptions,
    ImportReport,
)
from miniengine.storage.sqlite.transaction import SqliteTransaction

if TYPE_CHECKING:
    from miniengine.storage.store import Store

__all__ = ["SqliteArchives"]


def _allocate(connection: sqlite3.Connection, count: int) -> list[int]:
    top = int(connection.execute("SELECT coalesce(max(pk), 0) FROM nodes").fetchone()[0])
    return list(range(top + 1, top + 1 + count))


DIALECT = archive_rows.Dialect(
    mark="?",
    extras_out="extras",
    extras_in="?",
    overriding="",
    begin_snapshot="BEGIN",
    allocate=_allocate,
)


def _export(
    connection: sqlite3.Connection, selection: ExportSelection, sink: ArchiveSink
) -> dict[str, int]:
    return archive_rows.export_rows(connection, selection, sink, DIALECT)


def import_rows_tx(
    connection: sqlite3.Connection, source: ArchiveSource, options: ImportOptions
) -> ImportReport:
    """Merge an archive into the database (see ``Archives.import_rows``)."""
    return archive_rows.import_rows(connection, source, options, DIALECT)


class SqliteArchives:
    """:class:`miniengine.storage.interfaces.archive.Archives` on a :class:`Store`."""

    __slots__ = ("_store", "import_rows")

    def __init__(self, store: Store) -> None:
        self._store = store
        self.import_rows = SqliteTransaction(store, import_rows_tx)

    def export_rows(self, selection: ExportSelection, sink: ArchiveSink) -> dict[str, int]:
        return self._store.read(_export, selection, sink)
