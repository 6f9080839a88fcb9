"""The archive concern of a backend: reading a part of the provenance graph out for an archive,
and merging an archive's rows into the database by uuid.

An archive holds its own small sqlite database (see :mod:`miniengine.storage.archive_file`)
whose tables are listed once, in :data:`ARCHIVE_TABLES`: the rows travel between the backend and
that database as tuples in these columns' order, a batch at a time, so neither side ever holds
all the rows of a large archive.  ``pk`` columns in an archive are the source database's pks:
they only tie the archive's rows together; an import maps them to the target's pks through the
uuids of nodes, groups and computers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from miniengine.core.graph_rules import TraversalLinks

__all__ = [
    "ARCHIVE_TABLES",
    "EXTRAS_MODES_EXISTING",
    "EXTRAS_MODES_NEW",
    "IMPORT_GROUP_TYPE",
    "ArchiveSink",
    "ArchiveSource",
    "Archives",
    "ExportSelection",
    "ImportOptions",
    "ImportReport",
]

Row = tuple[Any, ...]

#: The tables of an archive and their columns, in the order rows are written and imported (a
#: row's references come before it).  ``configuration`` of a computer (its transport settings,
#: AiiDA's "authinfo") and the engine's run-time columns of nodes (owner, leases, control) are
#: not exported.
ARCHIVE_TABLES: dict[str, tuple[str, ...]] = {
    "computers": (
        "pk",
        "uuid",
        "label",
        "hostname",
        "description",
        "transport_type",
        "scheduler_type",
        "metadata",
        "ctime",
        "mtime",
    ),
    "nodes": (
        "pk",
        "uuid",
        "node_type",
        "process_type",
        "process_label",
        "process_state",
        "process_status",
        "exit_status",
        "exit_message",
        "exception",
        "label",
        "description",
        "attributes",
        "extras",
        "ctime",
        "mtime",
        "computer_pk",
        "node_hash",
    ),
    "links": ("in_pk", "out_pk", "link_type", "label"),
    "logs": ("node_pk", "time", "levelname", "message"),
    "comments": ("uuid", "node_pk", "ctime", "mtime", "content"),
    "groups": ("pk", "uuid", "label", "type_string", "description", "extras", "ctime"),
    "group_nodes": ("group_pk", "node_pk"),
}

#: What an import does with the extras of a node the target already has (AiiDA's
#: ``extras_mode_existing``): keep its values and add the archive's new keys, let the
#: archive's values win, replace them by the archive's, or leave them alone (``none``, the
#: default, as AiiDA's).
EXTRAS_MODES_EXISTING = ("keep_existing", "update_existing", "mirror", "none")

#: What an import does with the extras of a new node (AiiDA's ``extras_mode_new``).
EXTRAS_MODES_NEW = ("import", "none")

#: The type of the group an import makes of the nodes it imported (AiiDA's ``ImportGroup``).
IMPORT_GROUP_TYPE = "core.import"


_NO_LINKS = TraversalLinks(frozenset(), frozenset())


@dataclass(frozen=True)
class ExportSelection:
    """What to export: every node (``everything``), or the nodes ``node_pks`` and the members of
    the groups ``group_pks`` with what ``links`` reach from them; the groups ``group_pks`` (all
    groups with ``everything``); and the comments and logs of the exported nodes unless
    switched off."""

    everything: bool = False
    node_pks: tuple[int, ...] = ()
    group_pks: tuple[int, ...] = ()
    links: TraversalLinks = _NO_LINKS
    include_comments: bool = True
    include_logs: bool = True


@dataclass(frozen=True)
class ImportOptions:
    """How an import treats what the target already has (see :data:`EXTRAS_MODES_EXISTING`)."""

    extras_mode_existing: str = "none"
    extras_mode_new: str = "import"
    #: roll the transaction back at the end: report what an import would do, change nothing
    dry_run: bool = False
    #: put every node of the archive (new or not) into a group, as AiiDA's import does
    create_group: bool = True
    #: that group's label and type: None makes a new group labelled by the time
    #: (:data:`IMPORT_GROUP_TYPE`), else this group, created if the target lacks it
    group_label: str | None = None
    group_type: str = "core"


@dataclass
class ImportReport:
    """What an import added to the target (``existing_nodes``: nodes it had already)."""

    new_nodes: int = 0
    existing_nodes: int = 0
    new_links: int = 0
    new_logs: int = 0
    new_comments: int = 0
    new_groups: int = 0
    merged_groups: int = 0
    group_members_added: int = 0
    new_computers: int = 0
    existing_computers: int = 0
    updated_extras: int = 0
    #: computers imported under another label because the target has one of that label
    renamed_computers: dict[str, str] = field(default_factory=dict)
    #: groups imported under another label because the target has a group of that label
    renamed_groups: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    #: the label and pk of the group holding every node of the archive (None: no group made)
    import_group: str | None = None
    import_group_pk: int | None = None


class ArchiveSink(Protocol):
    """Where an export writes its rows (the archive's database)."""

    def begin(self) -> None:
        """Start (again) from an empty archive: a read retried on a new connection calls it
        once more."""
        ...

    def write(self, table: str, rows: Sequence[Row]) -> None:
        """Add ``rows`` (tuples in :data:`ARCHIVE_TABLES` ``[table]`` order)."""
        ...


class ArchiveSource(Protocol):
    """An archive's rows read for an import (the archive's database)."""

    #: the archive's database file (sqlite attaches it to read it in SQL)
    path: Path

    def batches(self, table: str, columns: Sequence[str] | None = None) -> Iterator[list[Row]]:
        """The rows of ``table`` in :data:`ARCHIVE_TABLES` order (or only ``columns``), a batch
        at a time (a fresh read each call, so a transaction retried whole reads them again)."""
        ...


class Archives(Protocol):
    """Reads that fill an archive, and the one transaction that imports one."""

    def export_rows(self, selection: ExportSelection, sink: ArchiveSink) -> dict[str, int]:
        """Write the rows of ``selection`` to ``sink``, all read in one snapshot; return the
        rows written per table.  Refuse (:class:`~miniengine.exceptions.ArchiveError` naming
        them, nothing written) when the selection holds processes that have not finished."""
        ...

    def import_rows(self, source: ArchiveSource, options: ImportOptions) -> ImportReport:
        """Merge the archive's rows into the database by uuid, in one transaction: new nodes,
        groups, comments and computers get new pks, links and memberships map through the
        uuids, what exists already is not added again (a second import adds nothing).  With
        ``options.dry_run`` the transaction is rolled back and
        :class:`~miniengine.storage.archive_rows.DryRunDone` carries the report."""
        ...
