"""Security of a database in a shared machine: who may change it, what the engine opens, and
what it never does (deserialise code from the database, listen on the network).

Whoever can write the database can make a worker import any module on its path, so a database or
folder that another user owns or that group/others may write is refused (as ssh refuses such a key
file); the daemon's own files are never opened through a symbolic link; everything the engine
creates is private (files 0600 in a 0700 folder).
"""

from __future__ import annotations

import ast
import grp
import os
import pwd
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import miniengine
from miniengine import Int, calcfunction, run
from miniengine.daemon.files import DaemonFiles
from miniengine.exceptions import StoreError, UnsafeDatabaseError
from miniengine.storage.paths import ENV_VAR
from miniengine.storage.store import Store

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(miniengine.__file__).resolve().parent

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")


@calcfunction
def add(x: Int, y: Int) -> Int:
    return x + y


def _nobody() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


def _shared_group(path: Path) -> None:
    """Give ``path`` to a group that other users are in (a private group's write is the user's)."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another group needs root")
    os.chown(path, -1, 65534)


def _environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _daemon(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "miniengine.daemon", *args],
        capture_output=True,
        text=True,
        env=_environment(home),
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def _private_database(folder: Path) -> Path:
    folder.mkdir(mode=0o700)
    db = folder / "engine.sqlite"
    Store(db).close()
    return db


# databases another user can change -------------------------------------------------------------


@needs_root
def test_a_database_owned_by_another_user_is_refused_naming_owner_and_fix(tmp_path: Path) -> None:
    db = _private_database(tmp_path / "given")
    os.chown(db, _nobody(), -1)
    with pytest.raises(UnsafeDatabaseError) as error:
        Store(db)
    message = str(error.value)
    assert isinstance(error.value, StoreError)
    assert str(db) in message and f"uid {_nobody()}" in message
    assert f"chown {pwd.getpwuid(os.geteuid()).pw_name} {db}" in message


@needs_root
def test_a_folder_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o755)
    os.chown(folder, _nobody(), -1)
    with pytest.raises(UnsafeDatabaseError) as error:
        Store(folder / "engine.sqlite")
    assert f"{folder}: refusing to use the folder of the database" in str(error.value)
    assert list(folder.iterdir()) == []  # nothing was created in it


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602], ids=lambda mode: f"{mode:04o}")
def test_a_database_others_can_write_is_refused_naming_mode_and_chmod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    db = _private_database(tmp_path / "mine")
    db.chmod(mode)
    if mode & 0o020:
        _shared_group(db)
    before = db.read_bytes()
    with pytest.raises(UnsafeDatabaseError) as error:
        Store(db)
    message = str(error.value)
    assert f"{db}: refusing to use the database" in message
    assert f"mode {mode:04o}" in message and f"chmod go-w {db}" in message
    # a launch refuses it before running anything, and the file is left as it was
    monkeypatch.setenv(ENV_VAR, str(db))
    with pytest.raises(UnsafeDatabaseError):
        run(add, 1, 2)
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    ("mode", "fix"),
    [(0o777, "chmod go-w"), (0o770, "chmod go-w"), (0o1777, "a folder of your own")],
    ids=["0777", "0770", "sticky-1777"],
)
def test_a_folder_others_can_write_is_refused(tmp_path: Path, mode: int, fix: str) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    if mode & 0o020:
        _shared_group(folder)
    with pytest.raises(UnsafeDatabaseError) as error:
        Store(folder / "engine.sqlite")
    assert f"mode {mode & 0o7777:04o}" in str(error.value) and fix in str(error.value)
    assert list(folder.iterdir()) == []


def test_group_write_of_the_users_private_group_is_accepted(tmp_path: Path) -> None:
    user = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(user.pw_gid)
    if group.gr_name != user.pw_name or set(group.gr_mem) - {user.pw_name}:
        pytest.skip(f"the primary group {group.gr_name!r} is not a private group of the user")
    folder = tmp_path / "umask-002"
    folder.mkdir()
    folder.chmod(0o770)  # what mkdir makes under umask 002, the default of many distributions
    db = folder / "engine.sqlite"
    Store(db).close()
    db.chmod(0o660)
    Store(db).close()


def test_daemon_start_refuses_an_unsafe_database_in_one_line(tmp_path: Path) -> None:
    db = _private_database(tmp_path / "mine")
    db.chmod(0o666)
    completed = subprocess.run(
        [sys.executable, "-m", "miniengine.daemon", "start", "--db", str(db)],
        capture_output=True,
        text=True,
        env=_environment(tmp_path),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert completed.stderr.count("\n") == 1 and "mode 0666" in completed.stderr
    assert not DaemonFiles(db).pid_file.exists()


# the daemon's own files are never opened through a link ----------------------------------------


def test_a_symlink_planted_as_the_daemon_log_is_refused_not_followed(tmp_path: Path) -> None:
    db = _private_database(tmp_path / "mine")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    files = DaemonFiles(db)
    files.log_file.symlink_to(victim)
    completed = subprocess.run(
        [sys.executable, "-m", "miniengine.daemon", "start", "--db", str(db)],
        capture_output=True,
        text=True,
        env=_environment(tmp_path),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert "is a symbolic link" in completed.stderr and str(files.log_file) in completed.stderr
    assert victim.read_text() == "precious\n"
    assert not files.pid_file.exists()


def test_lock_and_pid_files_are_not_opened_through_planted_symlinks(tmp_path: Path) -> None:
    db = _private_database(tmp_path / "mine")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    files = DaemonFiles(db)
    files.lock_file.symlink_to(victim)
    with pytest.raises(UnsafeDatabaseError):
        files.lock()
    # the pid file is written through a temporary file: a link planted there is replaced
    planted = files.pid_file.with_name(files.pid_file.name + f".{os.getpid()}.tmp")
    planted.symlink_to(victim)
    files.write(pid=os.getpid(), state="testing")
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(files.pid_file.lstat().st_mode) == 0o600
    assert not files.pid_file.is_symlink() and files.read() is not None
    files.remove()


# a real daemon: private files, no network ------------------------------------------------------


@pytest.fixture
def running_daemon(tmp_path: Path) -> Iterator[tuple[Path, dict[str, object]]]:
    """A daemon with two workers on the default database of a fresh $HOME; (database, pid file)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    started = _daemon("start", "--workers", "2", home=home)
    assert started.returncode == 0, started.stderr
    db = home / ".miniengine" / "engine.sqlite"
    try:
        state = DaemonFiles(db).read()
        assert state is not None
        yield db, state
    finally:
        stopped = _daemon("stop", home=home)
        assert stopped.returncode == 0, stopped.stderr


