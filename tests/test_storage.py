"""The sqlite store: file settings, locking and retries, atomic transactions, schema, leases.

Everything here uses real files in temporary folders and, where another client matters, real OS
processes (``tests/scripts``) that hold locks or race to create the schema.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from miniengine import Int, calcfunction, run, workfunction
from miniengine.core.data import Data
from miniengine.exceptions import (
    DatabaseLockedError,
    IncompatibleDatabaseError,
    LeaseLostError,
    MiniengineError,
    StoreError,
)
from miniengine.runtime import context
from miniengine.storage import paths, schema
from miniengine.storage import store as store_module
from miniengine.storage.interfaces import Backend
from miniengine.storage.interfaces.provenance import FinishProcess, NewProcess
from miniengine.storage.open import open_backend
from miniengine.storage.store import Store
from tests.services import sql

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
TIMEOUT = 30.0  # for waits on events that should happen within milliseconds


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_script(name: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPTS / name), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=script_env(),
    )


def expect_line(process: subprocess.Popen[str], expected: str) -> str:
    """Block until the child prints its next line, and check that it starts with ``expected``."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(expected):
        process.kill()
        _, err = process.communicate(timeout=TIMEOUT)
        pytest.fail(f"expected {expected!r} from the child, got {line!r}; stderr:\n{err}")
    return line


def fingerprint(folder: Path) -> dict[str, str]:
    """The name and content hash of every file in ``folder``."""
    return {
        entry.name: hashlib.sha256(entry.read_bytes()).hexdigest()
        for entry in sorted(folder.iterdir())
        if entry.is_file()
    }


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection from outside the engine, to look at what it wrote."""
    return sqlite3.connect(path, isolation_level=None)


def process_rows(db: Path | str) -> list[tuple[Any, ...]]:
    return sql.query(
        db,
        "SELECT pk, process_label, process_state, owner, lease_epoch, lease_expires "
        "FROM nodes WHERE process_state IS NOT NULL ORDER BY pk",
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "store.sqlite")
    try:
        yield opened
    finally:
        opened.close()


class LockHolder:
    """Another OS process holding the file's write lock (``BEGIN IMMEDIATE``) until released."""

    def __init__(self, path: Path) -> None:
        self.process = start_script("hold_write_lock.py", str(path))
        expect_line(self.process, "LOCKED")

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("commit\n")
        self.process.stdin.flush()
        expect_line(self.process, "RELEASED")
        assert self.process.wait(timeout=TIMEOUT) == 0

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=TIMEOUT)


@pytest.fixture
def hold_lock(store: Store) -> Iterator[Callable[[], LockHolder]]:
    holders: list[LockHolder] = []

    def start() -> LockHolder:
        holders.append(LockHolder(store.path))
        return holders[-1]

    yield start
    for holder in holders:
        holder.close()


