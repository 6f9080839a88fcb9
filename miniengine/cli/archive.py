"""``miniengine archive create|import|inspect``: a part of the provenance graph in one portable
file, and merging it into another database (as ``verdi archive``).

``create`` follows AiiDA's export rules from the nodes (``-N``) and the groups' nodes (``-G``),
or takes everything (``--all``); ``import`` merges by uuid, in one transaction, and says how
many nodes were new; ``inspect`` (also ``info``) reads the metadata and checks every member's
checksum, exiting with 1 when one does not hold.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from miniengine.cli.errors import CliError, guarded
from miniengine.cli.options import add_db_option, add_json_option, db_location
from miniengine.cli.table import emit, format_pairs, json_object

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``create``, ``import`` and ``inspect``."""
    from miniengine.core.graph_rules import EXPORT
    from miniengine.storage.interfaces.archive import EXTRAS_MODES_EXISTING, EXTRAS_MODES_NEW

    create = commands.add_parser(
        "create",
        help="write nodes, groups or everything, with their provenance, to an archive file",
        description="Write an archive (as `verdi archive create`): one zip file holding its own "
        "database (nodes with attributes and extras, links, comments, logs, groups, the "
        "computers the nodes name) and the repository files, with a checksum of every member. "
        "From the nodes given, AiiDA's export rules take along their inputs, what created "
        "them, the outputs of calculations and the processes that called them; the flags "
        "below switch the optional rules.  Processes that have not finished are refused.",
    )
    create.add_argument("file", metavar="FILE", help="the archive to write")
    what = create.add_argument_group("what to export (-N and -G combine)")
    what.add_argument("-a", "--all", action="store_true", help="every node and group")
    what.add_argument(
        "-N",
        "--nodes",
        nargs="+",
        metavar="NODE",
        default=[],
        help="nodes: pks, or uuids or unique prefixes of them",
    )
    what.add_argument(
        "-G", "--groups", nargs="+", metavar="GROUP", default=[], help="group labels or pks"
    )
    for name, default in EXPORT.toggleable.items():
        link_type, _, direction = name.rpartition("_")
        create.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            action=argparse.BooleanOptionalAction,
            default=default,
            help=f"follow {link_type.upper()} links {direction}s (default: {default})",
        )
    for noun in ("comments", "logs"):
        create.add_argument(
            f"--include-{noun}",
            dest=f"include_{noun}",
            action="store_true",
            default=True,
            help=f"export the {noun} of the nodes (the default)",
        )
        create.add_argument(
            f"--exclude-{noun}",
            dest=f"include_{noun}",
            action="store_false",
            help=f"leave the {noun} out",
        )
    create.add_argument(
        "--compress",
        type=int,
        default=6,
        metavar="LEVEL",
        help="zip deflate level, 0 (none) to 9 (default: 6)",
    )
    create.add_argument(
        "-f", "--force", action="store_true", help="replace FILE if it exists already"
    )
    add_db_option(create)
    add_json_option(create)
    create.set_defaults(handler=guarded(_create))

    importer = commands.add_parser(
        "import",
        help="merge an archive into the database by uuid",
        description="Import an archive (as `verdi archive import`) in one transaction: nodes, "
        "groups, comments and computers are matched by uuid, new ones get new pks, and nothing "
        "present is added twice, so importing again adds no node.  Every node of the archive is "
        "put into an import group, as AiiDA does.  The whole file is checked first; a damaged "
        "or changed archive is refused and nothing is imported.",
    )
    importer.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="the archives to import, one after the other, each in a transaction of its own "
        "(as verdi's; an archive refused stops there, those before it stay imported)",
    )
    importer.add_argument(
        "-e",
        "--extras-mode-existing",
        choices=EXTRAS_MODES_EXISTING,
        default="none",
        help="the extras of nodes the database has: leave them (none, the default, as "
        "AiiDA's), keep their values and add the archive's new keys (keep_existing), let the "
        "archive's win (update_existing), or take the archive's (mirror)",
    )
    importer.add_argument(
        "-n",
        "--extras-mode-new",
        choices=EXTRAS_MODES_NEW,
        default="import",
        help="the extras of new nodes: import them (the default) or not (none)",
    )
    importer.add_argument(
        "--import-group",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="put every node of the archive into a group: the one of -G, else a new group "
        "labelled by the local time, YYYYMMDD-HHMMSS (default: on)",
    )
    importer.add_argument(
        "-G",
        "--group",
        metavar="LABEL",
        help="the group to put the nodes in (created if the database lacks it)",
    )
    importer.add_argument(
        "--dry-run",
        action="store_true",
        help="check the archive and say what an import would add; change nothing",
    )
    add_db_option(importer)
    add_json_option(importer)
    importer.set_defaults(handler=guarded(_import))

    inspect = commands.add_parser(
        "inspect",
        aliases=["info"],
        help="show an archive's version, counts and groups, and check its checksums",
        description="Describe an archive (as `verdi archive info`): its format version, the "
        "miniengine that wrote it and when, the rows and files it holds, its groups, and "
        "whether every member's checksum holds (exit status 1 if not).",
    )
    inspect.add_argument("file", metavar="FILE", help="the archive")
    add_json_option(inspect)
    inspect.set_defaults(handler=guarded(_inspect))


