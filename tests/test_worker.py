"""The in-process worker and the submit API (issue 5): ``async with Worker(db=...)``, ``submit``,
``asubmit`` and ``await_node``, eviction of waiting processes, duplicate tasks, corrupt checkpoints
and a database locked by another program.

Every test runs a real :class:`miniengine.daemon.Worker` on the test's loop against the test's own
database; the WorkChains live in :mod:`tests.workchains.daemon_chains` because a worker imports
them by module path.  Nothing waits on a sleep: tests wait for a file a step writes, for
``await_node``, or poll the database with a deadline.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from miniengine import (
    EventLoopError,
    Int,
    MiniengineError,
    ProcessState,
    Str,
    SubmitError,
    WorkChain,
    asubmit,
    await_node,
    find_processes,
    run,
    submit,
)
from miniengine.core import codec
from miniengine.daemon import Worker
from miniengine.storage.store import Store
from tests.workchains.daemon_chains import (
    ROOT,
    AddWorkChain,
    FanOutWorkChain,
    GateParentWorkChain,
    GateWorkChain,
    LeafWorkChain,
    LineReader,
    NestedWorkChain,
    ParentOfRaisingWorkChain,
    RunInStepWorkChain,
    SubmitInAsyncStepWorkChain,
    SubmitInStepWorkChain,
    SubmitThenRaiseWorkChain,
    add,
    python_env,
)

LEASE = 1.0


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(sql, args).fetchall()


def count(db: Path, sql: str, *args: Any) -> int:
    return int(query(db, sql, *args)[0][0])


def create_schema(db: Path) -> None:
    """Open the database once, so that "nothing stored" is checked against real tables."""
    Store(db).close()


async def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` on the loop until it is truthy (its value), or fail at ``timeout``."""
    with anyio.move_on_after(timeout):
        while True:
            value = condition()
            if value:
                return value
            await anyio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def steps(folder: Path) -> list[str]:
    path = folder / "steps"
    return path.read_text().splitlines() if path.exists() else []


# submit, asubmit, await_node ----------------------------------------------------------------


async def test_asubmit_returns_the_created_node_at_once_and_await_node_waits_for_the_end(
    backend_db: Path | str,
) -> None:
    async with Worker(db=backend_db, lease_timeout=LEASE):
        node = await asubmit(NestedWorkChain, inp=Int(3))
        assert node.is_stored
        # on PostgreSQL the submit commits off the loop: the worker may have begun it already
        assert not node.is_terminated
        finished = await await_node(node, timeout=30)
    assert finished is node
    assert node.is_finished_ok, node.exception
    assert node.outputs.output.value == 3
    nested = find_processes(process_label="NestedWorkChain")
    assert len(nested) == 4
    assert all(n.is_finished_ok for n in nested)