def test_a_daemon_keeps_every_file_0600_in_a_0700_folder(
    running_daemon: tuple[Path, dict[str, object]],
) -> None:
    db, _ = running_daemon
    files = DaemonFiles(db)
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    paths = [
        db,
        Path(f"{db}-wal"),
        Path(f"{db}-shm"),
        files.pid_file,
        files.lock_file,
        files.log_file,
    ]
    modes = {path.name: stat.S_IMODE(path.lstat().st_mode) for path in paths}
    assert modes == {path.name: 0o600 for path in paths}
    assert sorted(entry.name for entry in db.parent.iterdir()) == sorted(modes)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _inet_inodes(pid: int) -> set[str]:
    """The inodes of every TCP, UDP and raw socket in the process's network namespace."""
    inodes = set()
    for table in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6", "udplite", "udplite6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        inodes.update(line.split()[9] for line in lines if len(line.split()) > 9)
    return inodes


def _listening_unix_inodes(pid: int) -> set[str]:
    """Unix sockets that accept connections (flag __SO_ACCEPTCON): a local server."""
    lines = Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]
    return {fields[6] for fields in map(str.split, lines) if int(fields[3], 16) & 0x10000}


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
def test_the_daemon_opens_no_network_port(
    running_daemon: tuple[Path, dict[str, object]],
) -> None:
    _, state = running_daemon
    workers = state.get("workers")
    assert isinstance(workers, list) and len(workers) == 2
    pids = [int(str(state["pid"])), *(int(pid) for pid in workers)]
    for pid in pids:
        sockets = _socket_inodes(pid)
        assert not sockets & _inet_inodes(pid), f"process {pid} has a network socket"
        assert not sockets & _listening_unix_inodes(pid), f"process {pid} listens on a socket"


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
def test_the_socket_check_sees_a_listening_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert _socket_inodes(os.getpid()) & _inet_inodes(os.getpid())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as local:
        local.bind("\0miniengine-test-" + str(os.getpid()))  # abstract: no file to clean up
        local.listen()
        assert _socket_inodes(os.getpid()) & _listening_unix_inodes(os.getpid())


# nothing read from the database is turned into code ---------------------------------------------

#: Modules that rebuild arbitrary objects (or run code) from bytes.
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}
UNSAFE_MODULES |= {"yaml", "ruamel", "jsonpickle"}
#: Built-ins that run code given as data.
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}


def _unsafe_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [
            f"{path.name}:{node.lineno} imports {name}"
            for name in names
            if name.split(".")[0] in UNSAFE_MODULES
        ]
        if isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Name) and function.id in UNSAFE_BUILTINS:
                found.append(f"{path.name}:{node.lineno} calls {function.id}()")
            if isinstance(function, ast.Attribute) and function.attr in {"eval", "exec"}:
                found.append(f"{path.name}:{node.lineno} calls .{function.attr}()")
    return found


def test_the_package_never_unpickles_evals_or_yaml_loads() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 30  # the whole package, not an empty folder
    found = [use for path in sources for use in _unsafe_uses(path)]
    assert found == []


def test_the_source_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle\nfrom yaml import load\nimport marshal as m\n"
        "value = eval('1')\nexec('x = 1')\n"
    )
    assert len(_unsafe_uses(sample)) == 5
