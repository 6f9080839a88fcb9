"""The statements of the archive concern, written once for both backends.

They differ in the parameter marker, in how extras cross the boundary (sqlite keeps them as JSON
text, PostgreSQL as ``jsonb``), in how a read snapshot starts and in how pks for new nodes are
taken; each backend passes a :class:`Dialect`.

An export reads in one snapshot: it works out the nodes (AiiDA's export rules, the traversal of
:mod:`miniengine.storage.traversal_rows`), refuses processes that have not finished, then pages
through each table (keyset pages, or batched ``IN`` lists of the selected pks) and hands every
page to the sink.  An import maps the archive's pks to the target's through uuids, a batch at a
time; only the maps of pks (two integers per node) stay in memory, never the rows.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from miniengine.exceptions import ArchiveError, CorruptArchive
from miniengine.storage import traversal_rows
from miniengine.storage.interfaces.archive import (
    ARCHIVE_TABLES,
    ArchiveSink,
    ArchiveSource,
    ExportSelection,
    ImportOptions,
    ImportReport,
)
from miniengine.storage.interfaces.groups import dump_extras

__all__ = [
    "Dialect",
    "DryRunDone",
    "export_rows",
    "import_computers",
    "import_groups",
    "import_rows",
    "loads_extras",
    "merge_extras",
]

#: Rows per page of an export, and pks per ``IN`` list (far below either backend's limit).
PAGE = 5000
_IN_BATCH = traversal_rows._BATCH

_ACTIVE = ("created", "running", "waiting")


class _Connection(Protocol):
    def execute(self, query: Any, params: Any = ..., /) -> Any: ...
    def cursor(self) -> Any: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends (see the module's docstring)."""

    mark: str
    #: the expression that reads a row's extras as JSON text
    extras_out: str
    #: the placeholder that writes JSON text into an extras column
    extras_in: str
    #: the clause that lets an INSERT give an identity column its value
    overriding: str
    begin_snapshot: str
    #: ``allocate(connection, count)``: ``count`` unused pks for new nodes
    allocate: Callable[[Any, int], list[int]]
    #: ``copy(connection, table, columns, rows)``: a faster bulk insert of plain rows (extras
    #: as JSON text, pks as given) streamed from an iterable, or None for ``executemany``
    copy: Callable[[Any, str, Sequence[str], Iterable[Any]], None] | None = None
    #: whether ``column = ANY(array)`` takes a list of values as one parameter (else ``IN``
    #: lists of one parameter per value): one parameter is parsed and sent far faster
    arrays: bool = False
    #: the marker of that one parameter (PostgreSQL's ``%b`` sends it in binary, which psycopg
    #: writes about four times faster than an array's text)
    array_mark: str = "%s"

    def member(self, column: str, values: list[Any]) -> tuple[str, list[Any]]:
        """The condition ``column`` is one of ``values``, and its parameters."""
        if self.arrays:
            return f"{column} = ANY({self.array_mark})", [values]
        return f"{column} IN ({_marks(self.mark, len(values))})", values

    def batches(self, values: Iterable[Any]) -> Iterator[list[Any]]:
        """``values`` in lists short enough for one :meth:`member` condition each."""
        return _chunks(values, PAGE if self.arrays else _IN_BATCH)


