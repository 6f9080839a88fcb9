"""The daemon outlives bad user code, bad modules and database trouble.

- a process whose class no longer imports is paused (not EXCEPTED) with a message that names the
  module, the worker's folder and ``sys.path``, and plays on once the code imports again;
- ``sys.exit()`` in a module at import or in a step is the process's failure, not the worker's end;
- a module that ends the interpreter at import (``os._exit``) is given up after a bounded number of
  attempts, and a healthy process claimed in the same batch finishes;
- the supervisor outlives a database that stays locked while it cleans up after a dead worker.

Workers are real (in this process for the first ones, child processes of a real supervisor for
the others); modules live in the test's folder, so a test can break them after submitting.
"""

from __future__ import annotations

import importlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from miniengine import Int, ProcessState, Str, asubmit, await_node, load_node, submit
from miniengine.control import play
from miniengine.daemon import Worker
from miniengine.daemon.files import DaemonFiles
from miniengine.storage.host import current_host
from miniengine.storage.interfaces import broker
from tests.services import sql
from tests.workchains.daemon_chains import (
    ROOT,
    DaemonGuard,
    GateWorkChain,
    LeafWorkChain,
    LineReader,
    alive,
    children_of,
    wait_until,
)
from tests.workchains.resilience_chains import (
    ExitInAsyncStepWorkChain,
    ExitInStepWorkChain,
    chain_module_source,
)

pytestmark = pytest.mark.backends

LEASE = 1.0


