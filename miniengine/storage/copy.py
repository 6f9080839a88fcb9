"""Copying a whole database into an empty one: a sqlite file into PostgreSQL, back, or into
another file, with the processes in flight.

The copy keeps every pk and uuid (a pk printed before the copy names the same node after it),
so the target must be empty.  It reads the source in one snapshot and in batches (a table of a
million rows is never in memory at once) and writes the target in **one** transaction: an
error or an interruption half-way leaves the target as empty as it was.  The tables and their
columns are listed once, in :data:`TABLES`; a test checks them against both schemas, so a new
column cannot be left behind silently.  What is left out on purpose is in :data:`NOT_COPIED`.

Processes in flight go on in the target: their checkpoints, tasks, waits and memo rows are
copied, and the leases of the source's owners are let go, as the daemon does for an owner that
died (a leased task is ready again, an owned process's lease has expired, a watched scheduler
job is nobody's), so a daemon on the target claims them at once.  A source still served by a
daemon (a worker's heartbeat is recent) is refused: its processes would run twice.

The file repository's objects that the copied nodes and checkpoints name are copied into the
target's repository as the rows that name them are read (each checked against its hash), before
the transaction that refers to them commits, as every write of the engine does; the objects a
failed copy wrote are removed again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from miniengine.exceptions import StoreError
from miniengine.storage.paths import database_identity, resolve_db
from miniengine.storage.repository import Repository, RepositoryError
from miniengine.storage.repository_rows import _KEY_IN_MSGPACK
from miniengine.storage.schema import SCHEMA_VERSION
from miniengine.storage.store import DEFAULT_LEASE_TIMEOUT

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "NOT_COPIED",
    "TABLES",
    "CopiedTable",
    "CopyProgress",
    "CopyRefused",
    "CopySummary",
    "copy_database",
    "open_dump",
    "open_load",
    "shown_location",
]

#: Rows read and written at a time.
DEFAULT_BATCH_SIZE = 5000


class CopiedTable(NamedTuple):
    """A table copied row by row: its columns, the key it is read in order of, and the column
    numbered by an identity (PostgreSQL) or AUTOINCREMENT (sqlite), if any."""

    name: str
    columns: tuple[str, ...]
    order: tuple[str, ...]
    identity: str | None = None


def _table(name: str, columns: str, order: str, identity: str | None = None) -> CopiedTable:
    return CopiedTable(name, tuple(columns.split()), tuple(order.split()), identity)


#: Every table that holds state, in an order that inserts what a row refers to before the row
#: (PostgreSQL enforces the foreign keys).
TABLES: tuple[CopiedTable, ...] = (
    _table(
        "computers",
        "pk uuid label hostname description transport_type scheduler_type metadata "
        "configuration ctime mtime",
        "pk",
        "pk",
    ),
    _table(
        "nodes",
        "pk uuid node_type process_type process_label process_state process_status exit_status "
        "exit_message exception paused label description attributes owner lease_epoch "
        "lease_expires ctime mtime submitted control computer_pk extras node_hash awaited",
        "pk",
        "pk",
    ),
    _table("links", "pk in_pk out_pk link_type label", "pk", "pk"),
    _table("logs", "pk node_pk time levelname message", "pk", "pk"),
    _table("comments", "pk uuid node_pk ctime mtime content", "pk", "pk"),
    _table("groups", "pk uuid label type_string description extras ctime", "pk", "pk"),
    _table("group_nodes", "group_pk node_pk", "group_pk node_pk"),
    _table("settings", "name value", "name"),
    _table("checkpoints", "node_pk seq data", "node_pk"),
    _table(
        "tasks",
        "pk process_pk dedup_key status worker lease_expires not_before attempts ctime",
        "pk",
        "pk",
    ),
    _table("waits", "parent_pk seq outstanding", "parent_pk"),
    _table("awaited", "child_pk parent_pk", "child_pk parent_pk"),
    _table(
        "call_memo",
        "parent_pk seq call_index process_type fingerprint child_pk",
        "parent_pk seq call_index",
    ),
    _table("events", "id node_pk from_state to_state time", "id", "id"),
    _table("gates", "name opened", "name"),
    _table(
        "calcjob_jobs",
        "process_pk computer_uuid job_id owner lease_expires done scheduler_state "
        "detailed_info created",
        "process_pk",
    ),
)

#: The tables of either schema that are not copied, and why.
NOT_COPIED: Mapping[str, str] = {
    "workers": "the source's live daemon workers; a daemon of the target registers its own",
    "watchers": "the subscriptions of the source's readers, who read the source's events",
    "miniengine_meta": "PostgreSQL's header: the schema version (the target's own, checked to "
    "be the source's) and the repository folder (the target's own, where the files go)",
}

#: The columns of a table whose msgpack values may name repository objects.
_OBJECT_COLUMNS = {"nodes": "attributes", "checkpoints": "data"}


class CopyRefused(StoreError):
    """The copy was refused before anything was written (or rolled back whole)."""


@dataclass(frozen=True)
class CopyProgress:
    """How far the copy of one table has come (after each batch)."""

    table: str
    done: int
    total: int


@dataclass(frozen=True)
class CopySummary:
    """What a copy wrote: rows per table, repository objects copied, and how long it took."""

    source: str
    target: str
    rows: dict[str, int]
    objects: int
    seconds: float


class Dump(Protocol):
    """A source database read for copying, in one snapshot (one per backend)."""

    location: str

    def close(self) -> None: ...
    def schema_version(self) -> int | None: ...
    def columns(self) -> dict[str, tuple[str, ...]]: ...
    def count(self, table: str) -> int: ...
    def live_workers(self, since: float) -> list[str]: ...
    def live_owners(self, now: float) -> dict[str, int]: ...
    def event_watermark(self) -> int: ...
    def rows(self, table: CopiedTable, batch_size: int) -> Iterator[list[tuple[Any, ...]]]: ...
    def repository(self) -> Repository | None: ...


class Load(Protocol):
    """A target database filled in one transaction (one per backend)."""

    location: str

    def close(self) -> None: ...
    def columns(self) -> dict[str, tuple[str, ...]]: ...
    def occupied(self, tables: Sequence[str]) -> dict[str, int]: ...
    def repository(self) -> Repository | None: ...
    def record_repository(self, root: Path) -> None: ...
    def begin(self, tables: Sequence[str]) -> None: ...
    def insert(self, table: CopiedTable, rows: Sequence[tuple[Any, ...]]) -> None: ...
    def finish(self, tables: Sequence[CopiedTable], event_watermark: int) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


def shown_location(db: str | os.PathLike[str]) -> str:
    """``db`` as messages show it: a file's absolute path, a URL without its password."""
    location = resolve_db(db)
    if isinstance(location, Path):
        return str(location)
    from miniengine.storage.postgres.connection import without_password

    return without_password(location)