def _backend(args: argparse.Namespace, *, must_exist: bool) -> Any:
    """The database of ``--db``; one to export from must exist (an import may create it)."""
    from miniengine.storage.open import shared_backend

    location = db_location(args)
    if must_exist and isinstance(location, Path) and not location.is_file():
        raise CliError(f"no database at {location}")
    return shared_backend(location)


def _create(args: argparse.Namespace) -> int:
    from miniengine.core.graph_rules import EXPORT
    from miniengine.storage.open import close_all_backends
    from miniengine.tools.archive import create_archive

    if not (args.all or args.nodes or args.groups):
        raise CliError("nothing to export: give --all, -N PK... or -G GROUP...")
    groups: list[int | str] = list(args.groups)
    rules = {name: getattr(args, name) for name in EXPORT.toggleable}
    try:
        backend = _backend(args, must_exist=True)
        info = create_archive(
            args.file,
            nodes=[_node_pk(backend, text) for text in args.nodes],
            groups=groups,
            all=args.all,
            db=backend,
            overwrite=args.force,
            include_comments=args.include_comments,
            include_logs=args.include_logs,
            compression=args.compress,
            **rules,
        )
    finally:
        close_all_backends()
    if args.json:
        emit(json_object(info.as_dict()))
        return 0
    emit(f"wrote {info.path} ({_size(info.size)}): {_counts(info.counts)}")
    return 0


def _node_pk(backend: Any, text: str) -> int:
    """A node's pk from ``-N``: a pk as it is, else a uuid or a unique prefix of one."""
    if text.isdecimal():
        return int(text)
    from miniengine.runtime.nodes import load_node

    node: Any = load_node(text, db=backend)
    return int(node.pk)


def _import(args: argparse.Namespace) -> int:
    from miniengine.storage.open import close_all_backends
    from miniengine.tools.archive import import_archive

    try:
        backend = _backend(args, must_exist=False)
        for file in args.files:
            report = import_archive(
                file,
                db=backend,
                extras_mode_existing=args.extras_mode_existing,
                extras_mode_new=args.extras_mode_new,
                create_group=args.import_group,
                group=args.group,
                dry_run=args.dry_run,
            )
            _say_imported(args, file, report)
    finally:
        close_all_backends()
    return 0


def _say_imported(args: argparse.Namespace, file: str, report: Any) -> None:
    """What the import of ``file`` added (one JSON object per archive with ``--json``)."""
    if args.json:
        from dataclasses import asdict

        emit(json_object({"file": file, **asdict(report)}))
        return
    verb = "would import" if report.dry_run else "imported"
    parts = [
        f"{report.new_nodes:,} new node{'s' if report.new_nodes != 1 else ''} "
        f"({report.existing_nodes:,} already present)",
        f"{report.new_links:,} new links",
        f"{report.new_groups:,} new groups, {report.merged_groups:,} merged "
        f"(+{report.group_members_added:,} members)",
        f"{report.new_comments:,} new comments",
        f"{report.new_logs:,} new logs",
        f"{report.new_computers:,} new computers",
    ]
    if report.updated_extras:
        parts.append(f"extras of {report.updated_extras:,} nodes updated")
    emit(f"{verb} {file} into {args.db_path}: " + ", ".join(parts))
    if report.import_group is not None:
        verb = "would put" if report.dry_run else "put"
        emit(f"{verb} its nodes in the group {report.import_group!r}")
    for old, new in report.renamed_computers.items():
        emit(f"the computer {old!r} was imported as {new!r}: the database has one of that label")
    for old, new in report.renamed_groups.items():
        emit(f"the group {old!r} was imported as {new!r}: the database has another of that label")
    if not report.dry_run and not report.new_nodes and not report.new_links:
        emit("nothing new: the database had everything in the archive")


def _inspect(args: argparse.Namespace) -> int:
    from miniengine.tools.archive import inspect_archive

    info = inspect_archive(args.file)
    if args.json:
        emit(json_object(info.as_dict()))
        return 0 if info.checksum_ok else _fail(str(info.problem))
    pairs = [
        ("file", f"{info.path} ({_size(info.size)})"),
        ("format version", str(info.format_version)),
        ("written by", f"miniengine {info.miniengine_version}"),
        ("created", info.created),
    ]
    pairs.extend((name, f"{count:,}") for name, count in info.counts.items())
    pairs.append(("checksum", "ok" if info.checksum_ok else "NOT OK"))
    emit(format_pairs(pairs))
    if info.groups:
        emit("groups:")
        for group in info.groups:
            emit(f"  {group['label']} ({group['type_string']}): {group['nodes']:,} nodes")
    return 0 if info.checksum_ok else _fail(str(info.problem))


def _fail(problem: str) -> int:
    """Say on stderr why the archive is not sound (after its description on stdout)."""
    import sys

    from miniengine.cli.errors import EXIT_ERROR
    from miniengine.cli.render import printable

    sys.stdout.flush()
    sys.stderr.write(f"error: {printable(problem)}\n")
    return EXIT_ERROR


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{count:,} {name}" for name, count in counts.items())


def _size(size: int) -> str:
    if size < 1024:
        return f"{size:,} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:,.1f} {unit}"
