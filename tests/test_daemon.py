"""The daemon (issue 5): ``python -m miniengine.daemon`` and its supervisor, with real processes.

The CLI is run as a subprocess, the supervisor is a real OS process and every worker is a child
process of it.  Tests wait for printed lines, for the pid file, for ``await_node`` or for a
condition in the database, each with a deadline; a :class:`DaemonGuard` stops the daemon and
SIGKILLs whatever it started when a test ends, even on failure.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from miniengine import Str, load_node
from miniengine.core.links import LinkType
from miniengine.daemon.files import DaemonFiles, db_arguments
from tests.services import sql
from tests.workchains.daemon_chains import (
    ROOT,
    DaemonGuard,
    LineReader,
    alive,
    children_of,
    command_line,
    kill_quietly,
    parent_of,
    python_env,
    wait_until,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and ps")


def steps(folder: Path) -> list[str]:
    path = folder / "steps"
    return path.read_text().splitlines() if path.exists() else []


def started_pids(folder: Path, prefix: str = "") -> set[int]:
    return {int(path.name.rsplit(".", 1)[1]) for path in folder.glob(f"{prefix}started.*")}


def process_row(db: Path | str, pk: int) -> tuple[Any, ...]:
    (row,) = sql.query(db, "SELECT process_state, exception, owner FROM nodes WHERE pk = ?", pk)
    return row


def submit_in_subprocess(db: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a plain script against ``db`` (``$MINIENGINE_DB``)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=python_env(db),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def submit_gate(db: Path | str, folder: Path) -> int:
    """Submit a GateWorkChain to ``db`` from this process; its pk."""
    from miniengine import submit
    from miniengine.storage.store import close_all_stores
    from tests.workchains.daemon_chains import GateWorkChain

    previous = os.environ.get("MINIENGINE_DB")
    os.environ["MINIENGINE_DB"] = str(db)
    try:
        node = submit(GateWorkChain, folder=Str(str(folder)))
    finally:
        close_all_stores()
        if previous is not None:
            os.environ["MINIENGINE_DB"] = previous
    assert node.pk is not None
    return node.pk


def wait_terminated(db: Path | str, pk: int, timeout: float) -> tuple[Any, ...]:
    return wait_until(
        lambda: (row := process_row(db, pk))[0] in ("finished", "excepted", "killed") and row,
        timeout,
        f"process {pk} to terminate",
    )


# the CLI ------------------------------------------------------------------------------------


def test_the_cli_starts_reports_resizes_restarts_and_stops_the_daemon(tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite"
    pid_file = tmp_path / "cli.sqlite.daemon.pid"
    with DaemonGuard(db) as daemon:
        # start returns once the workers are ready
        supervisor = daemon.start("--workers", "2", "--lease-timeout", "1")
        state = daemon.state()
        assert state is not None and state["db"] == str(db)
        workers = daemon.worker_pids()
        assert len(workers) == 2 and sorted(workers) == sorted(state["workers"])
        assert all(alive(pid) and parent_of(pid) == supervisor for pid in workers)
        assert (tmp_path / "cli.sqlite.daemon.log").exists()

        second = daemon.cli("start")
        assert second.returncode == 1
        assert "already running" in second.stderr and str(supervisor) in second.stderr
        assert daemon.state()["pid"] == supervisor  # type: ignore[index]

        status = daemon.cli("status")
        assert status.returncode == 0, status.stderr
        assert f"daemon pid {supervisor}" in status.stdout
        for pid in workers:
            assert str(pid) in status.stdout
        assert status.stdout.count("0 / 200") == 2
        assert "queue: 0 ready, 0 running" in status.stdout

        logs = daemon.cli("logs")
        assert logs.returncode == 0 and "daemon ready" in logs.stdout

        # incr / decr add and remove a worker process live
        assert daemon.cli("incr").returncode == 0
        three = wait_until(lambda: len(pids := daemon.worker_pids()) == 3 and pids, 30, "3 workers")
        (added,) = set(three) - set(workers)
        assert alive(added) and parent_of(added) == supervisor
        wait_until(lambda: sorted(daemon.state()["workers"]) == sorted(three), 10, "the pid file")  # type: ignore[index]
        assert daemon.cli("decr").returncode == 0
        two = wait_until(lambda: len(pids := daemon.worker_pids()) == 2 and pids, 30, "2 workers")
        (removed,) = set(three) - set(two)
        wait_until(lambda: not alive(removed), 30, f"worker {removed} to exit")
        wait_until(lambda: sorted(daemon.state()["workers"]) == sorted(two), 10, "the pid file")  # type: ignore[index]

        # restart: a new supervisor with new workers, the old ones gone
        restarted = daemon.cli("restart", "--workers", "1", "--lease-timeout", "1")
        assert restarted.returncode == 0, restarted.stderr
        new_supervisor = daemon.state()["pid"]  # type: ignore[index]
        assert new_supervisor != supervisor
        assert not alive(supervisor) and not any(alive(pid) for pid in two)
        (worker,) = daemon.worker_pids()
        assert parent_of(worker) == new_supervisor

        # stop is graceful: everything exits and the pid file goes
        stopped = daemon.cli("stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert not pid_file.exists()
        assert not alive(new_supervisor) and not alive(worker)
        assert daemon.worker_pids() == []
        assert "daemon stopped" in daemon.cli("logs").stdout

        status = daemon.cli("status")
        assert status.returncode == 1 and "not running" in status.stdout


def _foreground(db: Path | str, *args: str) -> tuple[subprocess.Popen[str], LineReader]:
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "miniengine.daemon",
            "start",
            "--foreground",
            *db_arguments(db)[0],
            *args,
        ],
        env=python_env(db),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader = LineReader(supervisor.stderr)
    reader.wait_for("daemon ready", 60)
    return supervisor, reader


def test_the_foreground_supervisor_runs_even_one_worker_as_a_child_and_stops_it_on_sigterm(
    tmp_path: Path,
) -> None:
    db = tmp_path / "fg.sqlite"
    with DaemonGuard(db) as daemon:
        supervisor, reader = _foreground(db, "--workers", "1", "--lease-timeout", "1")
        daemon.track(supervisor.pid)
        assert daemon.state()["pid"] == supervisor.pid  # type: ignore[index]
        children = children_of(supervisor.pid)
        assert len(children) == 1, children
        (worker, command), *_ = children
        assert "miniengine.daemon.worker_process" in command
        assert worker != supervisor.pid
        assert daemon.worker_pids() == [worker]

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
        assert not alive(worker)
        assert daemon.state() is None
        assert "daemon stopped" in reader.text()


@pytest.mark.backends
def test_workers_exit_when_the_supervisor_is_killed(miniengine_db: Path | str) -> None:
    db = miniengine_db
    with DaemonGuard(db) as daemon:
        supervisor, _ = _foreground(db, "--workers", "2", "--lease-timeout", "1")
        daemon.track(supervisor.pid)
        workers = daemon.worker_pids()
        assert len(workers) == 2
        supervisor.kill()
        supervisor.wait(timeout=10)
        wait_until(lambda: not any(alive(pid) for pid in workers), 15, "the workers to exit")
        # the stale pid file does not claim that a daemon runs, and a new daemon can start
        assert DaemonFiles(db).read() is None
        assert daemon.start("--workers", "1", "--lease-timeout", "1") != supervisor.pid
        assert len(daemon.worker_pids()) == 1


# submitting to a running daemon ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonGuard]:
    """A daemon with 2 workers and a lease of 1 s, shared by the tests that only submit to it
    (and by the SIGSTOP test, after which the supervisor has replaced the stopped worker)."""
    db = tmp_path_factory.mktemp("shared") / "engine.sqlite"
    with DaemonGuard(db) as daemon:
        daemon.start("--workers", "2", "--lease-timeout", "1")
        yield daemon


SCENARIO_2 = """
    import asyncio, sys
    from miniengine import asubmit, await_node, submit, Int, Str
    from tests.workchains.daemon_chains import GateWorkChain, NestedWorkChain

    # seed scenario 2, from a plain script
    node = submit(NestedWorkChain, inp=Int(5))
    print("SUBMITTED", node.pk, node.process_state.value, flush=True)
    assert await_node(node, timeout=60) is node
    print("FINISHED", node.pk, node.process_state.value, node.outputs.output.value, flush=True)

    gate = submit(GateWorkChain, folder=Str(sys.argv[1]))  # blocks until the test releases it
    try:
        await_node(gate, timeout=0.2)
    except TimeoutError:
        print("TIMEOUT sync", flush=True)

    async def main():
        node = await asubmit(NestedWorkChain, inp=Int(2))
        print("ASUBMITTED", node.pk, node.process_state.value, flush=True)
        assert (await await_node(node, timeout=60)) is node
        print("AFINISHED", node.pk, node.process_state.value, node.outputs.output.value)
        try:
            await await_node(gate, timeout=0.2)
        except TimeoutError:
            print("ATIMEOUT async", flush=True)
        print("GATE", gate.pk, gate.process_state.value)

    asyncio.run(main())
