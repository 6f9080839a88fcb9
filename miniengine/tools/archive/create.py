"""Creating an archive: a part of the provenance graph (or all of it) in one portable file.

The nodes follow AiiDA's export rules (:data:`miniengine.core.graph_rules.EXPORT`): a node takes
along the inputs and the outputs of the processes it leads to, what created it, and the
processes that called it, so that the archive tells a complete story; the toggles of AiiDA's
``create_archive`` switch the optional rules.  Every row is read in one snapshot of the database
and written a batch at a time into a temporary file beside the archive, which is renamed into
place only once it is complete: an interrupted or refused export leaves no file behind.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniengine.exceptions import ArchiveError, NotExistent, ValidationError
from miniengine.tools.archive.format import (
    DATABASE,
    FORMAT,
    METADATA,
    add_member,
    object_member,
    remove_tree,
    seal,
)
from miniengine.tools.archive.inspect import ArchiveInfo

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["create_archive"]


def _pk(node: Any) -> int:
    if isinstance(node, bool):
        raise ValidationError(f"nodes must be pks or stored nodes, not {node!r}")
    if isinstance(node, int):
        return node
    if isinstance(node, str) and node.strip().isdecimal():
        return int(node)
    pk = getattr(node, "pk", None)
    if isinstance(pk, int):
        return pk
    raise ValidationError(f"nodes must be pks or stored nodes, not {node!r}")


def _group_pk(store: Backend, group: Any) -> int:
    pk = getattr(group, "pk", None)
    if isinstance(pk, int) and not isinstance(group, int):
        return pk
    if not isinstance(group, int | str) or isinstance(group, bool):
        raise ValidationError(f"groups must be groups, pks or labels, not {group!r}")
    from miniengine.runtime.groups import load_group

    loaded: Any = load_group(group, db=store)
    return int(loaded.pk)


def create_archive(
    path: str | os.PathLike[str],
    *,
    nodes: Iterable[Any] | None = None,
    groups: Iterable[Any] | None = None,
    all: bool = False,  # shadows the built-in on purpose: the name of `verdi archive create --all`
    db: Backend | str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    include_comments: bool = True,
    include_logs: bool = True,
    compression: int = 6,
    **traversal_rules: bool,
) -> ArchiveInfo:
    """Write the archive ``path`` from the database ``db`` (default: ``$MINIENGINE_DB``).

    Exports every node with ``all=True``, else the ``nodes`` (pks or nodes) and the members of
    the ``groups`` (groups, pks or labels) with what AiiDA's export rules take along (switch the
    optional ones with ``create_backward=False``, ``call_calc_backward=False``, ...,
    ``input_calc_forward=True``, as in AiiDA).  The groups given (every group with ``all``) are
    exported with their exported members; comments and logs of the exported nodes unless
    switched off.  ``compression`` is the zip's deflate level, 0 (stored) to 9.

    Refuses, before writing anything: an existing ``path`` unless ``overwrite``, pks of no node,
    and processes that have not finished (:class:`~miniengine.exceptions.ArchiveError` naming
    them).  Returns what the archive holds, as :func:`inspect_archive` would.
    """
    from miniengine.core.graph_rules import EXPORT
    from miniengine.runtime.context import store_for
    from miniengine.storage.interfaces.archive import ExportSelection

    target = Path(path)
    if not isinstance(compression, int) or not 0 <= compression <= 9:
        raise ValidationError(f"compression must be an integer from 0 to 9, not {compression!r}")
    node_list = [] if nodes is None else list(nodes)
    group_list = [] if groups is None else list(groups)
    if all and (node_list or group_list):
        raise ValidationError("give either all=True or nodes and groups to export, not both")
    if not all and not node_list and not group_list:
        raise ValidationError("nothing to export: give nodes, groups, or all=True")
    links = EXPORT.links(**traversal_rules)
    if target.exists() and not overwrite:
        raise ArchiveError(f"{target} exists already: pass overwrite=True (--force) to replace it")
    if target.is_dir():
        raise ArchiveError(f"{target} is a folder, not an archive file")
    if not target.parent.is_dir():
        raise ArchiveError(f"{target.parent} is not a folder: cannot write {target.name} there")
    store = store_for(db)
    node_pks = tuple(dict.fromkeys(_pk(node) for node in node_list))
    if node_pks:
        found = store.provenance.nodes(list(node_pks))
        missing = [pk for pk in node_pks if pk not in found]
        if missing:
            raise NotExistent(f"no node with pk {', '.join(map(str, missing))} in {store.location}")
    group_pks = tuple(dict.fromkeys(_group_pk(store, group) for group in group_list))
    selection = ExportSelection(
        everything=all,
        node_pks=node_pks,
        group_pks=group_pks,
        links=links,
        include_comments=include_comments,
        include_logs=include_logs,
    )
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        metadata = _write(store, selection, folder, compression, links)
        os.replace(folder / "archive.zip", target)
    finally:
        remove_tree(folder)
    return ArchiveInfo.from_metadata(target, metadata, checksum_ok=True)


def _write(
    store: Backend, selection: Any, folder: Path, compression: int, links: Any
) -> dict[str, Any]:
    """Export into ``folder/db.sqlite``, then pack it and the files into ``folder/archive.zip``;
    return the metadata written."""
    import miniengine
    from miniengine.storage.archive_file import FORMAT_VERSION, ArchiveWriter

    writer = ArchiveWriter(folder / DATABASE)
    try:
        counts = store.archives.export_rows(selection, writer)
        writer.commit()
        members: dict[str, str] = {}
        method = zipfile.ZIP_DEFLATED if compression else zipfile.ZIP_STORED
        level = compression if compression else None
        with zipfile.ZipFile(
            folder / "archive.zip", "w", compression=method, compresslevel=level
        ) as archive:
            with open(folder / DATABASE, "rb") as stream:
                members[DATABASE] = add_member(archive, DATABASE, stream)
            objects = _pack_objects(store, writer.object_keys(), archive, members)
            counts["objects"] = objects
            metadata = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "miniengine_version": miniengine.__version__,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "selection": {
                    "all": selection.everything,
                    "nodes": list(selection.node_pks),
                    "groups": list(selection.group_pks),
                    "rules": {
                        "forward": sorted(links.forward),
                        "backward": sorted(links.backward),
                    },
                    "comments": selection.include_comments,
                    "logs": selection.include_logs,
                },
                "counts": counts,
                "groups": writer.groups(),
                "members": members,
            }
            data = json.dumps(metadata, indent=1, sort_keys=True).encode()
            archive.writestr(METADATA, data)
            archive.comment = seal(data)
    finally:
        writer.close()
    return metadata


def _pack_objects(
    store: Backend, keys: Iterable[str], archive: zipfile.ZipFile, members: dict[str, str]
) -> int:
    """Add each repository object the nodes name, checking that it still hashes to its key."""
    from miniengine.storage.repository import RepositoryError

    repository = None
    packed = 0
    for key in keys:
        if repository is None:
            try:
                repository = store.provenance.repository()
            except RepositoryError as exc:
                raise ArchiveError(f"cannot read the file repository: {exc}") from exc
        name = object_member(key)
        try:
            with repository.open(key) as stream:
                digest = add_member(archive, name, stream)
        except RepositoryError as exc:
            raise ArchiveError(
                f"{store.location} names the repository object {key}, which is missing "
                f"({exc}); no archive was written"
            ) from exc
        if digest != key:
            raise ArchiveError(
                f"the repository object {key} of {store.location} is corrupt (its content "
                f"hashes to {digest}); no archive was written"
            )
        members[name] = digest
        packed += 1
    return packed