async def test_what_a_worker_block_submits_goes_to_the_worker_database(
    backend_db: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Worker(db=...)`` is the default database of its block: ``asubmit`` there goes where
    the worker runs it, even with ``$MINIENGINE_DB`` naming another database."""
    other = tmp_path / "other.sqlite"
    monkeypatch.setenv("MINIENGINE_DB", str(other))
    async with Worker(db=backend_db, lease_timeout=LEASE):
        node = await asubmit(AddWorkChain, x=Int(1), y=Int(2))
        await await_node(node, timeout=30)
        assert node.is_finished_ok and node.outputs.result.value == 3
    assert not other.exists()  # nothing was written to the other database
    later = await asubmit(AddWorkChain, x=Int(1), y=Int(2))  # after the block: the variable's
    assert other.exists() and later.pk is not None


async def test_await_node_raises_timeout_error_awaited_and_in_a_plain_thread(
    backend_db: Path | str, tmp_path: Path
) -> None:
    async with Worker(db=backend_db, lease_timeout=LEASE):
        node = await asubmit(GateWorkChain, folder=Str(str(tmp_path)))
        await until(lambda: (tmp_path / f"started.{os.getpid()}").exists(), 30, "the gate")
        with pytest.raises(TimeoutError):
            await await_node(node, timeout=0.2)
        with pytest.raises(TimeoutError, match=str(node.pk)):
            await anyio.to_thread.run_sync(lambda: await_node(node, timeout=0.2))
        assert not node.is_terminated
        (tmp_path / f"release.{os.getpid()}").touch()
        # the sync twin, in a thread without a loop, returns the node once it terminated
        done = await anyio.to_thread.run_sync(lambda: await_node(node, timeout=30))
    assert done is node and node.is_finished_ok
    assert node.outputs.pid.value == os.getpid()


async def test_a_builder_can_be_submitted(backend_db: Path | str) -> None:
    builder = LeafWorkChain.get_builder()
    builder.x = Int(11)
    async with Worker(db=backend_db, lease_timeout=LEASE):
        node = await asubmit(builder)
        await await_node(node, timeout=30)
    assert node.is_finished_ok and node.outputs.x.value == 11


def test_submit_from_a_thread_with_a_running_loop_names_asubmit() -> None:
    async def submit_on_the_loop() -> None:
        submit(LeafWorkChain, x=Int(1))

    with pytest.raises(EventLoopError, match="asubmit"):
        anyio.run(submit_on_the_loop)
    assert find_processes() == []


async def test_an_idle_worker_picks_up_a_new_task(backend_db: Path | str) -> None:
    """Informational timing only: the test asserts the pick-up, not how fast it was."""
    async with Worker(db=backend_db, lease_timeout=LEASE) as worker:
        await until(lambda: worker.busy == 0, 5, "an idle worker")
        started = time.perf_counter()
        node = await asubmit(LeafWorkChain, x=Int(7))
        await until(lambda: node.process_state is not ProcessState.CREATED, 10, "the pick-up")
        picked_up = time.perf_counter() - started
        await await_node(node, timeout=30)
    assert node.is_finished_ok and node.outputs.x.value == 7
    print(f"picked up after {picked_up * 1000:.1f} ms")


# what cannot be submitted --------------------------------------------------------------------


def test_a_class_defined_in_a_function_is_refused_and_nothing_is_stored(
    miniengine_db: Path,
) -> None:
    class Local(WorkChain):
        @classmethod
        def define(cls, spec):  # type: ignore[no-untyped-def]
            super().define(spec)
            spec.input("x", valid_type=Int)
            spec.outline(cls.go)

        def go(self) -> None:
            pass

    create_schema(miniengine_db)
    with pytest.raises(MiniengineError, match="put it in a module"):
        submit(Local, x=Int(1))
    assert count(miniengine_db, "SELECT count(*) FROM nodes") == 0
    assert count(miniengine_db, "SELECT count(*) FROM tasks") == 0


def test_a_class_defined_in_a_script_main_is_refused_and_nothing_is_stored(
    miniengine_db: Path, tmp_path: Path
) -> None:
    create_schema(miniengine_db)
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import sqlite3, sys
            from miniengine import Int, WorkChain, submit

            class InMain(WorkChain):
                @classmethod
                def define(cls, spec):
                    super().define(spec)
                    spec.input("x", valid_type=Int)
                    spec.outline(cls.go)

                def go(self):
                    pass

            try:
                submit(InMain, x=Int(1))
            except Exception as exc:
                print("REFUSED", type(exc).__name__, exc)
            connection = sqlite3.connect(sys.argv[1])
            print("NODES", connection.execute("SELECT count(*) FROM nodes").fetchone()[0])
            print("TASKS", connection.execute("SELECT count(*) FROM tasks").fetchone()[0])
            """
        )
    )
    completed = subprocess.run(
        [sys.executable, str(script), str(miniengine_db)],
        env=python_env(miniengine_db),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = completed.stdout.splitlines()
    refused = [line for line in lines if line.startswith("REFUSED")]
    assert refused, completed.stdout + completed.stderr
    assert "__main__" in refused[0] and "put it in a module" in refused[0]
    assert "NODES 0" in lines and "TASKS 0" in lines


def test_submitting_a_process_function_is_refused(miniengine_db: Path) -> None:
    create_schema(miniengine_db)
    with pytest.raises(SubmitError, match="process function"):
        submit(add, x=Int(1), y=Int(2))
    assert count(miniengine_db, "SELECT count(*) FROM nodes") == 0


def test_submit_without_provenance_is_refused(miniengine_db: Path) -> None:
    create_schema(miniengine_db)
    with pytest.raises(SubmitError, match="store_provenance"):
        submit(LeafWorkChain, x=Int(1), metadata={"store_provenance": False})
    assert count(miniengine_db, "SELECT count(*) FROM nodes") == 0


def test_submit_inside_a_step_raises_submit_error(backend_db: Path | str) -> None:
    with pytest.raises(SubmitError, match=r"self\.submit") as info:
        run(SubmitInStepWorkChain)
    assert isinstance(info.value, RuntimeError)
    assert find_processes(process_label="LeafWorkChain") == []


def test_submit_inside_an_async_step_raises_submit_error(backend_db: Path | str) -> None:
    with pytest.raises(SubmitError, match=r"self\.submit"):
        run(SubmitInAsyncStepWorkChain)


async def test_submit_inside_a_step_run_by_the_daemon_excepts_the_process(
    backend_db: Path | str,
) -> None:
    async with Worker(db=backend_db, lease_timeout=LEASE):
        node = await asubmit(SubmitInStepWorkChain)
        await await_node(node, timeout=30)
    assert node.process_state is ProcessState.EXCEPTED
    assert "SubmitError" in (node.exception or "") and "self.submit" in (node.exception or "")
    assert find_processes(process_label="LeafWorkChain") == []


async def test_a_parent_waiting_on_a_child_that_raises_is_woken_and_sees_it_excepted(
    backend_db: Path | str,
) -> None:
    async with Worker(db=backend_db, lease_timeout=LEASE):
        parent = await asubmit(ParentOfRaisingWorkChain)
        await await_node(parent, timeout=30)
    assert parent.is_finished_ok, parent.exception
    assert parent.outputs.child_state.value == "excepted"


async def test_a_child_submitted_by_a_daemon_step_that_raises_is_not_left_created(
    backend_db: Path | str,
) -> None:
    async with Worker(db=backend_db, lease_timeout=LEASE):
        parent = await asubmit(SubmitThenRaiseWorkChain)
        await await_node(parent, timeout=30)
        (child,) = parent.called
        with anyio.move_on_after(3):
            while not child.is_terminated:
                await anyio.sleep(0.01)
    assert parent.process_state is ProcessState.EXCEPTED
    assert child.is_terminated, f"the child is {child.process_state} with no task"


async def test_a_daemon_step_can_run_a_child_workchain_inline(backend_db: Path | str) -> None:
    async with Worker(db=backend_db, lease_timeout=LEASE):
        node = await asubmit(RunInStepWorkChain)
        await await_node(node, timeout=30)
    assert node.is_finished_ok, node.exception
    assert node.outputs.x.value == 9
    (child,) = node.called
    assert child.process_label == "LeafWorkChain" and child.is_finished_ok


# waiting processes hold no slot ---------------------------------------------------------------


async def test_a_worker_with_two_slots_finishes_a_nest_of_depth_50(miniengine_db: Path) -> None:
    async with Worker(db=miniengine_db, slots=2, lease_timeout=LEASE) as worker:
        most_busy = 0

        async def watch() -> None:
            nonlocal most_busy
            while True:
                most_busy = max(most_busy, worker.busy)
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            node = await asubmit(NestedWorkChain, inp=Int(50))
            await await_node(node, timeout=60)
            group.cancel_scope.cancel()
    assert node.is_finished_ok and node.outputs.output.value == 50
    states = query(
        miniengine_db,
        "SELECT process_state, count(*) FROM nodes WHERE process_label = 'NestedWorkChain' "
        "GROUP BY process_state",
    )
    assert states == [("finished", 51)]
    assert most_busy <= 2


async def test_a_fan_out_of_2000_children_finishes_and_wakes_the_parent_once(
    miniengine_db: Path,
) -> None:
    started = time.perf_counter()
    async with Worker(db=miniengine_db, lease_timeout=LEASE):
        node = await asubmit(FanOutWorkChain, n=Int(2000))
        await await_node(node, timeout=120)
    elapsed = time.perf_counter() - started
    assert node.is_finished_ok, node.exception
    assert node.outputs.total.value == sum(range(2000))
    assert count(miniengine_db, "SELECT count(*) FROM links WHERE in_pk = ? AND link_type = "
                 "'call_work'", node.pk) == 2000  # fmt: skip
    # one task to start it and exactly one to wake it: nobody polled for the children
    keys = [key for (key,) in query(miniengine_db, "SELECT dedup_key FROM tasks WHERE "
                                    "process_pk = ? ORDER BY pk", node.pk)]  # fmt: skip
    assert keys[0] == f"start:{node.pk}" and len(keys) == 2 and keys[1].startswith("wake:")
    print(f"fan-out of 2000: {elapsed:.2f} s")


# duplicates ---------------------------------------------------------------------------------


async def test_a_task_for_a_terminated_process_is_acknowledged_without_running_it(
    miniengine_db: Path,
) -> None:
    async with Worker(db=miniengine_db, lease_timeout=LEASE):
        node = await asubmit(AddWorkChain, x=Int(1), y=Int(2))
        await await_node(node, timeout=30)
        assert node.is_finished_ok
        before = query(miniengine_db, "SELECT * FROM nodes WHERE pk = ?", node.pk)
        links = count(miniengine_db, "SELECT count(*) FROM links")
        logs = count(miniengine_db, "SELECT count(*) FROM logs")
        with sqlite3.connect(miniengine_db) as connection:
            connection.execute(
                "INSERT INTO tasks (process_pk, dedup_key, ctime) VALUES (?, 'by-hand', ?)",
                (node.pk, time.time()),
            )
        await until(
            lambda: (
                query(miniengine_db, "SELECT status FROM tasks WHERE dedup_key = 'by-hand'")
                == [("done",)]
            ),
            10,
            "the duplicate task to be acknowledged",
        )
    assert query(miniengine_db, "SELECT * FROM nodes WHERE pk = ?", node.pk) == before
    assert count(miniengine_db, "SELECT count(*) FROM links") == links
    assert count(miniengine_db, "SELECT count(*) FROM logs") == logs
    assert len(find_processes(process_label="add")) == 1


async def test_a_duplicate_dedup_key_is_ignored(miniengine_db: Path) -> None:
    node = await asubmit(LeafWorkChain, x=Int(5))  # no worker yet: it stays queued
    store = Store(miniengine_db)
    try:
        added = store.broker.enqueue(node.pk, f"start:{node.pk}", time.time())
    finally:
        store.close()
    assert added is False
    assert count(miniengine_db, "SELECT count(*) FROM tasks WHERE process_pk = ?", node.pk) == 1
    async with Worker(db=miniengine_db, lease_timeout=LEASE):
        await await_node(node, timeout=30)
    assert node.is_finished_ok and node.outputs.x.value == 5


async def test_a_duplicate_task_for_a_process_running_on_the_same_worker_does_not_run_it_twice(
    miniengine_db: Path, tmp_path: Path
) -> None:
    async with Worker(db=miniengine_db, lease_timeout=LEASE):
        node = await asubmit(GateWorkChain, folder=Str(str(tmp_path)))
        await until(lambda: (tmp_path / f"started.{os.getpid()}").exists(), 30, "the gate")
        with sqlite3.connect(miniengine_db) as connection:
            connection.execute(
                "INSERT INTO tasks (process_pk, dedup_key, ctime) VALUES (?, 'by-hand', ?)",
                (node.pk, time.time()),
            )
        await until(
            lambda: (
                query(miniengine_db, "SELECT status FROM tasks WHERE dedup_key = 'by-hand'")
                == [("leased",)]
            ),
            10,
            "the duplicate to be claimed",
        )
        (tmp_path / f"release.{os.getpid()}").touch()
        await await_node(node, timeout=30)
        await until(
            lambda: count(miniengine_db, "SELECT count(*) FROM tasks WHERE status != 'done'") == 0,
            10,
            "every task to be done",
        )
    assert node.is_finished_ok
    assert steps(tmp_path) == ["setup", f"gate {os.getpid()}", "finalize"]


# bad checkpoints, locked files ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"garbage, not a checkpoint", "could not be read"),
        (codec.encode({"unexpected": 1}), "names no process class"),
        (codec.encode({"p": "tests.workchains.daemon_chains:LeafWorkChain"}), "loaded"),
    ],
    ids=["bad-header", "no-class", "missing-fields"],
)
async def test_a_corrupt_checkpoint_of_a_created_process_excepts_it_and_the_worker_carries_on(
    miniengine_db: Path, garbage: bytes, reason: str
) -> None:
    bad = await asubmit(LeafWorkChain, x=Int(1))
    good = await asubmit(LeafWorkChain, x=Int(2))
    with sqlite3.connect(miniengine_db) as connection:
        changed = connection.execute(
            "UPDATE checkpoints SET data = ? WHERE node_pk = ?", (garbage, bad.pk)
        ).rowcount
    assert changed == 1
    async with Worker(db=miniengine_db, lease_timeout=LEASE):
        await await_node(bad, timeout=30)
        await await_node(good, timeout=30)
        after = await asubmit(LeafWorkChain, x=Int(3))
        await await_node(after, timeout=30)
    assert bad.process_state is ProcessState.EXCEPTED
    assert "cannot be continued by the daemon" in (bad.exception or "")
    assert reason in (bad.exception or "")
    assert any(reason in entry.message for entry in bad.logs)
    assert good.is_finished_ok and after.is_finished_ok