"""


def test_seed_scenario_2_submitted_from_a_script_finishes_on_the_daemon(
    shared_daemon: DaemonGuard, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    completed = submit_in_subprocess(shared_daemon.db, SCENARIO_2, str(tmp_path))
    # let the gate through, whatever happened to the script
    for pid in wait_until(lambda: started_pids(tmp_path), 30, "the gate step to start"):
        (tmp_path / f"release.{pid}").touch()
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = {line.split()[0]: line.split()[1:] for line in completed.stdout.splitlines()}
    # submit returns at once: before the daemon could run the nest (the deterministic check
    # that the state is CREATED at return is the in-process one in test_worker.py)
    assert lines["SUBMITTED"][1] in ("created", "running", "waiting")
    assert lines["ASUBMITTED"][1] in ("created", "running", "waiting")
    pk, state, output = lines["FINISHED"]
    assert state == "finished" and output == "5"
    _, astate, aoutput = lines["AFINISHED"]
    assert astate == "finished" and aoutput == "2"
    # both forms of await_node time out on a process that cannot finish yet
    assert "TIMEOUT" in lines and "ATIMEOUT" in lines
    gate_pk, gate_state = lines["GATE"]
    assert gate_state in ("created", "running")
    assert wait_terminated(shared_daemon.db, int(gate_pk), 30)[0] == "finished"

    monkeypatch.setenv("MINIENGINE_DB", str(shared_daemon.db))
    top = load_node(int(pk))
    chain = [top]
    while chain[-1].called:
        (child,) = chain[-1].called
        assert child.caller == chain[-1]
        incoming = child.base.links.get_incoming(link_type=LinkType.CALL_WORK).all()
        assert [(link.node.pk, link.link_type) for link in incoming] == [
            (chain[-1].pk, LinkType.CALL_WORK)
        ]
        chain.append(child)
    assert len(chain) == 6
    assert [node.outputs.output.value for node in chain] == [5, 4, 3, 2, 1, 0]
    assert all(node.is_finished_ok and node.process_label == "NestedWorkChain" for node in chain)
    messages = [entry.message for entry in top.logs]
    assert any("Submitting nested workchain." in m for m in messages), messages
    assert any("Getting sub-workchain output." in m for m in messages), messages
    assert any("Bottom-level workchain reached." in e.message for e in chain[-1].logs)


def test_a_sigstopped_worker_is_killed_by_the_supervisor_and_its_work_continues_elsewhere(
    shared_daemon: DaemonGuard, tmp_path: Path
) -> None:
    db = shared_daemon.db
    pk = submit_gate(db, tmp_path)
    (stopped,) = wait_until(lambda: started_pids(tmp_path), 30, "the gate step to start")
    assert stopped in shared_daemon.worker_pids()
    status = shared_daemon.cli("status").stdout
    (line,) = [line for line in status.splitlines() if f" {stopped} " in line]
    assert "1 / 200" in line and "queue: 0 ready, 1 running" in status, status
    os.kill(stopped, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        # the supervisor sees the stale heartbeat after the lease timeout and SIGKILLs it
        wait_until(lambda: not alive(stopped), 30, "the supervisor to kill the stopped worker")
        killed_after = time.monotonic() - stopped_at
        (new,) = wait_until(lambda: started_pids(tmp_path) - {stopped}, 30, "the takeover")
        took_over_after = time.monotonic() - stopped_at
    finally:
        kill_quietly(stopped, signal.SIGCONT)
    wait_until(lambda: stopped not in shared_daemon.worker_pids(), 10, "the dead worker's row")
    print(f"SIGSTOP: killed after {killed_after:.2f} s, taken over after {took_over_after:.2f} s")
    log = (db.parent / f"{db.name}.daemon.log").read_text()
    assert "missed its heartbeat" in log
    (tmp_path / f"release.{new}").touch()
    state, exception, _ = wait_terminated(db, pk, 30)
    assert state == "finished", exception
    assert load_node(pk, db=db).outputs.pid.value == new
    # continued from its checkpoint: setup ran once, the cut-off step twice
    assert steps(tmp_path) == ["setup", f"gate {stopped}", f"gate {new}", "finalize"]
    wait_until(lambda: len(shared_daemon.worker_pids()) == 2, 30, "the replacement worker")


@pytest.mark.backends
def test_a_killed_worker_is_restarted_and_its_leases_released_at_once(
    tmp_path: Path, miniengine_db: Path | str
) -> None:
    """With a lease of 60 s, only the supervisor's release lets the process go on in time."""
    db = miniengine_db
    with DaemonGuard(db) as daemon:
        supervisor = daemon.start("--workers", "1", "--lease-timeout", "60")
        (first,) = daemon.worker_pids()
        pk = submit_gate(db, tmp_path)
        wait_until(lambda: started_pids(tmp_path) == {first}, 30, "the gate step to start")
        killed_at = time.monotonic()
        os.kill(first, signal.SIGKILL)
        (second,) = wait_until(lambda: started_pids(tmp_path) - {first}, 30, "the takeover")
        took_over = time.monotonic() - killed_at
        assert took_over < 30  # far less than the lease: released at once, not expired
        assert daemon.worker_pids() == [second]
        assert parent_of(second) == supervisor
        assert daemon.state()["workers"] == [second]  # type: ignore[index]
        (tmp_path / f"release.{second}").touch()
        state, exception, _ = wait_terminated(db, pk, 30)
        assert state == "finished", exception
        assert load_node(pk, db=db).outputs.pid.value == second
        assert steps(tmp_path) == ["setup", f"gate {first}", f"gate {second}", "finalize"]
        log = DaemonFiles(db).log_file.read_text()
        assert "released 1 tasks and 1 processes" in log, log
        status = daemon.cli("status")
        assert str(second) in status.stdout and str(first) not in status.stdout
        print(f"kill to takeover: {took_over:.2f} s")