@pytest.fixture
def busy_seen(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set the first time the store meets SQLITE_BUSY (it then backs off and retries)."""
    seen = threading.Event()
    original = schema.is_busy

    def is_busy(exc: sqlite3.OperationalError) -> bool:
        busy = original(exc)
        if busy:
            seen.set()
        return busy

    monkeypatch.setattr(schema, "is_busy", is_busy)
    return seen


def insert_log(connection: sqlite3.Connection, message: str) -> int:
    cursor = connection.execute(
        "INSERT INTO logs (node_pk, time, levelname, message) VALUES (0, ?, 'TEST', ?)",
        (time.time(), message),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def log_pks(path: Path, message: str) -> list[int]:
    with raw(path) as connection:
        return [
            pk
            for (pk,) in connection.execute(
                "SELECT pk FROM logs WHERE message = ? ORDER BY pk", (message,)
            )
        ]


@calcfunction
def add(x: Int, y: Int) -> Int:
    return Int(x.value + y.value)


# the file's settings ---------------------------------------------------------------------------


def test_file_is_in_wal_mode_with_synchronous_normal(store: Store) -> None:
    with raw(store.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    pragma = "PRAGMA {}"
    assert store.write_sync(lambda c: c.execute(pragma.format("synchronous")).fetchone()[0]) == 1
    assert store.write_sync(lambda c: c.execute(pragma.format("locking_mode")).fetchone()[0]) == (
        "normal"
    )
    # readers wait for a busy file rather than failing at once (the writer retries by itself)
    assert store.read(lambda c: c.execute(pragma.format("busy_timeout")).fetchone()[0]) >= 5000


def test_synchronous_full_is_selectable(tmp_path: Path) -> None:
    full = Store(tmp_path / "full.sqlite", synchronous="full")
    try:
        assert full.write_sync(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2

        async def write_on_a_loop() -> int:
            return await full.write(insert_log, "full")

        assert asyncio.run(write_on_a_loop()) == log_pks(full.path, "full")[0]
    finally:
        full.close()
    with pytest.raises(ValueError, match="synchronous"):
        Store(tmp_path / "other.sqlite", synchronous="OFF")


def test_launches_use_a_normal_wal_store(miniengine_db: Path) -> None:
    assert run(add, 1, 2) == 3
    shared = context.store_for()
    assert shared.path == miniengine_db
    assert shared.synchronous == "NORMAL"
    with raw(miniengine_db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_version_and_application_id(store: Store) -> None:
    with raw(store.path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        assert connection.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
    assert {"nodes", "links", "logs", "checkpoints"} <= tables


def test_reopening_keeps_data_and_migrates_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.sqlite"
    first = Store(path)
    pk = first.write_sync(insert_log, "from version 1")
    first.close()

    version = schema.SCHEMA_VERSION
    migrations = {**schema.MIGRATIONS, version: "CREATE TABLE added_later (x INTEGER)"}
    monkeypatch.setattr(schema, "MIGRATIONS", migrations)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", version + 1)
    second = Store(path)
    second.close()
    with raw(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == version + 1
        assert connection.execute("SELECT count(*) FROM added_later").fetchone()[0] == 0
    assert log_pks(path, "from version 1") == [pk]


# busy handling -------------------------------------------------------------------------------


def test_write_waits_for_another_process_and_succeeds_after_release(
    store: Store, hold_lock: Callable[[], LockHolder], busy_seen: threading.Event
) -> None:
    holder = hold_lock()
    outcome: list[Any] = []

    def write() -> None:
        try:
            outcome.append(store.write_sync(insert_log, "waited"))
        except BaseException as exc:
            outcome.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    assert busy_seen.wait(TIMEOUT), "the write never met the other process's lock"
    assert outcome == [], "the write went through while another process held the lock"
    holder.release()
    writer.join(TIMEOUT)
    assert not writer.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], int), outcome
    holder_pks = log_pks(store.path, "written by the lock holder")
    assert log_pks(store.path, "waited") == [outcome[0]]
    assert holder_pks and holder_pks[0] < outcome[0]  # committed after the holder's transaction


def test_awaited_write_waits_off_the_loop_and_succeeds_after_release(
    store: Store, hold_lock: Callable[[], LockHolder], busy_seen: threading.Event
) -> None:
    holder = hold_lock()

    async def main() -> int:
        task = asyncio.ensure_future(store.write(insert_log, "awaited"))
        # the loop stays free while the write waits: this await completes before the write does
        assert await asyncio.to_thread(busy_seen.wait, TIMEOUT)
        assert not task.done()
        await asyncio.to_thread(holder.release)
        return await asyncio.wait_for(task, TIMEOUT)

    pk = asyncio.run(main())
    assert log_pks(store.path, "awaited") == [pk]


def test_write_gives_up_with_database_locked_error_naming_the_file(
    store: Store, hold_lock: Callable[[], LockHolder], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "BUSY_RETRY_SECONDS", 0.2)
    holder = hold_lock()
    with pytest.raises(DatabaseLockedError) as sync_error:
        store.write_sync(insert_log, "gave up")

    async def awaited() -> int:
        return await store.write(insert_log, "gave up")

    with pytest.raises(DatabaseLockedError) as async_error:
        asyncio.run(awaited())
    holder.release()
    for error in (sync_error.value, async_error.value):
        assert isinstance(error, StoreError) and isinstance(error, MiniengineError)
        assert str(store.path) in str(error)
        assert "0.2 s" in str(error)  # and how long it waited
    assert log_pks(store.path, "gave up") == []
    assert store.write_sync(insert_log, "after") == log_pks(store.path, "after")[0]


def open_handles(path: Path) -> int:
    """How many file descriptors of this process point at ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            pass  # closed while we looked
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_threads_that_end_leave_no_open_connections_behind(store: Store) -> None:
    """Worker threads expire and new ones start; a long-running process must not leak readers."""

    def read() -> None:
        assert store.read(lambda c: c.execute("SELECT count(*) FROM nodes").fetchone()) == (0,)

    def read_in_threads(count: int) -> None:
        for _ in range(count):
            thread = threading.Thread(target=read)
            thread.start()
            thread.join()

    read()
    # sqlite keeps the descriptor of a closed connection for reuse while this process holds
    # locks on the file, so measure after one thread has come and gone
    read_in_threads(1)
    before = open_handles(store.path)
    read_in_threads(20)
    assert open_handles(store.path) == before


# transactions never interleave -----------------------------------------------------------------

ROWS_PER_TRANSACTION = 5


def batch(connection: sqlite3.Connection, tag: str, fail: bool) -> str:
    """One transaction of several statements; gives other threads every chance to cut in."""
    for index in range(ROWS_PER_TRANSACTION):
        insert_log(connection, tag)
        time.sleep(0)  # release the GIL between statements
        if fail and index == 2:
            raise ValueError(f"{tag} fails half-way")
    return tag


def test_concurrent_transactions_are_atomic_and_never_interleave(store: Store) -> None:
    threads, per_thread, tasks = 6, 15, 60
    failing = {"thread-2-7", "task-31"}
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def worker(number: int) -> None:
        start.wait()
        for index in range(per_thread):
            tag = f"thread-{number}-{index}"
            try:
                results.append(store.write_sync(batch, tag, tag in failing))
            except ValueError as exc:
                errors.append(exc)

    async def main() -> list[str | BaseException]:
        async def one(index: int) -> str:
            tag = f"task-{index}"
            return await store.write(batch, tag, tag in failing)

        start.wait()
        return await asyncio.gather(*(one(i) for i in range(tasks)), return_exceptions=True)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    task_results = asyncio.run(main())
    for thread in workers:
        thread.join(TIMEOUT)

    task_errors = [result for result in task_results if isinstance(result, BaseException)]
    assert [str(error) for error in errors] == ["thread-2-7 fails half-way"]
    assert [str(error) for error in task_errors] == ["task-31 fails half-way"]
    assert all(isinstance(error, ValueError) for error in task_errors)
    expected = {f"thread-{n}-{i}" for n in range(threads) for i in range(per_thread)}
    expected |= {f"task-{i}" for i in range(tasks)}
    assert set(results) | {r for r in task_results if isinstance(r, str)} == expected - failing

    with raw(store.path) as connection:
        by_tag: dict[str, list[int]] = {}
        for pk, tag in connection.execute("SELECT pk, message FROM logs ORDER BY pk"):
            by_tag.setdefault(tag, []).append(pk)
    assert set(by_tag) == expected - failing  # the failed ones rolled back whole
    for tag, pks in by_tag.items():
        # all rows of one transaction, with nobody else's rows in between
        assert pks == list(range(pks[0], pks[0] + ROWS_PER_TRANSACTION)), (tag, pks)


# creation races and refusals -------------------------------------------------------------------


@pytest.mark.parametrize("initial", ["missing", "empty"])
def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path, initial: str) -> None:
    for attempt in range(2):
        path = tmp_path / f"race-{attempt}.sqlite"
        if initial == "empty":
            path.write_bytes(b"")
        racers = [start_script("open_store.py", str(path)) for _ in range(3)]
        try:
            for racer in racers:
                expect_line(racer, "READY")
            for racer in racers:  # release them together
                assert racer.stdin is not None
                racer.stdin.write("go\n")
                racer.stdin.flush()
            outcomes = [racer.communicate(timeout=TIMEOUT) for racer in racers]
        finally:
            for racer in racers:
                if racer.poll() is None:
                    racer.kill()
                    racer.communicate()
        for racer, (out, err) in zip(racers, outcomes, strict=True):
            assert racer.returncode == 0, err
            assert out.startswith("OK"), (out, err)
        with raw(path) as connection:
            assert connection.execute("PRAGMA user_version").fetchone()[0] == (
                schema.SCHEMA_VERSION
            )
            assert connection.execute("PRAGMA application_id").fetchone()[0] == (
                schema.APPLICATION_ID
            )
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert connection.execute("SELECT count(*) FROM nodes").fetchone()[0] == len(racers)
            tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master")]
        assert sorted(set(tables)) == sorted(tables)  # nothing created twice
        assert {"nodes", "links", "logs", "checkpoints"} <= set(tables)


