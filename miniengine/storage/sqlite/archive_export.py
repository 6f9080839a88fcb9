"""Filling an archive's database from a sqlite database in SQL.

The source is attached read-only to the archive's connection, inside the transaction that
writes the archive, so every read comes from one snapshot of the source (WAL: the daemon may go
on writing meanwhile) and every row goes from one file to the other without becoming a Python
object.  The nodes of a selection are found as AiiDA's export rules say by growing a temporary
table of pks along the links, one ``INSERT ... SELECT`` per rule and round, until a round adds
nothing (the same closure as :func:`miniengine.storage.traversal_rows.traverse`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from miniengine.exceptions import ArchiveError
from miniengine.storage import schema
from miniengine.storage.archive_file import ArchiveWriter
from miniengine.storage.interfaces.archive import ARCHIVE_TABLES, ExportSelection

__all__ = ["export_into"]

_ACTIVE = ("created", "running", "waiting")


def _columns(table: str, alias: str) -> str:
    return ", ".join(f"{alias}.{column}" for column in ARCHIVE_TABLES[table])


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def export_into(writer: ArchiveWriter, source: Path, selection: ExportSelection) -> dict[str, int]:
    """Write ``selection`` of the database file ``source`` into the archive ``writer``."""
    c = writer.connection
    writer.begin()
    # read-only, and immutable in a folder this user cannot write (as the store reads it)
    c.execute("ATTACH DATABASE ? AS source", (schema.readonly_uri(source),))
    c.execute("CREATE TEMP TABLE export_nodes (pk INTEGER PRIMARY KEY)")
    if selection.everything:
        chosen = ""
    else:
        _select(c, selection)
        chosen = "WHERE {} IN (SELECT pk FROM temp.export_nodes)"
    _refuse_unfinished(c, chosen)
    counts = dict.fromkeys(ARCHIVE_TABLES, 0)

    def copy(table: str, query: str, params: tuple[object, ...] = ()) -> None:
        c.execute(f"INSERT INTO main.{table} ({', '.join(ARCHIVE_TABLES[table])}) {query}", params)
        counts[table] = int(c.execute("SELECT changes()").fetchone()[0])

    where = chosen.format("n.pk")
    copy("nodes", f"SELECT {_columns('nodes', 'n')} FROM source.nodes n {where} ORDER BY n.pk")
    both = chosen.format("l.in_pk") + (
        " AND l.out_pk IN (SELECT pk FROM temp.export_nodes)" if chosen else ""
    )
    copy("links", f"SELECT {_columns('links', 'l')} FROM source.links l {both} ORDER BY l.pk")
    if selection.include_logs:
        where = chosen.format("g.node_pk")
        copy("logs", f"SELECT {_columns('logs', 'g')} FROM source.logs g {where} ORDER BY g.pk")
    if selection.include_comments:
        where = chosen.format("k.node_pk")
        copy(
            "comments",
            f"SELECT {_columns('comments', 'k')} FROM source.comments k {where} ORDER BY k.pk",
        )
    groups = sorted(set(selection.group_pks))
    where = "" if selection.everything else f"WHERE g.pk IN ({_marks(len(groups))})"
    copy(
        "groups",
        f"SELECT {_columns('groups', 'g')} FROM source.groups g {where} ORDER BY g.pk",
        () if selection.everything else tuple(groups),
    )
    members = chosen.format("m.node_pk").replace("WHERE", "AND")
    copy(
        "group_nodes",
        f"SELECT {_columns('group_nodes', 'm')} FROM source.group_nodes m "
        f"WHERE m.group_pk IN (SELECT pk FROM main.groups) {members} "
        "ORDER BY m.group_pk, m.node_pk",
    )
    copy(
        "computers",
        f"SELECT {_columns('computers', 'k')} FROM source.computers k WHERE k.pk IN "
        "(SELECT computer_pk FROM main.nodes WHERE computer_pk IS NOT NULL) ORDER BY k.pk",
    )
    writer.add_object_keys(
        bytes(blob)
        for (blob,) in c.execute(
            "SELECT attributes FROM main.nodes WHERE attributes IS NOT NULL "
            "AND instr(attributes, CAST('_repository' AS BLOB)) > 0"
        )
    )
    return counts


def _select(c: sqlite3.Connection, selection: ExportSelection) -> None:
    """Fill ``temp.export_nodes`` with the nodes and group members given and what the export
    rules reach from them."""
    for pk in selection.node_pks:
        c.execute(
            "INSERT OR IGNORE INTO temp.export_nodes SELECT pk FROM source.nodes WHERE pk = ?",
            (pk,),
        )
    for group_pk in selection.group_pks:
        c.execute(
            "INSERT OR IGNORE INTO temp.export_nodes "
            "SELECT node_pk FROM source.group_nodes WHERE group_pk = ?",
            (group_pk,),
        )
    forward, backward = sorted(selection.links.forward), sorted(selection.links.backward)
    steps = [
        (forward, "l.out_pk", "l.in_pk"),
        (backward, "l.in_pk", "l.out_pk"),
    ]
    while True:
        added = 0
        for types, reached, known in steps:
            if not types:
                continue
            c.execute(
                f"INSERT OR IGNORE INTO temp.export_nodes SELECT {reached} FROM source.links l "
                f"JOIN temp.export_nodes e ON e.pk = {known} "
                f"WHERE l.link_type IN ({_marks(len(types))})",
                types,
            )
            added += int(c.execute("SELECT changes()").fetchone()[0])
        if not added:
            return


def _refuse_unfinished(c: sqlite3.Connection, chosen: str) -> None:
    where = chosen.format("pk").replace("WHERE", "AND")
    found = c.execute(
        f"SELECT pk, process_label, process_state FROM source.nodes "
        f"WHERE process_state IN ({_marks(len(_ACTIVE))}) {where} ORDER BY pk",
        _ACTIVE,
    ).fetchall()
    if found:
        named = ", ".join(f"{pk} ({label or 'process'}, {state})" for pk, label, state in found)
        raise ArchiveError(
            f"refusing to export processes that have not finished: {named}; wait until they "
            "finish (or kill them), or leave them out: an archive holds finished provenance "
            "only, since its importer could not carry on a process"
        )
