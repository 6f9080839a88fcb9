"""``miniengine db info|migrate|vacuum|backup|maintain|copy|index``: the database as a whole.

``info`` only reads.  ``migrate`` opens the file as the engine does, which migrates it.
``vacuum`` rewrites the file and is refused while a daemon serves it.  ``backup`` copies a
consistent snapshot with ``VACUUM INTO`` (one read transaction, so the daemon may keep writing)
into a temporary file beside the target, checks it, renames it into place, and copies the file
repository's objects that the snapshot names beside it.  ``maintain`` removes repository objects
that nothing names any more.  ``copy`` copies a whole database, processes in flight included,
into an empty one of either backend (a sqlite file or a PostgreSQL URL).  ``index`` adds (or
``--drop`` removes) an expression index on an extra or attribute of nodes, for the
QueryBuilder's filters.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from miniengine.cli.connection import open_backend, open_readonly, require_file
from miniengine.cli.errors import CliError, Handler, guarded
from miniengine.cli.options import add_db_option, add_json_option, db_location, db_path
from miniengine.cli.table import emit, format_pairs, json_object
from miniengine.core.states import ProcessState
from miniengine.storage.host import current_host
from miniengine.storage.interfaces.broker import SILENT_AFTER, WorkerRow
from miniengine.storage.schema import SCHEMA_VERSION

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``info``, ``migrate``, ``vacuum``, ``backup``, ``maintain``, ``copy`` and ``index``."""
    info = commands.add_parser(
        "info",
        help="path, size, schema version, counts, queue and daemon of the database",
        description="Describe the database: its path and size (and its write-ahead log), "
        "schema version, nodes and processes by state, the task queue, and whether a daemon "
        "serves it.  Reads only.",
    )
    add_json_option(info)
    _common(info, _info)

    migrate = commands.add_parser(
        "migrate",
        help="bring the database to this miniengine's schema version",
        description="Open the database as the engine does, which migrates it to the schema "
        f"version of this miniengine ({SCHEMA_VERSION}), and say from which version.",
    )
    _common(migrate, _migrate)

    vacuum = commands.add_parser(
        "vacuum",
        help="rewrite the database compactly (refused while a daemon runs)",
        description="Rebuild the database file without its free pages (sqlite's VACUUM) and "
        "empty its write-ahead log.  Refused while a daemon serves the database: stop it "
        "first.",
    )
    _common(vacuum, _vacuum)

    backup = commands.add_parser(
        "backup",
        help="copy a consistent snapshot of the database to PATH (safe while a daemon runs)",
        description="Write a consistent, compact copy of the database to PATH with sqlite's "
        "VACUUM INTO, which reads one snapshot while the daemon goes on writing.  The copy is "
        "checked before it replaces anything.  The file repository's objects that the copy "
        "names are copied beside it (PATH's name with .repository), each checked against its "
        "hash.  A PostgreSQL database is backed up with PostgreSQL's pg_dump, or copied into a "
        "sqlite file with `db copy`.",
    )
    backup.add_argument("path", metavar="PATH", help="the backup file to write")
    backup.add_argument("-f", "--force", action="store_true", help="overwrite PATH if it exists")
    _common(backup, _backup)

    maintain = commands.add_parser(
        "maintain",
        help="remove the file repository's objects that no node or checkpoint names",
        description="Remove the objects of the file repository beside the database that no "
        "node and no checkpoint names any more (left by a crash between writing a file and "
        "committing the node that names it).  Objects younger than the grace period are kept: "
        "they may belong to a transaction about to commit, so this is safe while a daemon runs.",
    )
    maintain.add_argument(
        "--grace",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="keep unnamed objects younger than this (default 3600)",
    )
    maintain.add_argument(
        "-n", "--dry-run", action="store_true", help="only say what would be removed"
    )
    _common(maintain, _maintain)

    copy = commands.add_parser(
        "copy",
        help="copy the whole database SRC into the empty database DST (sqlite or PostgreSQL)",
        description="Copy every node, link, log, checkpoint, task, computer and scheduler job of "
        "SRC into DST, keeping pks and uuids, with the file repository's objects; each is a "
        "sqlite file or a postgresql:// URL.  Processes in flight go on in DST: the leases of "
        "SRC's owners are let go, so a daemon on DST claims them at once.  DST must be empty "
        "(it is created if missing); the copy is one transaction, so an interrupted copy "
        "leaves it empty.  Refused while a daemon or a script's run() runs processes of SRC, "
        "and when SRC's schema version is "
        f"not this miniengine's ({SCHEMA_VERSION}: run `miniengine db migrate` first).",
    )
    copy.add_argument("source", metavar="SRC", help="the database to copy (a path or URL)")
    copy.add_argument("target", metavar="DST", help="the empty database to fill (a path or URL)")
    copy.add_argument(
        "--repository",
        metavar="DIR",
        help="the folder to keep file contents in, for a PostgreSQL DST that has none recorded",
    )
    copy.add_argument(
        "--batch-size",
        type=int,
        default=5000,
        metavar="N",
        help="rows read and written at a time (default 5000)",
    )
    add_json_option(copy)
    copy.set_defaults(handler=guarded(_copy))

    index = commands.add_parser(
        "index",
        help="index extras or attributes of nodes, so that queries filtering on them stay fast",
        description="Create (if missing) an index on each named extra or attribute of nodes, "
        "e.g. `miniengine db index extras.batch attributes.value`: a QueryBuilder filter or "
        "order on that field then reads the index instead of every node.  Each index costs a "
        "little on every write of a node, so index the fields you query by, not all of them.  "
        "On sqlite an index on an attribute is computed by a function of miniengine's: a "
        "program without it (the sqlite3 shell) can read the database but not write its "
        "nodes until the index is dropped (--drop).",
    )
    index.add_argument(
        "fields",
        nargs="+",
        metavar="FIELD",
        help="extras.KEY or attributes.KEY (a nested key as attributes.KEY.SUB)",
    )
    index.add_argument(
        "--drop", action="store_true", help="drop the indexes on these fields instead"
    )
    _common(index, _index)