def open_dump(db: str | os.PathLike[str]) -> Dump:
    """The database ``db`` (a path or a ``postgresql://`` URL) opened to be read for copying."""
    location = resolve_db(db)
    if isinstance(location, Path):
        from miniengine.storage.sqlite.copy_rows import SqliteDump

        return SqliteDump(location)
    from miniengine.storage.postgres.copy_rows import PostgresDump

    return PostgresDump(location)


def open_load(db: str | os.PathLike[str]) -> Load:
    """The database ``db`` opened (and its schema created) to be filled by a copy."""
    location = resolve_db(db)
    if isinstance(location, Path):
        from miniengine.storage.sqlite.copy_rows import SqliteLoad

        return SqliteLoad(location)
    from miniengine.storage.postgres.copy_rows import PostgresLoad

    return PostgresLoad(location)


@contextmanager
def _closing(opened: Dump | Load) -> Iterator[None]:
    try:
        yield
    finally:
        opened.close()


def copy_database(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    repository: str | os.PathLike[str] | None = None,
    progress: Callable[[CopyProgress], None] | None = None,
) -> CopySummary:
    """Copy the database ``source`` into the empty database ``target`` (each a sqlite path or a
    ``postgresql://`` URL; see the module's docstring).

    ``repository`` is the folder to record as the repository of a PostgreSQL target that has
    none yet (a sqlite file's is beside it).  ``progress`` is called after each batch, inside
    the target's transaction: an exception it raises rolls the whole copy back.  Raises
    :class:`CopyRefused` when the target is not empty, the source's schema version is not this
    code's, or a daemon serves the source.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    started = time.monotonic()
    source_shown, target_shown = shown_location(source), shown_location(target)
    target_db = resolve_db(target)
    if _same(resolve_db(source), target_db):
        raise CopyRefused(f"cannot copy {source_shown} onto itself")
    if repository is not None and isinstance(target_db, Path):  # before the file is created
        raise CopyRefused(
            f"{target_shown}: a sqlite database keeps its files beside it "
            f"({Repository.for_database(target_db).root}); --repository is for a PostgreSQL "
            "target"
        )
    dump = open_dump(source)
    with _closing(dump):
        _check_source(dump)
        _refuse_occupied(target, target_shown)
        counts = {table.name: dump.count(table.name) for table in TABLES}
        watermark = dump.event_watermark()
        load = open_load(target)
        with _closing(load):
            objects = _Objects(dump, load, repository)
            rows = _load(dump, load, objects, counts, watermark, batch_size, progress)
    return CopySummary(
        source=source_shown,
        target=target_shown,
        rows=rows,
        objects=len(objects.created),
        seconds=time.monotonic() - started,
    )


def _same(source: Path | str, target: Path | str) -> bool:
    if isinstance(source, Path) and isinstance(target, Path):
        try:
            return source.resolve() == target.resolve() or (
                target.exists() and os.path.samefile(source, target)
            )
        except OSError:
            return False
    if isinstance(source, str) and isinstance(target, str):  # one database, however spelt
        return database_identity(source) == database_identity(target)
    return False


def _check_source(dump: Dump) -> None:
    """Refuse a source of another schema version, or one that a daemon serves."""
    version = dump.schema_version()
    if version is None:
        raise CopyRefused(f"{dump.location} holds no miniengine database: nothing to copy")
    if version < SCHEMA_VERSION:
        raise CopyRefused(
            f"{dump.location} has schema version {version} and this miniengine copies version "
            f"{SCHEMA_VERSION}: run `miniengine db migrate` on it first"
        )
    if version > SCHEMA_VERSION:
        raise CopyRefused(
            f"{dump.location} was written by a newer miniengine (schema version {version}, this "
            f"version understands up to {SCHEMA_VERSION}); copy it with that version"
        )
    live = dump.live_workers(time.time() - DEFAULT_LEASE_TIMEOUT)
    if live:
        raise CopyRefused(
            f"a daemon serves {dump.location} (workers {', '.join(live)} sent a heartbeat in the "
            f"last {DEFAULT_LEASE_TIMEOUT:g} s); stop it first, then copy (the workers of a "
            f"daemon that died count for {DEFAULT_LEASE_TIMEOUT:g} s after their last heartbeat)"
        )
    # a daemon with a long lease timeout heartbeats less often than the check above looks
    # back, and a script's run() has no worker row: the live leases tell of both (a lease is
    # renewed with the heartbeat, so one that has not run out may belong to a live owner)
    owners = dump.live_owners(time.time())
    if owners:
        held = ", ".join(f"{owner} ({count} process(es))" for owner, count in owners.items())
        raise CopyRefused(
            f"processes in {dump.location} are running: {held} hold(s) their leases (a "
            "script's run(), or a daemon's worker); a copy now would run them again in the "
            "target while they go on here. Let them end, or stop the script or daemon, then "
            "copy; the leases of one that died run out within its lease timeout"
        )


def _not_empty(location: str, held: Mapping[str, int]) -> CopyRefused:
    listed = ", ".join(f"{count:,} rows in {table}" for table, count in held.items())
    return CopyRefused(
        f"the target {location} is not empty ({listed}); a copy keeps the source's pks, so it "
        "goes only into an empty database: give a new one"
    )


def _refuse_occupied(target: str | os.PathLike[str], shown: str) -> None:
    """Refuse a target that holds rows before opening it to write (which would create or
    migrate its schema): a refused target is left untouched."""
    location = resolve_db(target)
    if isinstance(location, Path) and (not location.exists() or location.stat().st_size == 0):
        return
    peek = open_dump(target)
    with _closing(peek):
        if peek.schema_version() is None:
            return  # empty, or another program's (the load refuses that without writing)
        present = peek.columns()
        held = {
            table.name: count
            for table in TABLES
            if table.name in present and (count := peek.count(table.name))
        }
    if held:
        raise _not_empty(shown, held)


class _Objects:
    """Copies the repository objects that copied rows name, from the source's repository into
    the target's, and remembers the ones it wrote (removed again if the copy fails)."""

    def __init__(self, dump: Dump, load: Load, recorded: str | os.PathLike[str] | None) -> None:
        self._dump_location = dump.location
        self._load_location = load.location
        self.source = dump.repository()
        self.recorded = None if recorded is None else Path(recorded).expanduser().absolute()
        self.target = Repository(self.recorded) if self.recorded else load.repository()
        self.created: list[str] = []

    def copy_named(self, rows: Sequence[tuple[Any, ...]], column: int) -> None:
        for row in rows:
            blob = row[column]
            if blob is None:
                continue
            for match in _KEY_IN_MSGPACK.findall(bytes(blob)):
                self._copy(match.decode())

    def _copy(self, key: str) -> None:
        if self.target is None:
            raise CopyRefused(
                f"the target {self._load_location} has no repository folder recorded, and the "
                "source's nodes name files: pass the folder to keep them in (--repository DIR, "
                "recorded in the target) or set $MINIENGINE_REPOSITORY"
            )
        if self.target.has_object(key):
            return
        if self.source is None or not self.source.has_object(key):
            where = "it has no repository" if self.source is None else self.source.root
            raise CopyRefused(
                f"{self._dump_location} names the repository object {key}, which is missing "
                f"({where}); nothing was copied"
            )
        try:
            with self.source.open(key) as stream:
                stored = self.target.put_object_from_filelike(stream)
        except RepositoryError as exc:
            raise CopyRefused(f"cannot copy the file repository: {exc}") from exc
        self.created.append(stored)
        if stored != key:
            raise CopyRefused(
                f"the repository object {key} of {self._dump_location} is corrupt (its content "
                f"hashes to {stored}); nothing was copied"
            )

    def undo(self) -> None:
        if self.target is not None and self.created:
            self.target.delete_objects(self.created)
        self.created.clear()