class DryRunDone(Exception):
    """Raised at the end of an import with ``dry_run``, so its transaction rolls back; carries
    the report of what it would have done."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__("dry run: rolled back")
        self.report = report


def _marks(mark: str, count: int) -> str:
    return ", ".join([mark] * count)


def _chunks(values: Iterable[Any], size: int = _IN_BATCH) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# export -------------------------------------------------------------------------------------


def export_rows(
    connection: _Connection, selection: ExportSelection, sink: ArchiveSink, d: Dialect
) -> dict[str, int]:
    """Write the rows of ``selection`` to ``sink`` from one read snapshot (see the module)."""
    connection.execute(d.begin_snapshot)
    try:
        return _export(connection, selection, sink, d)
    finally:
        with contextlib.suppress(Exception):
            connection.execute("ROLLBACK")


def _columns(table: str, d: Dialect) -> str:
    return ", ".join(
        d.extras_out if column == "extras" else column for column in ARCHIVE_TABLES[table]
    )


def _export(
    connection: _Connection, selection: ExportSelection, sink: ArchiveSink, d: Dialect
) -> dict[str, int]:
    m = d.mark
    selected: set[int] | None = None
    if not selection.everything:
        start = list(selection.node_pks)
        for group_pk in selection.group_pks:
            start.extend(_group_members(connection, group_pk, d))
        selected = traversal_rows.traverse(connection, start, selection.links, m)
    _refuse_unfinished(connection, selected, d)
    sink.begin()
    counts = dict.fromkeys(ARCHIVE_TABLES, 0)

    def write(table: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            sink.write(table, rows)
            counts[table] += len(rows)

    pks = None if selected is None else sorted(selected)
    computer_index = ARCHIVE_TABLES["nodes"].index("computer_pk")
    computers: set[int] = set()
    for rows in _rows(connection, "nodes", _columns("nodes", d), "pk", pks, d):
        computers.update(row[computer_index] for row in rows if row[computer_index] is not None)
        write("nodes", rows)
    for rows in _rows(connection, "links", _columns("links", d), "in_pk", pks, d):
        if selected is not None:
            rows = [row for row in rows if row[1] in selected]
        write("links", rows)
    if selection.include_logs:
        for rows in _rows(connection, "logs", _columns("logs", d), "node_pk", pks, d):
            write("logs", rows)
    if selection.include_comments:
        for rows in _rows(connection, "comments", _columns("comments", d), "node_pk", pks, d):
            write("comments", rows)
    group_pks = None if selection.everything else sorted(set(selection.group_pks))
    exported_groups: list[int] = []
    for rows in _rows(connection, "groups", _columns("groups", d), "pk", group_pks, d):
        exported_groups.extend(row[0] for row in rows)
        write("groups", rows)
    for group_pk in exported_groups:
        for members in _chunks(_group_members(connection, group_pk, d), PAGE):
            if selected is not None:
                members = [pk for pk in members if pk in selected]
            write("group_nodes", [(group_pk, pk) for pk in members])
    computer_columns = _columns("computers", d)
    for rows in _rows(connection, "computers", computer_columns, "pk", sorted(computers), d):
        write("computers", rows)
    return counts


def _group_members(connection: _Connection, group_pk: int, d: Dialect) -> Iterator[int]:
    """The pks of a group's nodes, page by page (by pk)."""
    m = d.mark
    last = -1
    while True:
        rows = connection.execute(
            f"SELECT node_pk FROM group_nodes WHERE group_pk = {m} AND node_pk > {m} "
            f"ORDER BY node_pk LIMIT {PAGE}",
            (group_pk, last),
        ).fetchall()
        if not rows:
            return
        for (pk,) in rows:
            yield int(pk)
        last = rows[-1][0]