async def test_a_corrupt_checkpoint_of_a_waiting_process_excepts_it_when_it_is_woken(
    miniengine_db: Path, tmp_path: Path
) -> None:
    async with Worker(db=miniengine_db, lease_timeout=LEASE):
        parent = await asubmit(GateParentWorkChain, folder=Str(str(tmp_path)))
        await until(lambda: (tmp_path / f"started.{os.getpid()}").exists(), 30, "the gate")
        await until(lambda: parent.process_state is ProcessState.WAITING, 10, "a waiting parent")
        with sqlite3.connect(miniengine_db) as connection:
            connection.execute(
                "UPDATE checkpoints SET data = ? WHERE node_pk = ?", (b"\x00garbage", parent.pk)
            )
        (tmp_path / f"release.{os.getpid()}").touch()
        await await_node(parent, timeout=30)
        later = await asubmit(LeafWorkChain, x=Int(4))
        await await_node(later, timeout=30)
    assert parent.process_state is ProcessState.EXCEPTED
    assert "checkpoint" in (parent.exception or "")
    (child,) = parent.called
    assert child.is_finished_ok
    assert later.is_finished_ok


HOLD_LOCK = ROOT / "tests" / "scripts" / "hold_write_lock.py"


def _hold_write_lock(db: Path) -> tuple[subprocess.Popen[str], LineReader]:
    holder = subprocess.Popen(
        [sys.executable, str(HOLD_LOCK), str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    reader = LineReader(holder.stdout)
    reader.wait_for("LOCKED", 30)
    return holder, reader


async def _release_lock(holder: subprocess.Popen[str], reader: LineReader) -> None:
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    await anyio.to_thread.run_sync(reader.wait_for, "RELEASED", 10.0)


async def test_the_worker_keeps_going_after_another_program_held_the_write_lock(
    miniengine_db: Path, tmp_path: Path
) -> None:
    async with Worker(db=miniengine_db, lease_timeout=LEASE):
        node = await asubmit(GateWorkChain, folder=Str(str(tmp_path)))
        await until(lambda: (tmp_path / f"started.{os.getpid()}").exists(), 30, "the gate")
        holder, reader = await anyio.to_thread.run_sync(_hold_write_lock, miniengine_db)
        try:
            # the step ends now, and its commit (and the worker's heartbeats) meet the lock,
            # held for longer than the lease
            (tmp_path / f"release.{os.getpid()}").touch()
            # the process's lease, which nobody can renew while the lock is held, runs out
            expired = node.lease[2]
            assert expired is not None
            await until(lambda: time.time() > expired, 30, "the lease to run out")
            assert node.lease[2] == expired and not node.is_terminated
            await _release_lock(holder, reader)
        finally:
            holder.kill()
            holder.wait()
        await await_node(node, timeout=30)
        later = await asubmit(LeafWorkChain, x=Int(4))
        await await_node(later, timeout=30)
    assert node.is_finished_ok, node.exception
    assert later.is_finished_ok
    assert steps(tmp_path) == ["setup", f"gate {os.getpid()}", "finalize"]


async def test_a_lock_held_beyond_every_retry_is_logged_and_the_process_is_run_again(
    miniengine_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    retry = 0.3
    monkeypatch.setattr("miniengine.storage.store.BUSY_RETRY_SECONDS", retry)
    async with Worker(db=miniengine_db, lease_timeout=LEASE):
        node = await asubmit(GateWorkChain, folder=Str(str(tmp_path)))
        await until(lambda: (tmp_path / f"started.{os.getpid()}").exists(), 30, "the gate")
        holder, reader = await anyio.to_thread.run_sync(_hold_write_lock, miniengine_db)
        try:
            # the step goes on now; its next write, and then its EXCEPTED write, both give up
            # while the lock is held, and the worker hands the process back
            (tmp_path / f"release.{os.getpid()}").touch()
            await until(
                lambda: any("handing it back" in r.getMessage() for r in caplog.records),
                60,
                "the worker to hand the process back",
            )
            await _release_lock(holder, reader)
        finally:
            holder.kill()
            holder.wait()
        await await_node(node, timeout=15)
        later = await asubmit(LeafWorkChain, x=Int(4))
        await await_node(later, timeout=15)
    assert later.is_finished_ok
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_info[1] if r.exc_info else ''}" for r in caplog.records
    )
    assert "stayed locked" in logged
    # handed back to the queue and run again from its last checkpoint: never stuck RUNNING
    assert node.is_finished_ok, node.exception
    assert steps(tmp_path) == ["setup", *[f"gate {os.getpid()}"] * 2, "finalize"]
    assert count(miniengine_db, "SELECT count(*) FROM tasks WHERE status != 'done'") == 0
