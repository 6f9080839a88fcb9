"""Where the database may live and what happens when it cannot be written.

A mistyped ``$MINIENGINE_DB`` or a URL is refused rather than turned into a new empty database;
folders and files that this user cannot write give a ``StoreError`` (one line from the CLI, no
traceback); a read-only database can still be read; a full database fails cleanly and loses
nothing.

These tests run as root here and in CI, and root ignores file modes.  The programs that must meet
an unwritable file therefore run as root *without* the capabilities that override file modes:
a tiny launcher drops CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from its bounding set
and then execs the real command, so the kernel enforces the modes on it (and on every process it
starts) as it would for any user.  An ordinary user needs no launcher.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from miniengine import Int, Str, calcfunction, load_node, run
from miniengine.daemon.files import DaemonFiles
from miniengine.exceptions import (
    DatabaseFullError,
    MiniengineError,
    ReadOnlyDatabaseError,
    StoreError,
)
from miniengine.runtime.context import store_for
from miniengine.storage.paths import ENV_VAR
from miniengine.storage.store import Store, close_all_stores

ROOT = Path(__file__).resolve().parents[1]

#: Run as ``python -c DROP_THEN_EXEC PROGRAM ARGS...``: drops the capabilities that let root
#: write any file (prctl PR_CAPBSET_DROP = 24; CAP_DAC_OVERRIDE 1, CAP_DAC_READ_SEARCH 2,
#: CAP_FOWNER 3), then becomes PROGRAM, which gains none of them back at exec.
DROP_THEN_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for capability in (1, 2, 3):
    if libc.prctl(24, capability, 0, 0, 0) != 0:
        sys.exit(f"cannot drop capability {capability}: errno {ctypes.get_errno()}")
os.execv(sys.argv[1], sys.argv[1:])
"""

#: What a Python caller does with the database named by $MINIENGINE_DB (or the default).
PROBE = """
import sys
from miniengine import Int, load_node
from miniengine.exceptions import StoreError
try:
    if sys.argv[1] == "store":
        print(Int(5).store().pk)
    else:
        print(load_node(int(sys.argv[2])).value)
except StoreError as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(3)
"""


@calcfunction
def add(x: Int, y: Int) -> Int:
    return x + y


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str

    def one_line_error(self) -> str:
        """The single line on stderr of a command that failed with exit status 1."""
        assert self.returncode == 1, (self.returncode, self.stdout, self.stderr)
        assert "Traceback" not in self.stderr, self.stderr
        assert self.stderr.count("\n") == 1, self.stderr
        return self.stderr.strip()


Runner = Callable[..., Completed]


def _environment(db: Path | str | None, home: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if db is not None:
        env[ENV_VAR] = str(db)
    if home is not None:
        env["HOME"] = str(home)
    return env


def _runner(prefix: list[str]) -> Runner:
    def run_command(
        *args: str, db: Path | str | None = None, home: Path | None = None, cwd: Path = ROOT
    ) -> Completed:
        completed = subprocess.run(
            [*prefix, sys.executable, *args],
            capture_output=True,
            text=True,
            env=_environment(db, home),
            cwd=cwd,
            timeout=120,
            check=False,
        )
        return Completed(completed.returncode, completed.stdout, completed.stderr)

    return run_command


@pytest.fixture
def as_user(tmp_path: Path) -> Runner:
    """Run ``python ARGS`` as a program that file modes apply to (root without its overrides)."""
    if os.geteuid() != 0:
        return _runner([])
    runner = _runner([sys.executable, "-c", DROP_THEN_EXEC])
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o500)
    try:
        result = runner("-c", f"open({str(probe / 'x')!r}, 'w')")
    finally:
        probe.chmod(0o700)
    if "cannot drop capability" in result.stderr:
        pytest.skip(f"cannot run a program without root's file-mode overrides: {result.stderr}")
    assert "PermissionError" in result.stderr, "the launcher should have made modes apply"
    return runner


@pytest.fixture
def as_root() -> Runner:
    return _runner([])


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], Path]]:
    """Make a folder or file read-only for the test, and writable again afterwards (cleanup)."""
    made: list[Path] = []

    def make(path: Path) -> Path:
        path.chmod(0o500 if path.is_dir() else 0o400)
        made.append(path)
        return path

    yield make
    for path in made:
        path.chmod(0o700 if path.is_dir() else 0o600)


def _private_folder(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path


def _database_with_nodes(path: Path) -> list[int]:
    """A real database at ``path`` holding two Int nodes (10 and 20), closed; their pks."""
    previous = os.environ[ENV_VAR]  # the test's own database, set by the autouse fixture
    os.environ[ENV_VAR] = str(path)
    try:
        pks = [Int(value).store().pk for value in (10, 20)]
    finally:
        os.environ[ENV_VAR] = previous
        close_all_stores()  # the last close folds the write-ahead log back into the file
    return [int(pk) for pk in pks if pk is not None]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _integrity(path: Path) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])