def make_newer_database(path: Path) -> None:
    Store(path).close()
    with raw(path) as connection:
        connection.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    connection.close()


def make_version_negative(path: Path) -> None:
    Store(path).close()
    with raw(path) as connection:
        connection.execute("PRAGMA user_version = -1")
    connection.close()


def make_version_zero(path: Path) -> None:
    Store(path).close()
    with raw(path) as connection:
        connection.execute("PRAGMA user_version = 0")
    connection.close()


def make_foreign_database(path: Path) -> None:
    connection = raw(path)
    connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    connection.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    connection.close()


def make_text_file(path: Path) -> None:
    path.write_text("these are my notes, not a database\n" * 50)


def make_short_binary_file(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 3)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (make_newer_database, "newer"),
        (make_version_negative, "changed by hand"),
        (make_version_zero, "changed by hand"),
        (make_foreign_database, "not a miniengine database"),
        (make_text_file, "not a sqlite database"),
        (make_short_binary_file, "not a sqlite database"),
    ],
)
def test_incompatible_files_are_refused_and_left_untouched(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[Path], None],
    reason: str,
) -> None:
    folder = tmp_path / "refused"
    folder.mkdir()
    path = folder / "engine.sqlite"
    make(path)
    before = fingerprint(folder)

    with pytest.raises(IncompatibleDatabaseError) as error:
        Store(path)
    assert isinstance(error.value, StoreError) and isinstance(error.value, MiniengineError)
    assert str(path) in str(error.value)
    assert reason in str(error.value)
    assert fingerprint(folder) == before

    # a launch pointed at that file refuses it the same way, before running anything
    monkeypatch.setenv(paths.ENV_VAR, str(path))
    ran: list[bool] = []

    @calcfunction
    def marker() -> Int:
        ran.append(True)
        return Int(1)

    with pytest.raises(IncompatibleDatabaseError, match=str(path)):
        run(marker)
    assert ran == []
    assert fingerprint(folder) == before