def _released(table: CopiedTable) -> Callable[[tuple[Any, ...]], tuple[Any, ...]] | None:
    """How a row of ``table`` lets go of the source's owners (as the daemon releases the
    leases of an owner that died), or ``None`` for a table without leases."""
    index = {column: number for number, column in enumerate(table.columns)}
    if table.name == "nodes":
        owner, expires = index["owner"], index["lease_expires"]

        def expire(row: tuple[Any, ...]) -> tuple[Any, ...]:
            if row[owner] is None or row[expires] == 0:
                return row
            changed = list(row)
            changed[expires] = 0.0  # expired: claimable at once, recovered if it has no task
            return tuple(changed)

        return expire
    if table.name == "tasks":
        status, worker, expires = index["status"], index["worker"], index["lease_expires"]

        def ready(row: tuple[Any, ...]) -> tuple[Any, ...]:
            if row[status] != "leased":
                return row
            changed = list(row)
            changed[status], changed[worker], changed[expires] = "ready", None, None
            return tuple(changed)

        return ready
    if table.name == "calcjob_jobs":
        owner, expires = index["owner"], index["lease_expires"]

        def unwatched(row: tuple[Any, ...]) -> tuple[Any, ...]:
            if row[owner] is None:
                return row
            changed = list(row)
            changed[owner], changed[expires] = None, None
            return tuple(changed)

        return unwatched
    return None


def _load(
    dump: Dump,
    load: Load,
    objects: _Objects,
    counts: Mapping[str, int],
    watermark: int,
    batch_size: int,
    progress: Callable[[CopyProgress], None] | None,
) -> dict[str, int]:
    """Fill the target in one transaction; on any failure roll it back and remove the objects
    written for it."""
    names = [table.name for table in TABLES]
    rows: dict[str, int] = {}
    load.begin(names)
    try:
        held = load.occupied(names)
        if held:
            raise _not_empty(load.location, held)
        if objects.recorded is not None:
            load.record_repository(objects.recorded)
        for table in TABLES:
            release = _released(table)
            named = _OBJECT_COLUMNS.get(table.name)
            column = table.columns.index(named) if named is not None else None
            done = 0
            for batch in dump.rows(table, batch_size):
                if release is not None:
                    batch = [release(row) for row in batch]
                if column is not None:
                    objects.copy_named(batch, column)
                load.insert(table, batch)
                done += len(batch)
                if progress is not None:
                    progress(CopyProgress(table.name, done, counts[table.name]))
            rows[table.name] = done
        load.finish(TABLES, watermark)
        load.commit()
    except BaseException:
        load.rollback()
        objects.undo()
        raise
    return rows
