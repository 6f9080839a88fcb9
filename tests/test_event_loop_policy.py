"""The event-loop policy of DESIGN.md: where bodies run, no thread-pool deadlock, clean exits.

Nested synchronous children run their bodies in the thread of their caller; many concurrent
launches on one loop (asyncio and uvloop) all finish and are stored; a script exits promptly;
Ctrl-C kills the running process tree and re-raises.  Scripts run as real OS processes and are
interrupted with a real SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from miniengine import (
    EventLoopError,
    Int,
    ProcessState,
    arun,
    calcfunction,
    find_processes,
    run,
    workfunction,
)
from miniengine.runtime import driver
from tests.services import sql

#: every test runs on a sqlite file and on a PostgreSQL database
pytestmark = pytest.mark.backends

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
TIMEOUT = 60.0  # a bound on waits for things that take milliseconds; reached only on a hang

T = TypeVar("T")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run_on(loop_name: str, main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        return runner.run(asyncio.wait_for(main, TIMEOUT))


def start_script(name: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)  # carries MINIENGINE_DB, the test's own database
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, str(SCRIPTS / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )


# nested synchronous children -------------------------------------------------------------------

body_threads: list[int] = []


@calcfunction
def increment(x: Int) -> Int:
    body_threads.append(threading.get_ident())
    return Int(x.value + 1)


@workfunction
def recurse(depth: Int) -> Int:
    body_threads.append(threading.get_ident())
    if depth.value == 0:
        result: Int = increment(depth)
    else:
        result = recurse(Int(depth.value - 1))
    return result


def check_recursion_stored(depth: int) -> None:
    nodes = find_processes(process_label="recurse")
    assert len(nodes) == depth + 1
    assert all(node.process_state is ProcessState.FINISHED for node in nodes)
    deepest = nodes[0]  # newest first
    chain = 0
    while deepest.caller is not None:
        deepest = deepest.caller
        chain += 1
    assert chain == depth


def test_sync_recursion_200_deep_runs_every_body_in_the_callers_thread() -> None:
    body_threads.clear()
    assert run(recurse, 200) == 1
    assert len(body_threads) == 202
    assert set(body_threads) == {threading.get_ident()}
    check_recursion_stored(200)


def test_sync_recursion_200_deep_from_a_loop_runs_in_one_worker_thread() -> None:
    body_threads.clear()

    async def main() -> tuple[Any, int]:
        return await arun(recurse, 200), threading.get_ident()

    result, loop_thread = run_on("asyncio", main())
    assert result == 1
    assert len(body_threads) == 202
    assert len(set(body_threads)) == 1  # the whole tree in the worker thread of the top body
    assert loop_thread not in body_threads
    check_recursion_stored(200)


# many launches on one loop ---------------------------------------------------------------------

threads_by_key: defaultdict[int, set[int]] = defaultdict(set)


@calcfunction
def add_sync(x: Int, y: Int) -> Int:
    threads_by_key[x.value].add(threading.get_ident())
    return Int(x.value + y.value)


@calcfunction
def multiply_sync(x: Int, y: Int) -> Int:
    threads_by_key[y.value].add(threading.get_ident())
    return Int(x.value * y.value)


@workfunction
def add_and_multiply_sync(x: Int, y: Int, z: Int) -> Int:
    threads_by_key[x.value].add(threading.get_ident())
    result: Int = multiply_sync(add_sync(x, y), z)
    return result


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_200_concurrent_sync_workfunctions_with_sync_children_finish(loop_name: str) -> None:
    """60 parents each waiting on a child that needs a new thread would deadlock anyio's pool."""
    threads_by_key.clear()
    count = 200

    async def main() -> tuple[list[Any], int]:
        results = await asyncio.gather(
            *(arun(add_and_multiply_sync, i, 1, i) for i in range(count))
        )
        return results, threading.get_ident()

    results, loop_thread = run_on(loop_name, main())
    assert results == [(i + 1) * i for i in range(count)]
    for i in range(count):
        # the parent and both of its children ran in one worker thread, never on the loop
        assert len(threads_by_key[i]) == 1 and loop_thread not in threads_by_key[i], i
    used = set().union(*threads_by_key.values())
    assert len(used) <= driver.DEFAULT_STEP_THREADS

    parents = find_processes(process_label="add_and_multiply_sync")
    assert len(parents) == count
    assert all(node.is_finished_ok for node in parents)
    assert sorted(node.outputs.result.value for node in parents) == sorted(results)
    for node in parents:
        assert sorted(child.process_label for child in node.called) == ["add_sync", "multiply_sync"]
    assert len(find_processes(state=ProcessState.FINISHED)) == 3 * count


@calcfunction
async def add_async(x: Int, y: Int) -> Int:
    await asyncio.sleep(0)
    return Int(x.value + y.value)


@calcfunction
async def multiply_async(x: Int, y: Int) -> Int:
    await asyncio.sleep(0)
    return Int(x.value * y.value)