# where the database may live -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected", "launch_expected"),
    [
        (
            "postgresql://engine:secret@db.invalid/engine",
            "cannot connect to the database",  # PostgreSQL is served: the host is unknown
            "cannot connect to the database",
        ),
        ("mysql://db.example/engine", "mysql:// URLs are not supported", None),
        # a server's address written another way: never a new sqlite file named by it
        ("host=db.example dbname=engine password=secret", "libpq connection string", None),
        ("postgresql:engine", "looks like a URL with a space before it, or without", None),
        (" postgresql://engine:secret@db.example/engine", "looks like a URL with a space", None),
    ],
)
def test_a_url_is_refused_naming_it_and_creates_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    as_root: Runner,
    value: str,
    expected: str,
    launch_expected: str | None,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(StoreError) as error:
        run(add, 1, 2)
    message = str(error.value)
    if launch_expected is None:
        assert expected in message and f"${ENV_VAR}" in message
    else:
        assert launch_expected in message
    assert "secret" not in message
    if value.startswith(("postgresql://", "mysql://")):  # a URL is named (its password masked)
        assert value.split("://")[0] in message
    assert list(tmp_path.iterdir()) == []  # no folder named after the scheme

    # the commands and the daemon serve PostgreSQL too: they say why they cannot reach this one
    for command in (("-m", "miniengine", "process", "list"), ("-m", "miniengine.daemon", "start")):
        line = as_root(*command, db=value, cwd=tmp_path)
        assert expected in line.one_line_error() and "secret" not in line.stderr, command
    assert list(tmp_path.iterdir()) == []


def test_a_folder_given_as_the_database_is_refused_as_one(tmp_path: Path) -> None:
    folder = tmp_path / "engine"
    folder.mkdir(mode=0o700)
    with pytest.raises(StoreError, match="is a folder, not a database file"):
        Store(folder)
    assert list(folder.iterdir()) == []


def test_a_missing_folder_is_refused_and_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_root: Runner
) -> None:
    db = tmp_path / "tpyo" / "engine.sqlite"
    monkeypatch.setenv(ENV_VAR, str(db))
    with pytest.raises(StoreError) as error:
        run(add, 1, 2)
    assert f"the folder {db.parent} does not exist" in str(error.value)
    assert not db.parent.exists()

    line = as_root("-m", "miniengine.daemon", "start", "--db", str(db)).one_line_error()
    assert f"the folder {db.parent} does not exist" in line
    assert list(tmp_path.iterdir()) == []


# files this user cannot write -------------------------------------------------------------------


def test_a_new_database_in_a_read_only_folder_is_a_store_error(
    tmp_path: Path, as_user: Runner, read_only: Callable[[Path], Path]
) -> None:
    folder = read_only(_private_folder(tmp_path / "readonly"))
    result = as_user("-c", PROBE, "store", db=folder / "engine.sqlite")
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("ReadOnlyDatabaseError: ")
    assert f"cannot create the database {folder / 'engine.sqlite'}" in result.stdout
    assert "Permission denied" in result.stdout


def test_an_unwritable_home_is_a_store_error_naming_the_folder(
    tmp_path: Path, as_user: Runner, read_only: Callable[[Path], Path]
) -> None:
    home = read_only(_private_folder(tmp_path / "home"))
    result = as_user("-c", PROBE, "store", home=home)
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("ReadOnlyDatabaseError: ")
    assert f"cannot create the folder {home / '.miniengine'}" in result.stdout
    demo = as_user("-m", "miniengine", "demo", home=home).one_line_error()
    assert f"cannot create the folder {home / '.miniengine'}" in demo
    assert not (home / ".miniengine").exists()


def test_a_read_only_database_is_read_and_refuses_writes_unchanged(
    tmp_path: Path, as_user: Runner, as_root: Runner, read_only: Callable[[Path], Path]
) -> None:
    source = tmp_path / "engine.sqlite"
    pks = _database_with_nodes(source)
    # a backup is a plain (rollback-journal) file: the engine would switch it to WAL on opening
    backup = tmp_path / "copy.sqlite"
    as_root("-m", "miniengine", "db", "backup", str(backup), "--db", str(source))
    read_only(backup)
    before = _digest(backup)

    loaded = as_user("-c", PROBE, "load", str(pks[1]), db=backup)
    assert (loaded.returncode, loaded.stdout.strip()) == (0, "20"), loaded.stderr
    refused = as_user("-c", PROBE, "store", db=backup)
    assert refused.returncode == 3, refused.stderr
    assert refused.stdout.startswith(f"ReadOnlyDatabaseError: {backup} is read-only")
    assert _digest(backup) == before
    assert _integrity(backup) == "ok"