CRASHING_FOREIGN_APP = """
import os, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA journal_mode = WAL")
connection.execute("PRAGMA wal_autocheckpoint = 0")
connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
connection.execute("INSERT INTO invoices (amount) VALUES (12.5)")
os._exit(0)  # crash: the committed rows stay in the write-ahead log, not yet in the file
"""


def test_foreign_database_with_a_leftover_log_is_refused_without_a_checkpoint(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crashed.sqlite"
    subprocess.run([sys.executable, "-c", CRASHING_FOREIGN_APP, str(path)], check=True)
    log = Path(f"{path}-wal")
    assert log.stat().st_size > 0
    # the -shm file is an index that any reader may rebuild; the file and its log are the data
    before = {name: fingerprint(tmp_path)[name] for name in (path.name, log.name)}

    with pytest.raises(IncompatibleDatabaseError, match="not a miniengine database"):
        Store(path)
    assert {name: fingerprint(tmp_path)[name] for name in (path.name, log.name)} == before
    with raw(path) as connection:
        assert connection.execute("SELECT amount FROM invoices").fetchall() == [(12.5,)]
    connection.close()


# where the database lives ----------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["hash#mark", "question?mark", "per%41cent", "sp ace", "ünï"])
def test_any_file_name_opens_that_very_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str
) -> None:
    path = tmp_path / folder / "engine.sqlite"
    path.parent.mkdir(mode=0o700)  # only the default folder is ever created by the engine
    monkeypatch.setenv(paths.ENV_VAR, str(path))
    assert run(add, 1, 2) == 3
    assert [row[1:3] for row in process_rows(path)] == [("add", "finished")]
    assert [entry.name for entry in tmp_path.iterdir()] == [folder]  # nothing written elsewhere