def query(db: Path | str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    return sql.query(db, statement, *args)


async def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` on the loop until it is truthy (its value), or fail at ``timeout``."""
    with anyio.move_on_after(timeout):
        while True:
            value = condition()
            if value:
                return value
            await anyio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class ChainModule:
    """A module ``name`` in ``folder`` (on ``sys.path``) defining ``Chain``; :meth:`break_it`
    makes its next import run ``on_import``; :meth:`forget` drops it from this interpreter."""

    def __init__(self, folder: Path, name: str, on_import: str) -> None:
        self.name = name
        self.marker = folder / f"{name}.broken"
        (folder / f"{name}.py").write_text(chain_module_source(self.marker, on_import))
        importlib.invalidate_caches()

    def chain(self) -> Any:
        return importlib.import_module(self.name).Chain

    def forget(self) -> None:
        sys.modules.pop(self.name, None)
        importlib.invalidate_caches()

    def break_it(self) -> None:
        self.marker.touch()
        self.forget()

    def fix(self) -> None:
        self.marker.unlink()
        self.forget()


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` (and ``$PYTHONPATH``, for worker processes) for test modules."""
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    )
    yield folder
    for path in folder.glob("*.py"):
        sys.modules.pop(path.stem, None)


def process_row(db: Path | str, pk: int) -> tuple[Any, ...]:
    """``(state, exception, owner, mtime)`` of process ``pk``."""
    return query(db, "SELECT process_state, exception, owner, mtime FROM nodes WHERE pk = ?", pk)[0]


def started_pids(folder: Path) -> set[int]:
    return {int(path.name.rsplit(".", 1)[1]) for path in folder.glob("started.*")}


def submit_gate(folder: Path) -> int:
    """Submit a GateWorkChain (to the test's database); its pk."""
    node = submit(GateWorkChain, folder=Str(str(folder)))
    assert node.pk is not None
    return node.pk


def paused_row(db: Path | str, pk: int) -> tuple[Any, ...] | None:
    rows = query(
        db,
        "SELECT process_state, paused, process_status, owner FROM nodes WHERE pk = ? "
        "AND paused = 1",
        pk,
    )
    return rows[0] if rows else None


# a class that does not import -------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_import", "error"),
    [
        ("raise ImportError('the code changed under the daemon')", "ImportError"),
        ("sys.exit('this module refuses to be imported')", "SystemExit"),
    ],
    ids=["import-error", "sys-exit"],
)
async def test_a_process_whose_class_does_not_import_is_paused_and_plays_once_it_imports(
    miniengine_db: Path, modules: Path, on_import: str, error: str
) -> None:
    module = ChainModule(modules, f"vanishing_{error.lower()}", on_import)
    node = await asubmit(module.chain(), x=Int(5))
    healthy = await asubmit(LeafWorkChain, x=Int(6))
    module.break_it()
    async with Worker(db=miniengine_db, lease_timeout=LEASE):
        row = await until(lambda: paused_row(miniengine_db, node.pk), 30, "the process paused")
        await await_node(healthy, timeout=30)  # the worker carries on
        state, _, status, owner = row
        assert state in ("created", "running") and owner is None
        assert not node.is_terminated
        for expected in (
            f"module {module.name}",
            error,
            os.getcwd(),
            "sys.path",
            str(modules),
            f"host {current_host()}, pid {os.getpid()}",  # which of several hosts to fix
            "restart that host's daemon where that module imports",
            f"`miniengine process play {node.pk}`",
        ):
            assert expected.lower() in status.lower(), (expected, status)
        assert any(status == entry.message for entry in node.logs)
        # it keeps its checkpoint, holds no slot and has no live task
        assert query(miniengine_db, "SELECT count(*) FROM checkpoints WHERE node_pk = ?", node.pk)
        assert query(
            miniengine_db,
            "SELECT count(*) FROM tasks WHERE process_pk = ? AND status != 'done'",
            node.pk,
        ) == [(0,)]

        module.fix()  # the code imports again (a restarted daemon, here the same worker)
        await anyio.to_thread.run_sync(lambda: play(node.pk, db=miniengine_db))
        await await_node(node, timeout=30)
    assert node.is_finished_ok, node.exception
    assert node.outputs.x.value == 5
    assert healthy.is_finished_ok


# sys.exit in a step ---------------------------------------------------------------------


@pytest.mark.parametrize("chain", [ExitInStepWorkChain, ExitInAsyncStepWorkChain])
async def test_sys_exit_in_a_step_excepts_the_process_and_the_worker_carries_on(
    miniengine_db: Path, chain: Any
) -> None:
    async with Worker(db=miniengine_db, lease_timeout=LEASE) as worker:
        node = await asubmit(chain)
        await await_node(node, timeout=30)
        later = await asubmit(LeafWorkChain, x=Int(2))
        await await_node(later, timeout=30)
        assert not worker.stopping
    assert node.process_state is ProcessState.EXCEPTED
    assert "SystemExit" in (node.exception or "")
    assert later.is_finished_ok


# a module that ends the interpreter at import -----------------------------------------------

#: Fewer than the default, which is high so that kills from outside are not taken for a poisoned
#: task; the mechanism is the same at any count.
GIVE_UP_AFTER = 4


def test_the_default_cap_is_far_above_the_deaths_a_busy_daemon_sees() -> None:
    assert broker.MAX_ATTEMPTS >= 20
    assert broker.SUSPECT_AFTER < GIVE_UP_AFTER < broker.MAX_ATTEMPTS


@pytest.mark.long_on(
    "postgresql", reason="the supervisor's give-up rule, the same on both backends (20 s there)"
)
def test_a_module_that_kills_its_worker_at_import_is_given_up_and_a_healthy_process_finishes(
    miniengine_db: Path, modules: Path
) -> None:
    """Both are claimed in one batch by the only worker, which dies at each import of the
    poisoned module: the supervisor restarts it, the tasks that its workers died holding are run
    alone, the healthy process finishes, and the poisoned one is given up, not retried forever."""
    module = ChainModule(modules, "deadly_chain", "os._exit(7)")
    poisoned = submit(module.chain(), x=Int(1))
    healthy = submit(LeafWorkChain, x=Int(2))
    module.break_it()
    log = DaemonFiles(miniengine_db).log_file
    with DaemonGuard(miniengine_db) as daemon:
        supervisor = daemon.start("--workers", "1", "--max-attempts", str(GIVE_UP_AFTER))
        wait_until(
            lambda: process_row(miniengine_db, poisoned.pk)[0] == "excepted", 120, "giving up"
        )
        wait_until(
            lambda: process_row(miniengine_db, healthy.pk)[0] == "finished", 60, "the healthy one"
        )
        assert alive(supervisor)
        assert daemon.state()["state"] == "ready"  # type: ignore[index]
        assert daemon.cli("status").returncode == 0
        later = submit(LeafWorkChain, x=Int(3))
        wait_until(lambda: process_row(miniengine_db, later.pk)[0] == "finished", 60, "later")
    _, exception, _, poisoned_mtime = process_row(miniengine_db, poisoned.pk)
    assert f"gave up after {GIVE_UP_AFTER} attempts" in exception
    assert "the worker running it died each time" in exception
    # not held back: the healthy process finished while the poisoned one was still retried
    assert process_row(miniengine_db, healthy.pk)[3] < poisoned_mtime
    assert load_node(healthy.pk, db=miniengine_db).outputs.x.value == 2
    assert log.read_text().count("exited with 7") == GIVE_UP_AFTER
    assert query(miniengine_db, "SELECT count(*) FROM tasks WHERE status != 'done'") == [(0,)]


# the supervisor and a database it cannot write ----------------------------------------------

HOLD_LOCK = ROOT / "tests" / "scripts" / "hold_write_lock.py"

#: How long the other program keeps the write lock once the supervisor met it: several of the
#: supervisor's retries, and far less than a lock that outlasts a write's own patience.
LOCK_HELD_FOR = 5.0


@pytest.mark.sqlite_only(reason="another program holds the sqlite file's write lock")
def test_the_supervisor_outlives_a_locked_database_while_it_reaps_a_dead_worker(
    miniengine_db: Path, tmp_path: Path
) -> None:
    """Another program holds the write lock while a worker is SIGKILLed: the supervisor stays
    up, says so once (no flood), starts a new worker, and releases the dead worker's process
    once the lock is gone (with a lease of 60 s, only that release lets it continue in time)."""
    db = miniengine_db
    log = db.parent / f"{db.name}.daemon.log"
    with DaemonGuard(db) as daemon:
        supervisor = daemon.start("--workers", "1", "--lease-timeout", "60")
        (first,) = daemon.worker_pids()
        pk = submit_gate(tmp_path)
        wait_until(lambda: started_pids(tmp_path) == {first}, 30, "the gate step to start")
        holder = subprocess.Popen(
            [sys.executable, str(HOLD_LOCK), str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            reader = LineReader(holder.stdout)
            reader.wait_for("LOCKED", 30)
            os.kill(first, signal.SIGKILL)
            wait_until(
                lambda: "cannot release" in log.read_text() or not alive(supervisor),
                25,
                "the supervisor to meet the lock",
            )
            assert alive(supervisor), log.read_text()
            wait_until(
                lambda: [pid for pid, _ in children_of(supervisor) if pid != first],
                30,
                "a new worker process",
            )
            time.sleep(LOCK_HELD_FOR)  # the fault lasts: the supervisor retries meanwhile
            assert alive(supervisor), log.read_text()
            assert holder.stdin is not None
            holder.stdin.write("\n")
            holder.stdin.flush()
            reader.wait_for("RELEASED", 30)
        finally:
            holder.kill()
            holder.wait()
        (second,) = wait_until(lambda: started_pids(tmp_path) - {first}, 60, "the takeover")
        (tmp_path / f"release.{second}").touch()
        state = wait_until(
            lambda: (
                (row := query(db, "SELECT process_state FROM nodes WHERE pk = ?", pk)[0][0])
                in ("finished", "excepted", "killed")
                and row
            ),
            30,
            "the process to end",
        )
        assert state == "finished"
        assert alive(supervisor)
        assert daemon.state()["state"] == "ready"  # type: ignore[index]
        status = daemon.cli("status")
        assert status.returncode == 0 and str(supervisor) in status.stdout, status.stdout
        text = log.read_text()
    assert text.count("cannot release") == 1, text
    assert "released the 1 tasks and 1 processes of dead worker" in text, text
    assert len(text.splitlines()) < 100, text


# the WAL stays bounded ----------------------------------------------------------------------


def _insert_blob(connection: sqlite3.Connection, size: int) -> None:
    connection.execute(
        "INSERT INTO logs (node_pk, time, levelname, message) VALUES (0, 0, 'REPORT', ?)",
        ("x" * size,),
    )


@pytest.mark.sqlite_only(reason="sqlite's write-ahead log")
def test_the_wal_stays_bounded_under_load_with_readers_always_present_and_empties_when_quiet(
    miniengine_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two reader threads keep a read transaction open most of the time (as a daemon's workers
    and clients do), so a WAL checkpointed only PASSIVE-ly never starts over and grows with
    every commit.  With the thresholds scaled down, the WAL must stay near them, and a store
    that goes quiet empties it."""
    from miniengine.storage import store as store_module
    from miniengine.storage.store import Store

    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 50)
    monkeypatch.setattr(store_module, "WAL_RESTART_ABOVE", 1 << 20, raising=False)
    monkeypatch.setattr(store_module, "WAL_SIZE_LIMIT", 2 << 20, raising=False)
    monkeypatch.setattr(store_module, "CHECKPOINT_SECONDS", 3600.0, raising=False)
    store = Store(miniengine_db)
    wal = miniengine_db.with_name(miniengine_db.name + "-wal")
    stop = False

    def read_forever() -> None:
        connection = sqlite3.connect(miniengine_db, isolation_level=None)
        try:
            while not stop:
                connection.execute("BEGIN")
                connection.execute("SELECT count(*) FROM logs").fetchone()
                time.sleep(0.002)  # a reader at work, holding its snapshot
                connection.execute("COMMIT")
        finally:
            connection.close()

    import threading

    readers = [threading.Thread(target=read_forever) for _ in range(2)]
    for reader in readers:
        reader.start()
    peak = 0
    try:
        for _ in range(6000):  # about 50 MiB of log rows
            store.write_sync(_insert_blob, 8000)
            peak = max(peak, wal.stat().st_size)
            time.sleep(0.0002)  # the work between two commits (a step, a query)
    finally:
        stop = True
        for reader in readers:
            reader.join()
    try:
        assert peak < 8 << 20, f"the WAL reached {peak / 2**20:.1f} MiB"
        # quiet now: the next commit after the interval empties the file
        monkeypatch.setattr(store_module, "CHECKPOINT_SECONDS", 0.0, raising=False)

        def emptied() -> bool:
            if wal.stat().st_size == 0:
                return True
            store.write_sync(_insert_blob, 10)  # a commit, after which a quiet store checkpoints
            return False

        wait_until(emptied, 30, "the WAL of a quiet store to be emptied", interval=0.05)
    finally:
        store.close()