@workfunction
async def add_and_multiply_async(x: Int, y: Int, z: Int) -> Int:
    total = await add_async.arun(x, y)
    result: Int = await multiply_async.arun(total, z)
    return result


@pytest.mark.parametrize("loop_name", list(LOOPS))
def test_100_gathered_async_launches_all_finish_and_are_stored(loop_name: str) -> None:
    count = 100

    async def main() -> list[Any]:
        return await asyncio.gather(*(arun(add_and_multiply_async, i, 2, 3) for i in range(count)))

    assert run_on(loop_name, main()) == [(i + 2) * 3 for i in range(count)]
    parents = find_processes(process_label="add_and_multiply_async")
    assert len(parents) == count
    assert all(node.is_finished_ok for node in parents)
    assert sorted(node.inputs.x.value for node in parents) == list(range(count))
    assert all(len(node.called) == 2 for node in parents)
    assert len(find_processes(state=ProcessState.FINISHED)) == 3 * count
    assert find_processes(state=[ProcessState.CREATED, ProcessState.RUNNING]) == []


def test_blocking_launches_on_a_loop_thread_name_the_awaitable() -> None:
    async def main() -> None:
        with pytest.raises(EventLoopError, match=r"await arun\("):
            run(add_sync, 1, 2)
        with pytest.raises(EventLoopError, match=r"add_sync\.arun\("):
            add_sync(1, 2)
        assert isinstance(EventLoopError("x"), RuntimeError)

    asyncio.run(main())
    assert find_processes() == []


# leaving the process ----------------------------------------------------------------------------


def test_script_leaves_nothing_to_wait_for_after_its_last_line(miniengine_db: Path | str) -> None:
    """A script exits promptly when, after its last line, the interpreter has nothing to wait
    for: no non-daemon thread, and no engine thread left running by the exit handlers."""
    script = start_script("run_then_exit.py")
    assert script.stdout is not None
    lines: list[str] = []
    try:
        for line in script.stdout:
            lines.append(line)
            if line.startswith("LAST"):
                break
        try:
            script.wait(timeout=TIMEOUT)  # a guard against a hang, not a measure
        except subprocess.TimeoutExpired:
            pytest.fail(f"the script was still running {TIMEOUT} s after its last line: {lines}")
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    lines.extend(script.stdout)
    stderr = script.stderr.read() if script.stderr else ""
    assert script.returncode == 0, stderr
    assert [line.split()[1] for line in lines if line.startswith("RESULT")] == ["9", "9", "9"]

    threads = json.loads(next(line for line in lines if line.startswith("THREADS"))[8:])
    engine_threads = [(name, daemon) for name, daemon in threads if name.startswith("miniengine")]
    assert engine_threads and all(daemon for _, daemon in engine_threads), threads
    lingering = json.loads(next(line for line in lines if line.startswith("LINGERING"))[10:])
    assert lingering == [], f"non-daemon threads outlived the script's work: {threads}"
    stopped = json.loads(
        next(line for line in lines if line.startswith("ENGINE_AFTER_EXIT_HANDLERS"))[27:]
    )
    assert stopped == [], f"engine threads still ran after the exit handlers: {stopped}"

    if isinstance(miniengine_db, Path):
        # every connection was closed: the last one to close removes the write-ahead log
        assert not Path(f"{miniengine_db}-wal").exists()
    states = sql.query(
        miniengine_db,
        "SELECT process_state, count(*) FROM nodes WHERE process_state IS NOT NULL "
        "GROUP BY process_state",
    )
    assert states == [("finished", 9)]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_ctrl_c_kills_the_running_tree_and_reraises(miniengine_db: Path | str, mode: str) -> None:
    script = start_script("interrupt_run.py", mode)
    assert script.stdout is not None
    try:
        ready = script.stdout.readline()
        assert ready == "READY\n", (ready, script.stderr.read() if script.stderr else "")
        script.send_signal(signal.SIGINT)
        out, err = script.communicate(timeout=TIMEOUT)
    finally:
        if script.poll() is None:
            script.kill()
            script.communicate()
    assert script.returncode == -signal.SIGINT, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    assert "NOT INTERRUPTED" not in out

    rows = sql.query(
        miniengine_db,
        "SELECT process_label, process_state, owner, lease_expires, process_status "
        "FROM nodes WHERE process_state IS NOT NULL ORDER BY pk",
    )
    logs = sql.query(miniengine_db, "SELECT levelname FROM logs")
    parent, child = ("blocking", "waiting")[mode == "async"] + "_parent", ""
    child = parent.replace("parent", "child")
    assert [row[:4] for row in rows] == [
        (parent, "killed", None, None),
        (child, "killed", None, None),
    ]
    assert all("Killed" in row[4] for row in rows), rows
    assert logs == [("REPORT",), ("REPORT",)]