def test_a_wal_database_in_a_read_only_folder_is_read_by_python_and_the_cli(
    tmp_path: Path, as_user: Runner, read_only: Callable[[Path], Path]
) -> None:
    folder = _private_folder(tmp_path / "shared")
    db = folder / "engine.sqlite"
    pks = _database_with_nodes(db)
    read_only(folder)

    loaded = as_user("-c", PROBE, "load", str(pks[0]), db=db)
    assert (loaded.returncode, loaded.stdout.strip()) == (0, "10"), loaded.stderr
    listed = as_user("-m", "miniengine", "db", "info", "--json", db=db)
    assert listed.returncode == 0, listed.stderr
    assert '"nodes": 2' in listed.stdout

    line = as_user("-m", "miniengine.daemon", "start", "--db", str(db)).one_line_error()
    assert f"{db} is read-only" in line
    assert sorted(entry.name for entry in folder.iterdir()) == ["engine.sqlite"]


def test_backup_into_a_read_only_folder_is_one_line(
    tmp_path: Path, as_user: Runner, read_only: Callable[[Path], Path]
) -> None:
    db = tmp_path / "engine.sqlite"
    _database_with_nodes(db)
    target = read_only(_private_folder(tmp_path / "backups")) / "engine.sqlite"
    line = as_user("-m", "miniengine", "db", "backup", str(target), "--db", str(db))
    assert f"cannot write the backup {target}: Permission denied" in line.one_line_error()
    assert list(target.parent.iterdir()) == []


def test_daemon_start_with_an_unwritable_log_is_one_line_and_leaves_no_pid_file(
    tmp_path: Path, as_user: Runner, read_only: Callable[[Path], Path]
) -> None:
    db = tmp_path / "engine.sqlite"
    _database_with_nodes(db)
    files = DaemonFiles(db)
    files.log_file.write_text("an earlier run\n")
    read_only(files.log_file)
    line = as_user("-m", "miniengine.daemon", "start", "--db", str(db)).one_line_error()
    assert f"{files.log_file}: cannot open the daemon's log: Permission denied" in line
    assert not files.pid_file.exists()
    assert files.log_file.read_text() == "an earlier run\n"


def test_daemon_start_on_a_file_that_is_not_a_database_says_so_and_leaves_no_pid_file(
    tmp_path: Path, as_root: Runner
) -> None:
    db = tmp_path / "notes.txt"
    db.write_text("these are my notes, not a database\n" * 200)
    db.chmod(0o600)
    line = as_root("-m", "miniengine.daemon", "start", "--db", str(db)).one_line_error()
    assert f"{db} is not a sqlite database" in line
    assert db.read_text() == "these are my notes, not a database\n" * 200
    files = DaemonFiles(db)
    assert not files.pid_file.exists() and not files.log_file.exists()
    # the supervisor run directly reports the same and leaves no pid file either
    direct = as_root("-m", "miniengine.daemon", "start", "--foreground", "--db", str(db))
    assert f"{db} is not a sqlite database" in direct.one_line_error()
    assert not files.pid_file.exists()


def test_a_supervisor_that_exits_at_start_is_reported_with_what_it_said(
    tmp_path: Path, as_root: Runner
) -> None:
    db = tmp_path / "engine.sqlite"
    _database_with_nodes(db)
    line = as_root("-m", "miniengine.daemon", "start", "--workers", "0", "--db", str(db))
    assert "exited at start (code 1): " in line.one_line_error()
    assert "at least one worker" in line.stderr
    assert not DaemonFiles(db).pid_file.exists()


# a full disk ----------------------------------------------------------------------------------


def test_a_full_database_raises_database_full_error_and_keeps_what_was_stored(
    miniengine_db: Path,
) -> None:
    kept = [Int(value).store() for value in range(5)]
    assert run(add, 1, 2) == 3
    store = store_for(None)
    pages = store.write_sync(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    # max_page_count belongs to the connection: this caps the store's own writer at its size
    store.write_sync(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchone())

    with pytest.raises(DatabaseFullError) as error:
        Str("x" * 500_000).store()
    assert isinstance(error.value, StoreError) and isinstance(error.value, MiniengineError)
    assert str(miniengine_db) in str(error.value) and "full" in str(error.value)

    assert _integrity(miniengine_db) == "ok"
    assert [load_node(node.pk).value for node in kept] == [0, 1, 2, 3, 4]
    store.write_sync(lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchone())
    assert load_node(Str("y" * 500_000).store().pk).value == "y" * 500_000


def test_a_read_only_store_raises_read_only_database_error_on_write_not_corrupting(
    tmp_path: Path, as_user: Runner, read_only: Callable[[Path], Path]
) -> None:
    folder = _private_folder(tmp_path / "kept")
    db = folder / "engine.sqlite"
    pks = _database_with_nodes(db)
    read_only(db)
    result = as_user("-c", PROBE, "store", db=db)
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith(f"ReadOnlyDatabaseError: {db} is read-only for this user")
    assert "the file is not writable" in result.stdout
    assert _integrity(db) == "ok"
    assert [load_node(pk, db=db).value for pk in pks] == [10, 20]


def test_read_only_errors_are_store_errors() -> None:
    assert issubclass(ReadOnlyDatabaseError, StoreError)
    assert issubclass(DatabaseFullError, StoreError)