def test_default_database_is_private_and_follows_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    homes = [tmp_path / "home-a", tmp_path / "home-b"]
    for home in homes:
        monkeypatch.setenv("HOME", str(home))
        assert run(add, 1, 2) == 3
    for home in homes:
        folder = home / ".miniengine"
        database = folder / "engine.sqlite"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(database.stat().st_mode) == 0o600
        assert [row[1:3] for row in process_rows(database)] == [("add", "finished")]


def test_miniengine_db_is_resolved_at_each_launch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first.sqlite", tmp_path / "second.sqlite"
    monkeypatch.setenv(paths.ENV_VAR, str(first))
    assert run(add, 1, 2) == 3
    monkeypatch.setenv(paths.ENV_VAR, str(second))
    assert run(add, 3, 4) == 7

    async def launch() -> Any:
        from miniengine import arun

        return await arun(add, 5, 6)

    monkeypatch.setenv(paths.ENV_VAR, str(first))
    assert asyncio.run(launch()) == 11
    assert len(process_rows(first)) == 2
    assert len(process_rows(second)) == 1


# leases and fencing ----------------------------------------------------------------------------


def own_row(db: Path | str) -> tuple[Any, ...]:
    """The row of the process whose body is running now, read from outside the engine."""
    process = context.current_process()
    assert process is not None and process.pk is not None
    (row,) = sql.query(
        db,
        "SELECT owner, lease_epoch, lease_expires, process_state FROM nodes WHERE pk = ?",
        process.pk,
    )
    return row


@pytest.mark.backends
def test_running_process_rows_carry_owner_and_lease(miniengine_db: Path | str) -> None:
    seen: dict[str, tuple[Any, ...]] = {}

    @calcfunction
    def child(x: Int) -> Int:
        seen["child"] = own_row(miniengine_db)
        seen["now"] = (time.time(),)
        seen["all"] = tuple(process_rows(miniengine_db))
        return Int(x.value + 1)

    @workfunction
    def parent(x: Int) -> Int:
        seen["parent"] = own_row(miniengine_db)
        result: Int = child(x)
        return result

    assert run(parent, 1) == 2
    owner = context.store_for().owner
    now = seen["now"][0]
    for name in ("parent", "child"):
        row_owner, epoch, expires, state = seen[name]
        assert (row_owner, epoch, state) == (owner, 1, "running"), name
        assert expires > now, name
    # while the child ran, both rows were held by this store's owner
    assert [(label, state, row_owner) for _, label, state, row_owner, _, _ in seen["all"]] == [
        ("parent", "running", owner),
        ("child", "running", owner),
    ]
    for _, _, state, row_owner, epoch, expires in process_rows(miniengine_db):
        assert (state, row_owner, epoch, expires) == ("finished", None, 1, None)