def _common(parser: argparse.ArgumentParser, handler: Handler) -> None:
    add_db_option(parser)
    parser.set_defaults(handler=guarded(handler))


def _size(count: int) -> str:
    """``512 B``, ``120.0 KiB``, ``28.6 MiB``, ``1.2 GiB``."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _wal(path: Path) -> Path:
    return Path(f"{os.fspath(path)}-wal")


def _daemon(path: Path | str) -> dict[str, object] | None:
    """The pid file of the daemon serving ``path`` (or a PostgreSQL URL) on this host if one
    is running, else None."""
    from miniengine.daemon.files import DaemonFiles

    return DaemonFiles(path).read()


# info ------------------------------------------------------------------------------------------


#: The schema version that gave the workers their host (``db info`` lists live workers from it).
WORKERS_HAVE_HOSTS = 8


def _info(args: argparse.Namespace) -> int:
    path = db_location(args)  # a file, or a PostgreSQL URL (its size is the server's business)
    shown = args.db_path  # the URL without its password
    with open_readonly(path) as db:
        version = db.queries.schema_version()
        counts = db.queries.counts()
        now = time.time()
        # daemons on several hosts may serve a PostgreSQL database: their workers, live ones.
        # Not a sqlite file's, which only this host serves (its daemon is the pid file's; the
        # rows of a backup are its original's workers); nor an old schema's, without hosts.
        live = (
            [row for row in db.broker.workers() if now - row.heartbeat <= SILENT_AFTER]
            if isinstance(path, str) and version >= WORKERS_HAVE_HOSTS
            else []
        )
    nodes, paused, queue = counts.nodes, counts.paused, counts.queue
    daemon = _daemon(path)
    by_state = {state.value: counts.processes.get(state.value, 0) for state in ProcessState}
    processes = sum(by_state.values())
    if args.json:
        emit(
            json_object(
                {
                    "path": str(shown),
                    "size_bytes": _file_size(path) if isinstance(path, Path) else None,
                    "wal_bytes": _file_size(_wal(path)) if isinstance(path, Path) else None,
                    "schema_version": version,
                    "current_schema_version": SCHEMA_VERSION,
                    "nodes": nodes,
                    "process_nodes": processes,
                    "data_nodes": nodes - processes,
                    "processes": by_state,
                    "paused": paused,
                    "queue": None if queue is None else queue._asdict(),
                    "daemon": _daemon_json(daemon),
                    "live_workers": [
                        {"id": row.id, "host": row.host, "pid": row.pid, "busy": row.busy}
                        for row in live
                    ],
                }
            )
        )
        return 0
    if version == SCHEMA_VERSION:
        schema = f"{version} (current)"
    else:
        schema = f"{version} (this miniengine uses {SCHEMA_VERSION}: run `miniengine db migrate`)"
    states = ", ".join(f"{count:,} {state}" for state, count in by_state.items() if count)
    if paused:
        states += f" ({paused:,} paused)"
    size = (
        f"{_size(_file_size(path))} (write-ahead log {_size(_file_size(_wal(path)))})"
        if isinstance(path, Path)
        else "n/a (a PostgreSQL database)"
    )
    pairs = [
        ("database", str(shown)),
        ("size", size),
        ("schema version", schema),
        ("nodes", f"{nodes:,} ({processes:,} processes, {nodes - processes:,} data)"),
        ("processes", states or "none"),
        (
            "queue",
            "n/a" if queue is None else f"{queue.ready:,} ready, {queue.leased:,} leased",
        ),
        ("daemon", _daemon_text(daemon) + _elsewhere(live, daemon)),
    ]
    emit(format_pairs(pairs))
    return 0


def _workers(daemon: dict[str, object]) -> list[int]:
    workers = daemon.get("workers")
    return (
        [int(pid) for pid in workers if isinstance(pid, int)] if isinstance(workers, list) else []
    )


def _daemon_json(daemon: dict[str, object] | None) -> dict[str, Any]:
    if daemon is None:
        return {"running": False, "pid": None, "workers": []}
    return {"running": True, "pid": daemon.get("pid"), "workers": _workers(daemon)}


def _elsewhere(live: list[WorkerRow], daemon: dict[str, object] | None) -> str:
    """The live workers that this host's daemon does not account for (other hosts' daemons,
    workers in applications), as ``db info`` adds them to its daemon line."""
    mine = set(_workers(daemon)) if daemon is not None else set()
    here = current_host()
    others = [row for row in live if not (row.host == here and row.pid in mine)]
    if not others:
        return ""
    hosts = sorted({row.host or "?" for row in others})
    return f"; {len(others)} live worker(s) elsewhere, on {', '.join(hosts)}"


def _daemon_text(daemon: dict[str, object] | None) -> str:
    if daemon is None:
        return "not running"
    workers = _workers(daemon)
    listed = f", worker pids {', '.join(map(str, workers))}" if workers else ""
    return f"running (pid {daemon.get('pid')}{listed})"


# migrate ---------------------------------------------------------------------------------------


def _version_of(path: Path | str) -> int:
    with open_readonly(path) as db:
        return db.queries.schema_version()


def _migrate(args: argparse.Namespace) -> int:
    location = db_location(args)  # a file, or a PostgreSQL URL
    shown = args.db_path  # the URL without its password
    before = _version_of(location)
    if before == SCHEMA_VERSION:
        emit(f"{shown}: schema version {before} is current; nothing to migrate")
        return 0
    open_backend(location).close()  # opening migrates, under a lock, idempotently
    after = _version_of(location)
    emit(f"migrated {shown} from schema version {before} to {after}")
    return 0


# index -----------------------------------------------------------------------------------------


def _index(args: argparse.Namespace) -> int:
    from miniengine.core.query import ENTITY_NODE, QueryError, split_field

    fields: list[tuple[str, str, tuple[str, ...]]] = []
    for field in args.fields:
        try:
            column, path = split_field("db index", ENTITY_NODE, field)
        except QueryError as exc:
            raise CliError(str(exc)) from exc
        if column not in ("extras", "attributes") or not path:
            raise CliError(
                f"{field!r}: name an extra or an attribute, as extras.KEY or attributes.KEY "
                "(the process fields are columns, indexed already)"
            )
        fields.append((field, column, path))
    db = open_backend(db_location(args))
    try:
        for field, column, path in fields:
            if args.drop:
                dropped = db.query_builder.drop_index(column, path)
                emit(f"dropped the index on {field}" if dropped else f"no index on {field}")
            else:
                emit(f"indexed {field} ({db.query_builder.index_field(column, path)})")
    finally:
        db.close()
    return 0


# vacuum ----------------------------------------------------------------------------------------


def _vacuum(args: argparse.Namespace) -> int:
    path = db_path(args)
    _version_of(path)  # one of ours, readable: never rewrite another program's file
    daemon = _daemon(path)
    if daemon is not None:
        raise CliError(
            f"a daemon (pid {daemon.get('pid')}) is running for {path}; stop it first "
            f"(python -m miniengine.daemon stop --db {path}), then vacuum"
        )
    before = _file_size(path) + _file_size(_wal(path))
    with open_readonly(path, check=False) as db:
        db.vacuum()
    after = _file_size(path) + _file_size(_wal(path))
    emit(f"vacuumed {path}: {_size(before)} -> {_size(after)}")
    return 0


# backup ----------------------------------------------------------------------------------------


def _backup(args: argparse.Namespace) -> int:
    location = db_location(args)
    if not isinstance(location, Path):
        # The server's own tool is the backup of a PostgreSQL database (consistent while the
        # daemons write, restorable with the server's tools); `db copy` writes a checked sqlite
        # file with the file repository's objects.
        raise CliError(
            f"{args.db_path} is a PostgreSQL database: back it up with PostgreSQL's pg_dump "
            "(e.g. pg_dump --format=custom --file=BACKUP DBNAME), or copy it into a sqlite "
            "file with `miniengine db copy URL PATH`, which also copies the file repository"
        )
    source = location
    target = Path(args.path).expanduser().absolute()
    with open_readonly(source) as db:
        _check_target(source, target, args.force)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
        # The copy goes into a new empty file; creating it first makes the copy 0600.
        try:
            os.close(
                os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
            )
        except OSError as exc:
            raise CliError(
                f"cannot write the backup {target}: {exc.strerror} in the folder {target.parent}"
            ) from exc
        try:
            db.backup(temporary)
            nodes, version = _verify(temporary)
            for suffix in ("-wal", "-shm", "-journal"):  # an old file's log must not survive
                Path(f"{os.fspath(target)}{suffix}").unlink(missing_ok=True)
            files = _copy_repository(source, temporary, target)
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    emit(
        f"backed up {source} to {target}: {nodes:,} nodes, schema version {version}, "
        f"{_size(_file_size(target))}" + (f", {files:,} repository objects" if files else "")
    )
    return 0


def _referenced_keys(database: Path) -> set[str]:
    with open_readonly(database, check=False) as db:
        return db.provenance.referenced_object_keys()


def _copy_repository(source: Path, snapshot: Path, target: Path) -> int:
    """Copy the objects the snapshot names from the source's repository into the target's;
    each is re-hashed on the way, so a corrupt object stops the backup instead of spreading."""
    from miniengine.storage.repository import Repository, RepositoryError

    keys = _referenced_keys(snapshot)
    if not keys:
        return 0
    origin, copy = Repository.for_database(source), Repository.for_database(target)
    for key in sorted(keys):
        if copy.has_object(key):
            continue
        try:
            with origin.open(key) as stream:
                stored = copy.put_object_from_filelike(stream)
        except RepositoryError as exc:
            raise CliError(f"cannot back up the file repository: {exc}") from exc
        if stored != key:
            copy.delete_objects([stored])
            raise CliError(
                f"the repository object {key} of {source} is corrupt (its content hashes to "
                f"{stored}); the backup was not written"
            )
    return len(keys)


def _maintain(args: argparse.Namespace) -> int:
    from miniengine.storage.repository import Repository

    path = db_path(args)
    _version_of(path)
    repository = Repository.for_database(path)
    keys = _referenced_keys(path)
    if args.dry_run:
        cutoff = time.time() - args.grace
        stale = [
            key
            for key in repository.list_objects()
            if key not in keys and repository.modified_before(key, cutoff)
        ]
        emit(f"would remove {len(stale):,} unnamed object(s) from {repository.root}")
        return 0
    removed = repository.maintain(keys, grace_seconds=args.grace)
    emit(f"removed {removed:,} unnamed object(s) from {repository.root}")
    return 0


def _check_target(source: Path, target: Path, force: bool) -> None:
    if target.is_dir():
        raise CliError(f"{target} is a folder: give the path of the backup file to write")
    if not target.parent.is_dir():
        raise CliError(f"cannot write {target}: the folder {target.parent} does not exist")
    if not os.path.lexists(target):
        return
    if target.resolve() == source.resolve():
        raise CliError(f"cannot back up {source} onto itself")
    if not force:
        raise CliError(f"{target} already exists; pass --force to overwrite it")
    require_file(target)
    daemon = _daemon(target)
    if daemon is not None:
        raise CliError(f"{target} is in use by a daemon (pid {daemon.get('pid')}); not overwriting")


def _verify(copy: Path) -> tuple[int, int]:
    """Check the copy's integrity and header; its node count and schema version."""
    with open_readonly(copy, check=False) as backup:
        result = backup.queries.integrity_check()
        if result != "ok":
            raise CliError(
                f"the backup failed sqlite's integrity check ({result}); nothing written"
            )
        version = backup.check()
        nodes = backup.queries.counts().nodes
    return nodes, version


