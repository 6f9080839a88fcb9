"""Importing an archive: merging it into a database by uuid (AiiDA's ``import_archive``).

Before anything is written the whole file is checked (the seal, the list of members, every
member's checksum; then the integrity of its database and that every row it holds names rows it
holds).  The repository objects the archive's nodes name are copied into the target's
repository first (each checked against its hash; an object the target has already is not
copied), as every write of the engine stores its files before the transaction that names them;
then the rows are merged in **one** transaction of the target.  A failure rolls that transaction
back, so nothing is imported; the objects it copied stay, named by no node, until ``db
maintain`` removes them: another write may have stored the same content meanwhile (a file is
stored once, by its hash) and be about to name it, so removing them at once could lose its file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from miniengine.exceptions import ArchiveError, CorruptArchive, ValidationError

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend
    from miniengine.storage.interfaces.archive import ImportReport
    from miniengine.storage.repository import Repository
    from miniengine.tools.archive.format import ArchiveReader

__all__ = ["import_archive"]


def import_archive(
    path: str | os.PathLike[str],
    *,
    db: Backend | str | os.PathLike[str] | None = None,
    extras_mode_existing: str = "none",
    extras_mode_new: str = "import",
    create_group: bool = True,
    group: Any = None,
    dry_run: bool = False,
) -> ImportReport:
    """Merge the archive ``path`` into the database ``db`` (default: ``$MINIENGINE_DB``).

    Nodes, groups, comments and computers are matched by uuid (groups also by label and type):
    the new ones get new pks, links and group memberships map through the uuids, and nothing
    the target has is added twice, so importing an archive again adds nothing.  A new group
    whose label the target uses is imported as ``LABEL (Imported #N)``.  The extras of nodes the
    target has are left alone unless ``extras_mode_existing`` says otherwise (AiiDA's modes and
    default: ``none``, ``keep_existing``, ``update_existing``, ``mirror``); those of new nodes
    are imported unless ``extras_mode_new="none"``.  ``dry_run`` checks the archive and
    reports what an import would add, changing nothing.

    As AiiDA's import, every node of the archive (new or already present) is put into a group
    in the same transaction, so that what came from the archive can be found again: ``group``
    (a group or a label; a label the database lacks makes a new group of type ``core``), else
    a new group of type ``core.import`` labelled by the local time, ``YYYYMMDD-HHMMSS``
    (``... (Imported #N)`` when that label is taken).  ``create_group=False`` makes none; an
    archive without nodes makes none.  The report names the group (``import_group``).

    Raises :class:`~miniengine.exceptions.CorruptArchive` for a damaged or changed file and
    :class:`~miniengine.exceptions.IncompatibleArchiveVersionError` for a newer format, before
    anything is written; a failure during the import imports nothing.
    """
    from miniengine.runtime.context import store_for
    from miniengine.storage.archive_file import ArchiveDatabase
    from miniengine.storage.archive_rows import DryRunDone
    from miniengine.storage.interfaces.archive import (
        EXTRAS_MODES_EXISTING,
        EXTRAS_MODES_NEW,
        ImportOptions,
    )
    from miniengine.tools.archive.format import ArchiveReader

    if extras_mode_existing not in EXTRAS_MODES_EXISTING:
        raise ValidationError(
            f"extras_mode_existing must be one of {', '.join(EXTRAS_MODES_EXISTING)}, not "
            f"{extras_mode_existing!r}"
        )
    if extras_mode_new not in EXTRAS_MODES_NEW:
        raise ValidationError(
            f"extras_mode_new must be one of {', '.join(EXTRAS_MODES_NEW)}, not {extras_mode_new!r}"
        )
    label, group_type = _group(group)
    options = ImportOptions(
        extras_mode_existing,
        extras_mode_new,
        bool(dry_run),
        create_group=bool(create_group),
        group_label=label,
        group_type=group_type,
    )
    with (
        ArchiveReader(path) as reader,
        tempfile.TemporaryDirectory(prefix="miniengine-archive-") as folder,
    ):
        extracted = Path(folder) / "db.sqlite"
        reader.verify(extract_database_to=extracted)
        database = ArchiveDatabase(extracted, reader.shown)
        try:
            database.check()
            keys = database.object_keys()
            store = store_for(db)
            store.check_writable()
            if keys and not dry_run:
                _copy_objects(reader, _repository(store), keys)
            try:
                return store.archives.import_rows(database, options)
            except DryRunDone as done:
                return done.report
        finally:
            database.close()


def _group(group: Any) -> tuple[str | None, str]:
    """The label and type of the import group ``group`` names (None: a new one by the time)."""
    if group is None:
        return None, "core"
    if isinstance(group, str):
        if not group.strip():
            raise ValidationError("group must be a group or a non-empty label, not ''")
        return group, "core"
    label, type_string = getattr(group, "label", None), getattr(group, "type_string", None)
    if isinstance(label, str) and label and isinstance(type_string, str):
        return label, type_string
    raise ValidationError(f"group must be a group or a label, not {group!r}")


def _repository(store: Backend) -> Repository:
    from miniengine.storage.repository import RepositoryError

    try:
        return store.provenance.repository()
    except RepositoryError as exc:
        raise ArchiveError(f"cannot import the archive's files: {exc}") from exc


def _copy_objects(reader: ArchiveReader, repository: Repository, keys: list[str]) -> None:
    """Copy the objects the target lacks (none is removed again on a failure: see the
    module's docstring)."""
    from miniengine.storage.repository import RepositoryError

    try:
        for key in keys:
            if repository.has_object(key):
                continue
            with reader.open_object(key) as stream:
                stored = repository.put_object_from_filelike(cast(BinaryIO, stream))
            if stored != key:
                raise CorruptArchive(
                    f"{reader.shown}: the repository object {key} hashes to {stored}; nothing "
                    "was imported"
                )
    except RepositoryError as exc:
        raise ArchiveError(f"cannot import the archive's files: {exc}") from exc
