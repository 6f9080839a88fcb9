"""The archive concern on sqlite.

An export runs the statements of :mod:`miniengine.storage.archive_rows` on this thread's read
connection inside one ``BEGIN`` (a WAL snapshot: the daemon may go on writing meanwhile).

An import works in SQL, not row by row in Python: the archive's database is attached to a
connection of its own on the target file, and nodes, links, logs, comments and memberships are
each copied by one ``INSERT ... SELECT`` through a temporary table that maps the archive's pks
to the target's (the nodes the target has, found by uuid, and new pks after its largest one),
all in one ``BEGIN IMMEDIATE`` transaction, which holds the file's write lock throughout.  The
few computers and groups, and the extras of nodes the target has, go through the shared
statements.  It is several times faster than binding every row from Python, and holds no row
in memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from miniengine.storage import archive_rows, schema
from miniengine.storage.interfaces.archive import (
    ARCHIVE_TABLES,
    ArchiveSink,
    ArchiveSource,
    ExportSelection,
    ImportOptions,
    ImportReport,
)
from miniengine.storage.interfaces.groups import dump_extras

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

_MAPS = """
CREATE TEMP TABLE archive_nodes (
    archive_pk  INTEGER PRIMARY KEY,
    pk          INTEGER NOT NULL,
    new         INTEGER NOT NULL
);
CREATE TEMP TABLE archive_computers (archive_pk INTEGER PRIMARY KEY, pk INTEGER NOT NULL);
CREATE TEMP TABLE archive_groups (archive_pk INTEGER PRIMARY KEY, pk INTEGER NOT NULL)
"""

_NODE_COLUMNS = ARCHIVE_TABLES["nodes"]


def _new_node_values() -> str:
    """The columns of a new node, read from the archive (``a``) and the pk map (``m``)."""
    values = []
    for column in _NODE_COLUMNS:
        if column == "pk":
            values.append("m.pk")
        elif column == "extras":
            values.append("CASE WHEN ? THEN a.extras ELSE '{}' END")
        elif column == "computer_pk":
            values.append(
                "(SELECT c.pk FROM temp.archive_computers c WHERE c.archive_pk = a.computer_pk)"
            )
        else:
            values.append(f"a.{column}")
    return ", ".join(values)


_INSERT_NODES = (
    f"INSERT INTO main.nodes ({', '.join(_NODE_COLUMNS)}) "
    f"SELECT {_new_node_values()} FROM archive.nodes a "
    "JOIN temp.archive_nodes m ON m.archive_pk = a.pk WHERE m.new ORDER BY m.pk"
)

_INSERT_LINKS = """
INSERT INTO main.links (in_pk, out_pk, link_type, label)
SELECT i.pk, o.pk, l.link_type, l.label FROM archive.links l
JOIN temp.archive_nodes i ON i.archive_pk = l.in_pk
JOIN temp.archive_nodes o ON o.archive_pk = l.out_pk
WHERE i.new OR o.new OR NOT EXISTS (
    SELECT 1 FROM main.links x
    WHERE x.out_pk = o.pk AND x.in_pk = i.pk AND x.link_type = l.link_type AND x.label = l.label
)
ORDER BY l.rowid
"""

_INSERT_LOGS = """
INSERT INTO main.logs (node_pk, time, levelname, message)
SELECT m.pk, g.time, g.levelname, g.message FROM archive.logs g
JOIN temp.archive_nodes m ON m.archive_pk = g.node_pk WHERE m.new ORDER BY g.rowid
"""

_INSERT_COMMENTS = """
INSERT INTO main.comments (uuid, node_pk, ctime, mtime, content)
SELECT c.uuid, m.pk, c.ctime, c.mtime, c.content FROM archive.comments c
JOIN temp.archive_nodes m ON m.archive_pk = c.node_pk
WHERE NOT EXISTS (SELECT 1 FROM main.comments x WHERE x.uuid = c.uuid)
ORDER BY c.rowid
"""

_INSERT_MEMBERS = """
INSERT INTO main.group_nodes (group_pk, node_pk)
SELECT g.pk, m.pk FROM archive.group_nodes gn
JOIN temp.archive_groups g ON g.archive_pk = gn.group_pk
JOIN temp.archive_nodes m ON m.archive_pk = gn.node_pk
WHERE true ON CONFLICT DO NOTHING
"""


def _export(
    connection: sqlite3.Connection, selection: ExportSelection, sink: ArchiveSink
) -> dict[str, int]:
    return archive_rows.export_rows(connection, selection, sink, DIALECT)


def _changes(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT changes()").fetchone()[0])


def import_rows_tx(
    connection: sqlite3.Connection, source: ArchiveSource, options: ImportOptions
) -> ImportReport:
    """Merge the archive attached as ``archive`` into ``main`` (see the module's docstring);
    the caller holds the transaction."""
    report = ImportReport(dry_run=options.dry_run)
    for statement in _MAPS.split(";"):
        connection.execute(statement)
    computers = archive_rows.import_computers(connection, source, report, DIALECT)
    connection.executemany(
        "INSERT INTO temp.archive_computers (archive_pk, pk) VALUES (?, ?)", computers.items()
    )
    connection.execute(
        "INSERT INTO temp.archive_nodes (archive_pk, pk, new) "
        "SELECT a.pk, n.pk, 0 FROM archive.nodes a JOIN main.nodes n ON n.uuid = a.uuid"
    )
    report.existing_nodes = _changes(connection)
    top = int(connection.execute("SELECT coalesce(max(pk), 0) FROM main.nodes").fetchone()[0])
    connection.execute(
        "INSERT INTO temp.archive_nodes (archive_pk, pk, new) "
        "SELECT a.pk, ? + row_number() OVER (ORDER BY a.pk), 1 FROM archive.nodes a "
        "WHERE NOT EXISTS (SELECT 1 FROM temp.archive_nodes m WHERE m.archive_pk = a.pk)",
        (top,),
    )
    connection.execute(_INSERT_NODES, (options.extras_mode_new == "import",))
    report.new_nodes = _changes(connection)
    if report.existing_nodes and options.extras_mode_existing != "none":
        _merge_existing_extras(connection, options, report)
    connection.execute(_INSERT_LINKS)
    report.new_links = _changes(connection)
    connection.execute(_INSERT_LOGS)
    report.new_logs = _changes(connection)
    connection.execute(_INSERT_COMMENTS)
    report.new_comments = _changes(connection)
    groups = archive_rows.import_groups(connection, source, report, DIALECT)
    connection.executemany(
        "INSERT INTO temp.archive_groups (archive_pk, pk) VALUES (?, ?)", groups.items()
    )
    connection.execute(_INSERT_MEMBERS)
    report.group_members_added = _changes(connection)
    count = int(connection.execute("SELECT count(*) FROM temp.archive_nodes").fetchone()[0])
    made = archive_rows.import_group(connection, options, report, count, DIALECT)
    if made is not None:
        connection.execute(
            "INSERT INTO main.group_nodes (group_pk, node_pk) "
            "SELECT ?, pk FROM temp.archive_nodes WHERE true ON CONFLICT DO NOTHING",
            (made[0],),
        )
    if options.dry_run:
        raise archive_rows.DryRunDone(report)
    return report


def _merge_existing_extras(
    connection: sqlite3.Connection, options: ImportOptions, report: ImportReport
) -> None:
    """Merge the archive's extras into those of the nodes the target had, a page at a time."""
    last = -1
    while True:
        rows = connection.execute(
            "SELECT m.archive_pk, m.pk, a.extras, n.extras FROM temp.archive_nodes m "
            "JOIN archive.nodes a ON a.pk = m.archive_pk JOIN main.nodes n ON n.pk = m.pk "
            "WHERE NOT m.new AND m.archive_pk > ? ORDER BY m.archive_pk LIMIT 5000",
            (last,),
        ).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        updates: list[tuple[str, int]] = []
        for _, pk, archived, current in rows:
            old = archive_rows.loads_extras(current)
            merged = archive_rows.merge_extras(
                options.extras_mode_existing, old, archive_rows.loads_extras(archived)
            )
            if merged != old:
                updates.append((dump_extras(merged), pk))
        if updates:
            connection.executemany("UPDATE main.nodes SET extras = ? WHERE pk = ?", updates)
            report.updated_extras += len(updates)


class SqliteArchives:
    """:class:`miniengine.storage.interfaces.archive.Archives` on a :class:`Store`."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    def export_rows(self, selection: ExportSelection, sink: ArchiveSink) -> dict[str, int]:
        """Into an archive's database: in SQL, with this database attached to it read-only
        (:mod:`miniengine.storage.sqlite.archive_export`); into any other sink, row by row."""
        from miniengine.storage.archive_file import ArchiveWriter

        if isinstance(sink, ArchiveWriter):
            from miniengine.storage.sqlite.archive_export import export_into

            try:
                return export_into(sink, self._store.path, selection)
            except sqlite3.Error as exc:
                raise schema.store_error(self._store.path, "cannot export", exc) from exc
        return self._store.read(_export, selection, sink)

    def import_rows(self, source: ArchiveSource, options: ImportOptions) -> ImportReport:
        """One ``BEGIN IMMEDIATE`` transaction on a connection of its own, with the archive's
        database attached read-only (see the module's docstring)."""
        store = self._store
        store.check_writable()
        connection = schema.connect(store.path, synchronous=store.synchronous)
        try:
            connection.execute(
                "ATTACH DATABASE ? AS archive",
                (f"file:{quote(str(source.path))}?mode=ro",),
            )
            return _in_transaction(connection, store, import_rows_tx, source, options)
        except sqlite3.Error as exc:
            raise schema.store_error(store.path, "cannot import the archive", exc) from exc
        finally:
            connection.close()


def _in_transaction(
    connection: sqlite3.Connection,
    store: Store,
    fn: Callable[..., ImportReport],
    *args: Any,
) -> ImportReport:
    schema.retry_busy(
        lambda: connection.execute("BEGIN IMMEDIATE"), store.path, "lock the database"
    )
    try:
        report = fn(connection, *args)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    try:  # an import of many nodes leaves a large write-ahead log: fold it back in
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error:
        pass  # busy readers or writers: the engine's own checkpoints take it later
    return report
