"""Hosts: a worker's identity includes its host, and where a daemon keeps its files.

The host is the hostname unless ``$MINIENGINE_HOST`` names another (several hosts simulated on
one machine); it is recorded with each worker (schema version 8), listed by ``daemon status``
and shown by ``process show`` for the process a worker holds.  A daemon of a sqlite file keeps
its pid, lock and log beside the file; one of a PostgreSQL database in a folder of its own per
host and database, ``~/.miniengine/daemons/<host>/<db>-<hash>/``, whose name has no password.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from miniengine import Str, asubmit, await_node
from miniengine.daemon import Worker
from miniengine.daemon.files import DaemonFiles, daemon_folder, url_without_password
from miniengine.exceptions import StoreError
from miniengine.storage.host import HOST_ENV_VAR, current_host
from miniengine.storage.open import open_backend
from miniengine.storage.schema import SCHEMA_VERSION
from tests.workchains.daemon_chains import ROOT, DaemonGuard, GateWorkChain, python_env, wait_until

SHOW = (sys.executable, "-m", "miniengine", "process", "show")
URL = "postgresql://engine:s3cret@db.example:5432/engine?sslmode=verify-full"


def test_the_host_is_the_hostname_unless_the_environment_names_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(HOST_ENV_VAR, raising=False)
    assert current_host() == socket.gethostname()
    monkeypatch.setenv(HOST_ENV_VAR, "node-07.cluster")
    assert current_host() == "node-07.cluster"
    for bad in ("a/b", "..", ".hidden", "a:b", "x" * 254, "tab\there", "-x", "é"):
        monkeypatch.setenv(HOST_ENV_VAR, bad)
        with pytest.raises(StoreError, match=HOST_ENV_VAR):
            current_host()


def test_a_sqlite_database_keeps_its_daemon_files_beside_it(tmp_path: Path) -> None:
    files = DaemonFiles(tmp_path / "engine.sqlite")
    assert files.folder == tmp_path
    assert files.pid_file == tmp_path / "engine.sqlite.daemon.pid"
    assert files.log_file == tmp_path / "engine.sqlite.daemon.log"
    assert files.lock_file == tmp_path / "engine.sqlite.daemon.lock"


def test_a_postgresql_database_has_a_daemon_folder_per_host_and_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(HOST_ENV_VAR, "alpha")
    files = DaemonFiles(URL)
    base = tmp_path / ".miniengine" / "daemons"
    assert files.folder.parent == base / "alpha"
    assert files.folder.name.startswith("engine-") and "s3cret" not in str(files.folder)
    assert files.folder == daemon_folder(URL, "alpha", base)
    assert files.pid_file == files.folder / "daemon.pid"
    # another host, another server or another database: another folder; another password
    # of the same database (a changed secret): the same one
    assert daemon_folder(URL, "beta", base) != files.folder
    assert daemon_folder(URL.replace("db.example", "db2.example"), "alpha", base) != files.folder
    assert daemon_folder(URL.replace("/engine?", "/other?"), "alpha", base).name.startswith(
        "other-"
    )
    assert daemon_folder(URL.replace("s3cret", "n3w"), "alpha", base) == files.folder
    assert daemon_folder(URL.replace(":s3cret", ""), "alpha", base) == files.folder
    with_parameter = URL.replace(":s3cret", "") + "&password=s3cret"
    assert daemon_folder(with_parameter, "alpha", base) == files.folder
    # every spelling of one database: one folder, so its lock keeps a host to one daemon
    local = "postgresql://me@127.0.0.1:5433/engine"
    for spelling in (
        "postgresql://me@localhost:5433/engine?sslmode=prefer",
        "postgresql://you:pw@127.0.0.1/engine?port=5433&connect_timeout=3",
        "POSTGRES://me@[::1]:5433/engine",
        "postgresql://me@127.0.0.1:5433?dbname=engine",
    ):
        assert daemon_folder(spelling, "alpha", base) == daemon_folder(local, "alpha", base)
    assert daemon_folder(local.replace("5433", "5434"), "alpha", base) != daemon_folder(
        local, "alpha", base
    )
    files.ensure_folder()
    for folder in (files.folder, files.folder.parent, base):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files.write(pid=os.getpid(), state="ready")
    assert files.read() == {"pid": os.getpid(), "state": "ready"}
    assert stat.S_IMODE(files.pid_file.stat().st_mode) == 0o600


def test_a_password_is_never_shown() -> None:
    assert url_without_password(URL) == (
        "postgresql://engine:***@db.example:5432/engine?sslmode=verify-full"
    )
    shown = url_without_password("postgresql://engine@db/engine?password=s3cret&sslmode=require")
    assert "s3cret" not in shown and "sslmode=require" in shown
    assert url_without_password("postgresql://db/engine") == "postgresql://db/engine"
    # a password with an unescaped "/", "?", "#" (the URL parser ends the host part there)
    for raw in ("pa/ss", "pa?ss#x", "p@ss"):
        shown = url_without_password(f"postgresql://alice:{raw}@db.example:5432/engine")
        assert shown == "postgresql://alice:***@db.example:5432/engine", raw
    # no host (the socket's, or one given as ?host=): the "//" of the empty authority stays
    assert url_without_password("postgresql:///engine?host=/run/pg") == (
        "postgresql:///engine?host=/run/pg"
    )


def test_a_daemon_start_on_an_unreachable_server_says_so_without_the_password(
    tmp_path: Path,
) -> None:
    env = {**python_env(), "HOME": str(tmp_path), HOST_ENV_VAR: "alpha"}
    url = "postgresql://engine:s3cret@db.invalid/engine"
    completed = subprocess.run(
        [sys.executable, "-m", "miniengine.daemon", "start", "--db", url],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1
    assert "cannot connect" in completed.stderr and "s3cret" not in completed.stderr
    assert completed.stderr.startswith("error: ")  # as every other command's
    assert not (tmp_path / ".miniengine").exists()  # no daemon folder for a database not there


def test_the_schema_records_the_host_of_each_worker(backend_db: Path | str) -> None:
    store = open_backend(backend_db)
    try:
        store.broker.register_worker("worker:alpha:1:x", 1, 4, 100.0, "alpha")
        store.broker.register_worker("worker:beta:2:y", 2, 4, 101.0, "beta")
        workers = store.broker.workers()
    finally:
        store.close()
    assert SCHEMA_VERSION >= 8  # the version that added workers.host
    assert [(worker.id, worker.host) for worker in workers] == [
        ("worker:alpha:1:x", "alpha"),
        ("worker:beta:2:y", "beta"),
    ]


async def test_a_worker_names_its_host_and_process_show_says_where_a_process_runs(
    miniengine_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOST_ENV_VAR, "alpha")
    async with Worker(db=miniengine_db, lease_timeout=2.0) as worker:
        assert worker.host == "alpha" and worker.id.startswith("worker:alpha:")
        node = await asubmit(GateWorkChain, folder=Str(str(tmp_path)))
        started = tmp_path / f"started.{os.getpid()}"
        with anyio.fail_after(30):
            while not started.exists():
                await anyio.sleep(0.01)
        env = {**python_env(), HOST_ENV_VAR: "elsewhere"}
        show = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [*SHOW, str(node.pk), "--db", str(miniengine_db)],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
        )
        shown = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [*SHOW, str(node.pk), "--json", "--db", str(miniengine_db)],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
        )
        (tmp_path / f"release.{os.getpid()}").touch()
        await await_node(node, timeout=30)
    assert show.returncode == 0, show.stderr
    assert re.search(rf"^owner\s+{re.escape(worker.id)}$", show.stdout, re.M), show.stdout
    assert re.search(r"^host\s+alpha$", show.stdout, re.M), show.stdout
    owner = json.loads(shown.stdout)["owner"]
    assert owner["id"] == worker.id and owner["host"] == "alpha"
    with sqlite3.connect(miniengine_db) as connection:
        assert connection.execute("SELECT host FROM workers").fetchall() in ([], [("alpha",)])
    connection.close()


def test_status_on_a_host_without_a_daemon_lists_the_other_hosts_workers(
    postgres_url: str, tmp_path: Path
) -> None:
    store = open_backend(postgres_url)
    try:
        store.broker.register_worker("worker:alpha:1:0.1", 1, 4, 100.0, "alpha")
    finally:
        store.close()
    env = {**python_env(), "HOME": str(tmp_path), HOST_ENV_VAR: "beta"}
    env["MINIENGINE_DB"] = postgres_url
    completed = subprocess.run(
        [sys.executable, "-m", "miniengine.daemon", "status"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1, completed.stderr
    folder = daemon_folder(postgres_url, "beta", tmp_path / ".miniengine" / "daemons")
    assert completed.stdout.startswith("no daemon runs on this host for postgresql://")
    assert f"host beta: daemon files in {folder}\n" in completed.stdout
    assert re.search(
        r"^worker:alpha:1:0\.1 +alpha +1 .*\(silent: its host may be down\)$",
        completed.stdout,
        re.M,
    ), completed.stdout
    password = postgres_url.split(":")[2].split("@")[0]
    assert password not in completed.stdout + completed.stderr


def test_a_daemon_releases_the_workers_of_its_host_that_died_without_a_supervisor(
    backend_db: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host's daemon killed whole (or a reboot) leaves its workers' rows behind; the host's
    next daemon releases them.  Rows of other hosts, and rows whose process still lives here,
    are left alone (another machine may share the host name: its heartbeat is not checked
    against its pid here, only a stale one is)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(HOST_ENV_VAR, "alpha")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(gone.stdout)
    store = open_backend(backend_db)
    try:
        store.broker.register_worker("worker:alpha:dead", dead_pid, 4, 100.0, "alpha")
        store.broker.register_worker("worker:alpha:alive", os.getpid(), 4, 100.0, "alpha")
        store.broker.register_worker("worker:beta:dead", dead_pid, 4, 100.0, "beta")
    finally:
        store.close()

    def ids() -> set[str]:
        reader = open_backend(backend_db)
        try:
            return {row.id for row in reader.broker.workers()}
        finally:
            reader.close()

    with DaemonGuard(backend_db) as daemon:
        daemon.start("--workers", "1")
        wait_until(lambda: "worker:alpha:dead" not in ids(), 60, "the dead worker's release")
        assert {"worker:alpha:alive", "worker:beta:dead"} <= ids()
        daemon.cli("stop")


async def test_the_owner_of_a_live_process_and_its_host_on_both_backends(
    backend_db: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOST_ENV_VAR, "gamma")
    async with Worker(db=backend_db, lease_timeout=2.0) as worker:
        node = await asubmit(GateWorkChain, folder=Str(str(tmp_path)))
        started = tmp_path / f"started.{os.getpid()}"
        with anyio.fail_after(30):
            while not started.exists():
                await anyio.sleep(0.01)
        reader = open_backend(backend_db)
        try:
            owner = reader.queries.process_owner(node.pk)
        finally:
            reader.close()
        (tmp_path / f"release.{os.getpid()}").touch()
        await await_node(node, timeout=30)
    assert owner is not None and (owner.owner, owner.host) == (worker.id, "gamma")
    assert owner.lease_expires is not None
    reader = open_backend(backend_db)
    try:
        assert reader.queries.process_owner(node.pk) is None  # finished: nobody holds it
    finally:
        reader.close()
