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
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from miniengine import Int, ProcessState, asubmit, await_node, load_node, submit
from miniengine.control import play
from miniengine.daemon import Worker
from miniengine.storage import broker_rows
from tests.workchains.daemon_chains import (
    DaemonGuard,
    LeafWorkChain,
    alive,
    wait_until,
)
from tests.workchains.resilience_chains import (
    ExitInAsyncStepWorkChain,
    ExitInStepWorkChain,
    chain_module_source,
)

LEASE = 1.0


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(sql, args).fetchall()


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


def process_row(db: Path, pk: int) -> tuple[Any, ...]:
    """``(state, exception, owner, mtime)`` of process ``pk``."""
    return query(db, "SELECT process_state, exception, owner, mtime FROM nodes WHERE pk = ?", pk)[0]


def paused_row(db: Path, pk: int) -> tuple[Any, ...] | None:
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
            "restart the daemon",
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
    log = miniengine_db.parent / f"{miniengine_db.name}.daemon.log"
    with DaemonGuard(miniengine_db) as daemon:
        supervisor = daemon.start("--workers", "1")
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
    assert f"gave up after {broker_rows.MAX_ATTEMPTS} attempts" in exception
    assert "the worker running it died each time" in exception
    # not held back: the healthy process finished while the poisoned one was still retried
    assert process_row(miniengine_db, healthy.pk)[3] < poisoned_mtime
    assert load_node(healthy.pk, db=miniengine_db).outputs.x.value == 2
    assert log.read_text().count("exited with 7") == broker_rows.MAX_ATTEMPTS
    assert query(miniengine_db, "SELECT count(*) FROM tasks WHERE status != 'done'") == [(0,)]