@pytest.mark.backends
def test_stop_hands_a_running_process_back_and_the_next_daemon_finishes_it(
    tmp_path: Path, miniengine_db: Path | str
) -> None:
    """Graceful: the worker stops claiming, lets the running step commit, releases the process
    (a lease of 60 s shows that it was released, not left to expire) and exits."""
    db = miniengine_db
    log = DaemonFiles(db).log_file
    with DaemonGuard(db) as daemon:
        daemon.start("--workers", "1", "--lease-timeout", "60", "--stop-timeout", "30")
        (first,) = daemon.worker_pids()
        pk = submit_gate(db, tmp_path)
        wait_until(lambda: started_pids(tmp_path) == {first}, 30, "the gate step to start")
        stopping = subprocess.Popen(
            [sys.executable, "-m", "miniengine.daemon", "stop", *db_arguments(db)[0]],
            env=python_env(db),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_until(lambda: "stopping: claiming nothing more" in log.read_text(), 30, "stop")
            (tmp_path / f"release.{first}").touch()  # the step ends while the worker stops
            output, _ = stopping.communicate(timeout=60)
        finally:
            stopping.kill()
        assert stopping.returncode == 0 and "daemon stopped" in output, output
        assert daemon.state() is None and not alive(first)
        state, _, owner = process_row(db, pk)
        assert state == "running" and owner is None  # handed back, lease released
        assert steps(tmp_path) == ["setup", f"gate {first}"]

        daemon.start("--workers", "1", "--lease-timeout", "60")
        state, exception, _ = wait_terminated(db, pk, 30)
        assert state == "finished", exception
        # continued after the committed step: the gate did not run again
        assert steps(tmp_path) == ["setup", f"gate {first}", "finalize"]
        assert load_node(pk, db=db).outputs.pid.value == first


@pytest.mark.backends
def test_two_starts_at_the_same_instant_run_one_daemon(miniengine_db: Path | str) -> None:
    db = miniengine_db
    command = [sys.executable, "-m", "miniengine.daemon", "start", *db_arguments(db)[0]]
    with DaemonGuard(db) as daemon:
        starts = [
            subprocess.Popen(
                [*command, "--lease-timeout", "1"],
                env=python_env(db),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [start.communicate(timeout=120) for start in starts]
        daemon.track_all()
        codes = sorted(start.returncode for start in starts)
        assert codes == [0, 1], results
        refused = next(
            err for (_, err), start in zip(results, starts, strict=True) if start.returncode == 1
        )
        assert "already running" in refused
        supervisor = daemon.state()["pid"]  # type: ignore[index]
        supervisors = [
            pid for pid in daemon.seen if alive(pid) and "--foreground" in command_line(pid)
        ]
        assert supervisors == [supervisor]
        assert len(daemon.worker_pids()) == 1


def test_the_pid_file_names_the_daemon_database_and_is_private(shared_daemon: DaemonGuard) -> None:
    pid_file = shared_daemon.db.parent / f"{shared_daemon.db.name}.daemon.pid"
    state = json.loads(pid_file.read_text())
    assert state["db"] == str(shared_daemon.db) and state["state"] == "ready"
    assert pid_file.stat().st_mode & 0o777 == 0o600


# kills of processes in plain ``def`` steps ------------------------------------------------------


def process_cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``miniengine process ARGS`` against ``db`` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "miniengine", "process", *args, "--db", str(db)],
        env=python_env(db),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def control_row(db: Path, pk: int) -> tuple[Any, ...]:
    with sqlite3.connect(db) as connection:
        state, status = connection.execute(
            "SELECT process_state, process_status FROM nodes WHERE pk = ?", (pk,)
        ).fetchone()
        (naps,) = connection.execute(
            "SELECT count(*) FROM logs WHERE node_pk = ? AND message LIKE '%|nap]: nap %'", (pk,)
        ).fetchone()
        (outputs,) = connection.execute(
            "SELECT count(*) FROM links WHERE in_pk = ? AND link_type = 'return'", (pk,)
        ).fetchone()
    return state, status, naps, outputs


def submit_napping(db: Path) -> int:
    """Submit a NappingChain (plain ``def`` steps until its gate opens) to ``db``; its pk."""
    from miniengine import submit
    from miniengine.storage.store import close_all_stores
    from tests.workchains.control_chains import NappingChain

    previous = os.environ.get("MINIENGINE_DB")
    os.environ["MINIENGINE_DB"] = str(db)
    try:
        node = submit(NappingChain, gate=Str("never"))
    finally:
        close_all_stores()
        if previous is not None:
            os.environ["MINIENGINE_DB"] = previous
    assert node.pk is not None
    return node.pk


def test_process_kill_wait_ends_a_chain_of_def_steps_on_the_daemon(
    shared_daemon: DaemonGuard,
) -> None:
    db = shared_daemon.db
    pk = submit_napping(db)
    wait_until(lambda: control_row(db, pk)[2] > 0, 30, "the daemon to run its steps")
    killed = process_cli(db, "kill", str(pk), "-m", "stop now", "--wait", "--timeout", "60")
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert killed.stdout.strip() == f"killed process {pk}"
    state, status, _, outputs = control_row(db, pk)
    assert (state, status, outputs) == ("killed", "stop now", 0)


def test_an_unconfirmed_kill_wait_exits_non_zero_and_the_kill_ends_the_step_it_waited_for(
    shared_daemon: DaemonGuard, tmp_path: Path
) -> None:
    """The gate step blocks its thread; the kill takes effect when that step ends, and the
    next step never runs."""
    db = shared_daemon.db
    pk = submit_gate(db, tmp_path)
    (pid,) = wait_until(lambda: started_pids(tmp_path), 30, "the gate step to start")
    waited = process_cli(
        db, "kill", str(pk), "-m", "held at the gate", "--wait", "--timeout", "0.5"
    )
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert waited.stdout.strip() == (
        f"asked the owner of process {pk} to kill it; it has not confirmed yet"
    )
    (tmp_path / f"release.{pid}").touch()
    state, _, _ = wait_terminated(db, pk, 30)
    assert control_row(db, pk)[:2] == ("killed", "held at the gate")
    assert state == "killed" and steps(tmp_path) == ["setup", f"gate {pid}"]  # no finalize


def test_a_kill_its_dead_worker_never_took_is_honoured_when_the_process_is_claimed_again(
    tmp_path: Path,
) -> None:
    """The worker is SIGKILLed with the kill request pending; the supervisor releases its lease
    and the next worker's claim kills the process instead of running it further."""
    db = tmp_path / "pending.sqlite"
    with DaemonGuard(db) as daemon:
        daemon.start("--workers", "1", "--lease-timeout", "60")
        (first,) = daemon.worker_pids()
        pk = submit_gate(db, tmp_path)
        wait_until(lambda: started_pids(tmp_path) == {first}, 30, "the gate step to start")
        asked = process_cli(db, "kill", str(pk), "-m", "while it was stuck")
        assert asked.returncode == 0
        assert asked.stdout.strip() == f"asked the owner of process {pk} to kill it"
        os.kill(first, signal.SIGKILL)
        wait_terminated(db, pk, 30)
        assert control_row(db, pk)[:2] == ("killed", "while it was stuck")
        # the gate step was not run again by the new worker, and nothing after it ran
        assert started_pids(tmp_path) == {first}
        assert steps(tmp_path) == ["setup", f"gate {first}"]