def _rows(
    connection: _Connection,
    table: str,
    columns: str,
    column: str,
    pks: Sequence[int] | None,
    d: Dialect,
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``table`` in pages: all of them (``pks`` None) by keyset pages of its pk, or
    those whose ``column`` is one of ``pks``, in batched ``IN`` lists."""
    m = d.mark
    if pks is None:
        last = -1
        while True:
            rows = connection.execute(
                f"SELECT pk, {columns} FROM {table} WHERE pk > {m} ORDER BY pk LIMIT {PAGE}",
                (last,),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [tuple(row[1:]) for row in rows]
        return
    for batch in _chunks(pks):
        rows = connection.execute(
            f"SELECT {columns} FROM {table} WHERE {column} IN ({_marks(m, len(batch))}) "
            f"ORDER BY pk",
            batch,
        ).fetchall()
        yield [tuple(row) for row in rows]


def _refuse_unfinished(connection: _Connection, pks: set[int] | None, d: Dialect) -> None:
    m = d.mark
    states = _marks(m, len(_ACTIVE))
    query = f"SELECT pk, process_label, process_state FROM nodes WHERE process_state IN ({states})"
    found: list[tuple[Any, ...]] = []
    if pks is None:
        found = connection.execute(query + " ORDER BY pk", _ACTIVE).fetchall()
    else:
        for batch in _chunks(sorted(pks)):
            found.extend(
                connection.execute(
                    f"{query} AND pk IN ({_marks(m, len(batch))}) ORDER BY pk", [*_ACTIVE, *batch]
                ).fetchall()
            )
    if found:
        named = ", ".join(f"{pk} ({label or 'process'}, {state})" for pk, label, state in found)
        raise ArchiveError(
            f"refusing to export processes that have not finished: {named}; wait until they "
            "finish (or kill them), or leave them out: an archive holds finished provenance "
            "only, since its importer could not carry on a process"
        )


# import -------------------------------------------------------------------------------------


def _index(table: str, column: str) -> int:
    return ARCHIVE_TABLES[table].index(column)


def import_rows(
    connection: _Connection, source: ArchiveSource, options: ImportOptions, d: Dialect
) -> ImportReport:
    """Merge the archive ``source`` into the database in the current transaction."""
    report = ImportReport(dry_run=options.dry_run)
    computers = import_computers(connection, source, report, d)
    nodes, existing = _import_nodes(connection, source, options, computers, report, d)
    _import_links(connection, source, nodes, existing, report, d)
    _import_logs(connection, source, nodes, existing, report, d)
    _import_comments(connection, source, nodes, report, d)
    groups = import_groups(connection, source, report, d)
    _import_group_members(connection, source, nodes, groups, report, d)
    made = import_group(connection, options, report, len(nodes), d)
    if made is not None:
        _fill_import_group(connection, *made, sorted(set(nodes.values())), d)
    if options.dry_run:
        raise DryRunDone(report)
    return report


_LINK_COLUMNS = ("in_pk", "out_pk", "link_type", "label")


def _insert_many(
    connection: _Connection,
    d: Dialect,
    insert: str,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Any],
) -> None:
    """Insert ``rows`` with the dialect's bulk copy if it has one, else ``insert`` (the rows
    may be a generator reading the archive: nothing may query ``connection`` meanwhile)."""
    if d.copy is not None:
        d.copy(connection, table, columns, rows)
    else:
        connection.cursor().executemany(insert, rows)


def _mapped(pks: dict[int, int], pk: int, what: str) -> int:
    try:
        return pks[pk]
    except KeyError:
        raise CorruptArchive(
            f"the archive's {what} names node {pk}, which the archive does not hold"
        ) from None


def _insert_returning(connection: _Connection, query: str, params: Sequence[Any]) -> int:
    row = connection.execute(query + " RETURNING pk", params).fetchone()
    return int(row[0])


def import_computers(
    connection: _Connection, source: ArchiveSource, report: ImportReport, d: Dialect
) -> dict[int, int]:
    m = d.mark
    mapped: dict[int, int] = {}
    columns = ARCHIVE_TABLES["computers"][1:]
    for rows in source.batches("computers"):
        for row in rows:
            pk, uuid, label = row[0], row[1], row[2]
            found = connection.execute(
                f"SELECT pk FROM computers WHERE uuid = {m}", (uuid,)
            ).fetchone()
            if found is not None:
                mapped[pk] = int(found[0])
                report.existing_computers += 1
                continue
            new_label = label
            for candidate in (label, f"{label}-{uuid[:8]}", f"{label}-{uuid}"):
                new_label = candidate
                taken = connection.execute(
                    f"SELECT 1 FROM computers WHERE label = {m}", (candidate,)
                ).fetchone()
                if taken is None:
                    break
            if new_label != label:
                report.renamed_computers[label] = new_label
            values = [
                new_label if column == "label" else value
                for column, value in zip(columns, row[1:], strict=True)
            ]
            mapped[pk] = _insert_returning(
                connection,
                f"INSERT INTO computers ({', '.join(columns)}) VALUES ({_marks(m, len(columns))})",
                values,
            )
            report.new_computers += 1
    return mapped


def merge_extras(mode: str, current: dict[str, Any], archived: dict[str, Any]) -> dict[str, Any]:
    if mode == "keep_existing":
        return {**archived, **current}
    if mode == "update_existing":
        return {**current, **archived}
    if mode == "mirror":
        return dict(archived)
    return current


def loads_extras(text: Any) -> dict[str, Any]:
    value = json.loads(text) if isinstance(text, str | bytes) else text
    if not isinstance(value, dict):
        raise CorruptArchive(f"extras must be a JSON object, not {text!r}")
    return value


def _import_nodes(
    connection: _Connection,
    source: ArchiveSource,
    options: ImportOptions,
    computers: dict[int, int],
    report: ImportReport,
    d: Dialect,
) -> tuple[dict[int, int], set[int]]:
    """Insert the nodes whose uuid the target lacks; map every archive pk to the target's.
    Returns the map and the archive pks of the nodes the target had already.

    Three passes over the archive: its uuids are looked up a batch at a time and the pks of
    the new nodes drawn at once; then the new nodes stream into the target in one bulk insert
    (the client prepares rows while the server stores those before them); then the extras of
    the nodes the target had are merged."""
    m = d.mark
    columns = ARCHIVE_TABLES["nodes"]
    extras_at, computer_at = _index("nodes", "extras"), _index("nodes", "computer_pk")
    values_sql = ", ".join(d.extras_in if column == "extras" else m for column in columns)
    insert = f"INSERT INTO nodes ({', '.join(columns)}) {d.overriding} VALUES ({values_sql})"
    mapped: dict[int, int] = {}
    existing: set[int] = set()
    new: list[int] = []
    for rows in source.batches("nodes", ("pk", "uuid")):
        found: dict[str, int] = {}
        for batch in d.batches([uuid for _, uuid in rows]):
            condition, params = d.member("uuid", batch)
            found.update(
                (str(uuid), int(pk))
                for uuid, pk in connection.execute(
                    f"SELECT uuid, pk FROM nodes WHERE {condition}", params
                ).fetchall()
            )
        for pk, uuid in rows:
            target = found.get(uuid)
            if target is None:
                new.append(pk)
            else:
                mapped[pk] = target
                existing.add(pk)
    if new:
        mapped.update(zip(new, d.allocate(connection, len(new)), strict=True))
    del new
    report.existing_nodes = len(existing)

    def new_rows() -> Iterator[list[Any]]:
        for rows in source.batches("nodes"):
            for row in rows:
                if row[0] in existing:
                    continue
                value = list(row)
                value[0] = mapped[row[0]]
                if value[computer_at] is not None:
                    value[computer_at] = computers.get(value[computer_at])
                    if value[computer_at] is None:
                        raise CorruptArchive(
                            f"node {row[1]} names computer {row[computer_at]}, which the "
                            "archive does not hold"
                        )
                if options.extras_mode_new == "none":
                    value[extras_at] = "{}"
                report.new_nodes += 1
                yield value

    if len(mapped) > len(existing):
        _insert_many(connection, d, insert, "nodes", columns, new_rows())
    if existing and options.extras_mode_existing != "none":
        uuid_at = _index("nodes", "uuid")
        for rows in source.batches("nodes"):
            old = [row for row in rows if row[0] in existing]
            if old:
                found = {row[uuid_at]: mapped[row[0]] for row in old}
                _merge_existing_extras(connection, old, found, options, report, d)
    return mapped, existing


def _merge_existing_extras(
    connection: _Connection,
    rows: list[tuple[Any, ...]],
    found: dict[str, int],
    options: ImportOptions,
    report: ImportReport,
    d: Dialect,
) -> None:
    m = d.mark
    uuid_at, extras_at = _index("nodes", "uuid"), _index("nodes", "extras")
    archived = {found[row[uuid_at]]: loads_extras(row[extras_at]) for row in rows}
    updates: list[tuple[str, int]] = []
    for batch in d.batches(sorted(archived)):
        condition, params = d.member("pk", batch)
        for pk, text in connection.execute(
            f"SELECT pk, {d.extras_out} FROM nodes WHERE {condition}", params
        ).fetchall():
            current = loads_extras(text)
            merged = merge_extras(options.extras_mode_existing, current, archived[int(pk)])
            if merged != current:
                updates.append((dump_extras(merged), int(pk)))
    if updates:
        connection.cursor().executemany(
            f"UPDATE nodes SET extras = {d.extras_in} WHERE pk = {m}", updates
        )
        report.updated_extras += len(updates)


def _import_links(
    connection: _Connection,
    source: ArchiveSource,
    nodes: dict[int, int],
    existing: set[int],
    report: ImportReport,
    d: Dialect,
) -> None:
    """Add each link the target lacks: a link to or from a new node is new (all of them stream
    in one bulk insert); between two nodes the target had, it is looked up first (a second
    pass, when the target had some of the nodes)."""
    m = d.mark
    insert = f"INSERT INTO links (in_pk, out_pk, link_type, label) VALUES ({_marks(m, 4)})"

    def mapped(rows: list[Any]) -> list[tuple[int, int, str, str]]:
        try:
            return [(nodes[a], nodes[b], str(kind), str(label)) for a, b, kind, label in rows]
        except KeyError as exc:
            raise CorruptArchive(
                f"the archive's links name node {exc.args[0]}, which the archive does not hold"
            ) from None

    def fresh() -> Iterator[tuple[int, int, str, str]]:
        for rows in source.batches("links"):
            if existing:
                rows = [row for row in rows if not (row[0] in existing and row[1] in existing)]
            links = mapped(rows)
            report.new_links += len(links)
            yield from links

    _insert_many(connection, d, insert, "links", _LINK_COLUMNS, fresh())
    if not existing:
        return
    for rows in source.batches("links"):
        known = mapped([row for row in rows if row[0] in existing and row[1] in existing])
        if not known:
            continue
        present: set[tuple[Any, ...]] = set()
        for batch in d.batches(sorted({link[1] for link in known})):
            condition, params = d.member("out_pk", batch)
            present.update(
                tuple(row)
                for row in connection.execute(
                    f"SELECT in_pk, out_pk, link_type, label FROM links WHERE {condition}", params
                ).fetchall()
            )
        missing = [link for link in known if link not in present]
        if missing:
            _insert_many(connection, d, insert, "links", _LINK_COLUMNS, missing)
            report.new_links += len(missing)


def _import_logs(
    connection: _Connection,
    source: ArchiveSource,
    nodes: dict[int, int],
    existing: set[int],
    report: ImportReport,
    d: Dialect,
) -> None:
    """The logs of new nodes (a node the target had keeps its own logs)."""
    m = d.mark
    insert = f"INSERT INTO logs (node_pk, time, levelname, message) VALUES ({_marks(m, 4)})"

    def values() -> Iterator[tuple[Any, ...]]:
        for rows in source.batches("logs"):
            for node_pk, time, levelname, message in rows:
                if node_pk not in existing:
                    report.new_logs += 1
                    yield (_mapped(nodes, node_pk, "log"), time, levelname, message)

    _insert_many(connection, d, insert, "logs", ARCHIVE_TABLES["logs"], values())


def _import_comments(
    connection: _Connection,
    source: ArchiveSource,
    nodes: dict[int, int],
    report: ImportReport,
    d: Dialect,
) -> None:
    """The comments whose uuid the target lacks (AiiDA's ``comment_mode='leave'``)."""
    m = d.mark
    insert = f"INSERT INTO comments (uuid, node_pk, ctime, mtime, content) VALUES ({_marks(m, 5)})"
    for rows in source.batches("comments"):
        present: set[str] = set()
        for batch in d.batches([row[0] for row in rows]):
            condition, params = d.member("uuid", batch)
            present.update(
                str(uuid)
                for (uuid,) in connection.execute(
                    f"SELECT uuid FROM comments WHERE {condition}", params
                ).fetchall()
            )
        values = [
            (uuid, _mapped(nodes, node_pk, "comment"), ctime, mtime, content)
            for uuid, node_pk, ctime, mtime, content in rows
            if uuid not in present
        ]
        if values:
            connection.cursor().executemany(insert, values)
            report.new_comments += len(values)


def import_groups(
    connection: _Connection, source: ArchiveSource, report: ImportReport, d: Dialect
) -> dict[int, int]:
    """Groups merge by uuid; a new group whose label the target uses is imported as AiiDA's
    ``LABEL (Imported #N)`` (another group of the same name is another group: its nodes are
    not mixed in).  Returns the map of their pks."""
    m = d.mark
    groups: dict[int, int] = {}
    columns = ARCHIVE_TABLES["groups"][1:]
    values_sql = ", ".join(d.extras_in if column == "extras" else m for column in columns)
    for rows in source.batches("groups"):
        for row in rows:
            pk, uuid, label = row[0], row[1], row[2]
            found = connection.execute(
                f"SELECT pk FROM groups WHERE uuid = {m}", (uuid,)
            ).fetchone()
            if found is not None:
                groups[pk] = int(found[0])
                report.merged_groups += 1
                continue
            new_label = free_group_label(connection, str(label), d)
            if new_label != label:
                report.renamed_groups[str(label)] = new_label
            groups[pk] = _insert_returning(
                connection,
                f"INSERT INTO groups ({', '.join(columns)}) VALUES ({values_sql})",
                (uuid, new_label, *row[3:]),
            )
            report.new_groups += 1
    return groups


#: AiiDA's label of a new group whose label the target uses already.
_DUPLICATE_LABEL = "{} (Imported #{})"
_DUPLICATE_LABEL_MAX = 100


def free_group_label(connection: _Connection, label: str, d: Dialect) -> str:
    """``label``, or AiiDA's ``LABEL (Imported #N)`` with the first N the target does not use."""
    m = d.mark
    for number in range(-1, _DUPLICATE_LABEL_MAX):
        candidate = label if number < 0 else _DUPLICATE_LABEL.format(label, number)
        taken = connection.execute(
            f"SELECT 1 FROM groups WHERE label = {m}", (candidate,)
        ).fetchone()
        if taken is None:
            return candidate
    raise ArchiveError(
        f"the database has the groups {label!r} and {_DUPLICATE_LABEL.format(label, 0)!r} to "
        f"{_DUPLICATE_LABEL.format(label, _DUPLICATE_LABEL_MAX - 1)!r}: name the import group "
        "yourself"
    )


def import_group(
    connection: _Connection, options: ImportOptions, report: ImportReport, nodes: int, d: Dialect
) -> tuple[int, bool] | None:
    """The pk of the group to put the archive's nodes in (AiiDA's import group) and whether
    this import made it: ``options.group_label`` (found by label and type, else created), or a
    new group labelled by the local time; None when no group is wanted or the archive holds
    no node."""
    import time

    from miniengine.core.ids import new_uuid
    from miniengine.storage.interfaces.archive import IMPORT_GROUP_TYPE

    if not options.create_group or not nodes:
        return None
    m = d.mark
    if options.group_label is not None:
        label, type_string = options.group_label, options.group_type
        found = connection.execute(
            f"SELECT pk FROM groups WHERE label = {m} AND type_string = {m}", (label, type_string)
        ).fetchone()
        description = ""
        if found is not None:
            report.import_group, report.import_group_pk = label, int(found[0])
            return report.import_group_pk, False
    else:
        label = free_group_label(connection, time.strftime("%Y%m%d-%H%M%S"), d)
        type_string, description = IMPORT_GROUP_TYPE, "Group generated by archive import"
    report.import_group = label
    report.import_group_pk = _insert_returning(
        connection,
        f"INSERT INTO groups (uuid, label, type_string, description, ctime) "
        f"VALUES ({_marks(m, 5)})",
        (new_uuid(), label, type_string, description, time.time()),
    )
    return report.import_group_pk, True


def _fill_import_group(
    connection: _Connection, group_pk: int, created: bool, pks: list[int], d: Dialect
) -> None:
    """Put the nodes ``pks`` into the import group: a group made by this import has none yet
    (one bulk insert), another may have some (left alone)."""
    m = d.mark
    if created and d.copy is not None:
        d.copy(connection, "group_nodes", ("group_pk", "node_pk"), ((group_pk, pk) for pk in pks))
        return
    for batch in _chunks(pks, PAGE):
        if d.arrays:
            connection.execute(
                f"INSERT INTO group_nodes (group_pk, node_pk) "
                f"SELECT {m}, unnest({m}::bigint[]) ON CONFLICT DO NOTHING",
                (group_pk, batch),
            )
        else:
            connection.cursor().executemany(
                f"INSERT INTO group_nodes (group_pk, node_pk) VALUES ({m}, {m}) "
                "ON CONFLICT DO NOTHING",
                [(group_pk, pk) for pk in batch],
            )


def _import_group_members(
    connection: _Connection,
    source: ArchiveSource,
    nodes: dict[int, int],
    groups: dict[int, int],
    report: ImportReport,
    d: Dialect,
) -> None:
    """Add the archive's members to the groups (a node already in one is left alone)."""
    m = d.mark
    insert = f"INSERT INTO group_nodes (group_pk, node_pk) VALUES ({m}, {m}) ON CONFLICT DO NOTHING"
    for rows in source.batches("group_nodes"):
        values = []
        for group_pk, node_pk in rows:
            if group_pk not in groups:
                raise CorruptArchive(
                    f"the archive's group members name group {group_pk}, which it does not hold"
                )
            values.append((groups[group_pk], _mapped(nodes, node_pk, "group")))
        if values:
            cursor = connection.cursor()
            cursor.executemany(insert, values)
            report.group_members_added += max(int(cursor.rowcount), 0)