# copy ------------------------------------------------------------------------------------------


def _warn_of_repository_variable(recorded: str | None, target: str) -> None:
    """``--repository`` records a folder that ``$MINIENGINE_REPOSITORY`` overrides where it is
    set: with both, and different, this shell's scripts and daemons would look elsewhere."""
    import sys

    from miniengine.storage.postgres.computer_rows import REPOSITORY_ENV_VAR

    variable = os.environ.get(REPOSITORY_ENV_VAR)
    if not recorded or not variable:
        return
    if Path(variable).expanduser().absolute() != Path(recorded).expanduser().absolute():
        sys.stderr.write(
            f"warning: ${REPOSITORY_ENV_VAR} is {variable}, and it wins over the folder "
            f"recorded in {target} ({recorded}) wherever it is set: this shell's scripts and "
            "daemons would look for the copied files there\n"
        )


def _copy(args: argparse.Namespace) -> int:
    import sys

    from miniengine.daemon.files import DaemonFiles
    from miniengine.storage.copy import CopyProgress, copy_database, shown_location
    from miniengine.storage.paths import resolve_db

    source, target = shown_location(args.source), shown_location(args.target)
    args.db_path = source  # for a driver's error: the location without its password
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, not {args.batch_size}")
    _warn_of_repository_variable(args.repository, target)
    daemon = DaemonFiles(resolve_db(args.source)).read()
    if daemon is not None:
        raise CliError(
            f"a daemon (pid {daemon.get('pid')}) is running for {source}; stop it first "
            f"(python -m miniengine.daemon stop --db {source}), then copy"
        )
    shown = {"at": time.monotonic() + 1.0}

    def progress(step: CopyProgress) -> None:
        # a line a second, from the first second on: small copies stay quiet
        now = time.monotonic()
        if now >= shown["at"]:
            shown["at"] = now + 1.0
            sys.stderr.write(f"copying {step.table}: {step.done:,} of {step.total:,} rows\n")
            sys.stderr.flush()

    summary = copy_database(
        args.source,
        args.target,
        batch_size=args.batch_size,
        repository=args.repository,
        progress=progress,
    )
    if args.json:
        emit(
            json_object(
                {
                    "source": summary.source,
                    "target": summary.target,
                    "rows": summary.rows,
                    "repository_objects": summary.objects,
                    "seconds": round(summary.seconds, 3),
                }
            )
        )
        return 0
    rows = sum(summary.rows.values())
    emit(
        f"copied {source} to {target}: {rows:,} rows ({summary.rows.get('nodes', 0):,} nodes), "
        f"{summary.objects:,} repository objects, in {summary.seconds:.1f} s"
    )
    return 0