def new_process(store: Backend, parent: tuple[int, str, int] | None = None) -> NewProcess:
    return NewProcess(
        uuid=f"fenced-{time.monotonic_ns()}",
        node_type="process.calcfunction",
        process_type="tests.fenced",
        process_label="fenced",
        process_state="running",
        label="",
        description="",
        inputs=[("x", Int(1))],
        input_link_type="input_calc",
        owner=store.owner,
        lease_expires=store.lease_expiry(),
        parent=parent,
        call_link_type="call_calc",
    )


def snapshot(db: Path | str) -> tuple[list[tuple[Any, ...]], ...]:
    return tuple(
        sql.query(db, f"SELECT * FROM {table} ORDER BY pk") for table in ("nodes", "links", "logs")
    )


@pytest.mark.backends
def test_fencing_refuses_a_stale_finish_and_changes_nothing(miniengine_db: Path | str) -> None:
    store = open_backend(miniengine_db)
    try:
        _fencing_refuses_a_stale_finish(store, miniengine_db)
    finally:
        store.close()


def _fencing_refuses_a_stale_finish(store: Backend, db: Path | str) -> None:
    pk, _ = store.provenance.begin_process(new_process(store))
    before = snapshot(db)

    def finish(owner: str, epoch: int) -> FinishProcess:
        output: Data = Int(2)
        return FinishProcess(
            pk=pk,
            owner=owner,
            epoch=epoch,
            process_state="finished",
            exit_status=0,
            outputs=[("result", output, "create")],
            log=("REPORT", "done"),
        )

    with pytest.raises(LeaseLostError, match=f"process {pk}"):
        store.provenance.finish_process(finish(store.owner, 2))
    with pytest.raises(LeaseLostError):
        store.provenance.finish_process(finish("someone-else", 1))

    async def awaited() -> None:
        await store.provenance.finish_process.aio(finish(store.owner, 0))

    with pytest.raises(LeaseLostError) as error:
        asyncio.run(awaited())
    assert isinstance(error.value, StoreError)
    assert snapshot(db) == before

    # a child cannot be created under a parent whose lease moved on either
    with pytest.raises(LeaseLostError):
        store.provenance.begin_process(new_process(store, parent=(pk, store.owner, 7)))
    assert snapshot(db) == before

    # the rightful owner can still finish it
    [output_pk] = store.provenance.finish_process(finish(store.owner, 1))
    assert sql.query(db, "SELECT process_state, owner FROM nodes WHERE pk = ?", pk) == [
        ("finished", None)
    ]
    assert sql.query(
        db, "SELECT in_pk, link_type, label FROM links WHERE out_pk = ?", output_pk
    ) == [(pk, "create", "result")]


def test_heartbeat_renews_the_lease_while_a_long_sync_body_runs(miniengine_db: Path) -> None:
    short = Store(miniengine_db, lease_timeout=0.5)
    store_module._shared[miniengine_db] = short  # the store every launch here will use
    observed: list[float] = []

    @calcfunction
    def long_body() -> Int:
        running = context.current_process()
        assert running is not None and running.store is short
        first_expiry = own_row(miniengine_db)[2]
        deadline = time.monotonic() + TIMEOUT
        # Hold the body (time-driven: the heartbeat runs on its own clock) until the first lease
        # would have run out and a renewal has moved it on.
        while time.monotonic() < deadline:
            expires = own_row(miniengine_db)[2]
            now = time.time()
            observed.append(expires - now)
            if now > first_expiry + 0.1 and expires > now:
                return Int(len(observed))
            time.sleep(0.01)
        raise AssertionError("the lease was not renewed while the body ran")

    try:
        run(long_body)
    finally:
        short.close()
    assert all(remaining > 0 for remaining in observed), "the lease lapsed while the body ran"
    assert process_rows(miniengine_db)[0][2:4] == ("finished", None)
