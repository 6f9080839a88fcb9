"""CalcJobs on a real daemon: a supervisor with real worker processes runs real programs through
``core.local`` + ``core.direct`` (and test transports built on ``core.local``).

Workers are SIGKILLed at each stage of a job, with a counter file that the program appends to,
proving it ran exactly once; kills reach the scheduler job; a transport that keeps failing
pauses the process until ``play``; one scheduler query covers all the jobs of a computer.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from miniengine import Computer, InstalledCode, Int, Str, await_node, load_node, submit
from miniengine.control import kill_processes, play_processes
from miniengine.runtime.computers import localhost_computer
from miniengine.transports.errors import TransportError
from tests.workchains.calcjob_plugins import (
    BROKEN_FLAG,
    BROKEN_QUERY_FLAG,
    QUERY_LOG,
    AddRestartWorkChain,
    AddTwiceWorkChain,
    ArithmeticAddCalculation,
    FlakyTransport,
    GatedAddCalculation,
)
from tests.workchains.daemon_chains import DaemonGuard, alive, wait_until

pytestmark = [
    pytest.mark.backends,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses pidfds and ps"),
]

RESOURCES = {"num_machines": 1, "num_mpiprocs_per_machine": 1}
OPTIONS = {"options": {"resources": RESOURCES}}
TIMEOUT = 60


@pytest.fixture
def db(miniengine_db: Path | str) -> Path | str:
    """The test's database (``$MINIENGINE_DB``), a sqlite file or a PostgreSQL URL."""
    return miniengine_db


@pytest.fixture
def daemon(db: Path | str) -> Iterator[DaemonGuard]:
    with DaemonGuard(db) as guard:
        yield guard


def workdir(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    root.mkdir(exist_ok=True)
    (root / "ROOT").touch()  # where the test transports look for their flags
    return root


def test_process_gone(tmp_path: Path) -> None:
    assert process_gone(2**22 + 12345)


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def local_bash(tmp_path: Path) -> InstalledCode:
    computer = localhost_computer(workdir(tmp_path))
    return InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash").store()


def test_the_daemon_runs_calcjobs_workchains_that_submit_them_and_restarts(
    daemon: DaemonGuard, tmp_path: Path
) -> None:
    code = local_bash(tmp_path)
    daemon.start("--workers", "2", "--lease-timeout", "2")
    jobs = [
        submit(ArithmeticAddCalculation, code=code, x=Int(i), y=Int(10), metadata=OPTIONS)
        for i in range(6)
    ]
    chain = submit(AddTwiceWorkChain, code=code, x=Int(3), y=Int(4))
    (tmp_path / "fail-once").touch()
    restart = submit(
        AddRestartWorkChain,
        code=code,
        x=Int(1),
        y=Int(2),
        fail_file=Str(str(tmp_path / "fail-once")),
        counter=Str(str(tmp_path / "restart-counter")),
    )
    for index, job in enumerate(jobs):
        await_node(job, timeout=TIMEOUT)
        job = load_node(job.pk)
        assert job.is_finished_ok, (job.process_state, job.exception, job.exit_status)
        assert job.outputs.sum == index + 10
        assert job.get_scheduler_state() == "done"
    await_node(chain, timeout=TIMEOUT)
    assert load_node(chain.pk).outputs.total == 7 + 8
    await_node(restart, timeout=TIMEOUT)
    restart = load_node(restart.pk)
    assert restart.is_finished_ok and restart.outputs.sum == 3
    assert [child.exit_status for child in restart.called] == [310, 0]
    assert (tmp_path / "restart-counter").read_text() == "ran\nran\n"  # failed once, then ran


def gated_computer(tmp_path: Path, label: str = "gated") -> InstalledCode:
    computer = Computer(
        label,
        "localhost",
        transport_type="tests.workchains.calcjob_plugins:GatedTransport",
        scheduler_type="core.direct",
        workdir=str(workdir(tmp_path)),
    ).store()
    computer.configure(use_login_shell=False)
    computer.set_minimum_job_poll_interval(0.1)
    return InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash").store()


@pytest.mark.parametrize("stage", ["prepare", "submitted", "withscheduler", "retrieve", "parse"])
def test_a_worker_killed_in_any_stage_is_followed_by_one_that_runs_the_program_once(
    daemon: DaemonGuard, tmp_path: Path, stage: str
) -> None:
    code = gated_computer(tmp_path)
    root = workdir(tmp_path)
    counter = tmp_path / "counter"
    gate = tmp_path / "gate"
    hold = root / f"HOLD-{stage}"
    if stage == "withscheduler":
        inputs: dict[str, Any] = {"gate": Str(str(gate))}
    else:
        gate.touch()
        hold.touch()
        inputs = {"gate": Str(str(gate))}
    daemon.start("--workers", "1", "--lease-timeout", "1")
    node = submit(
        GatedAddCalculation,
        code=code,
        x=Int(20),
        y=Int(22),
        counter=Str(str(counter)),
        metadata=OPTIONS,
        **inputs,
    )
    if stage == "withscheduler":
        wait_until(lambda: load_node(node.pk).get_state() == "withscheduler", TIMEOUT, "the job")
        wait_until(counter.exists, TIMEOUT, "the program to start")
    else:
        wait_until((root / f"AT-{stage}").exists, TIMEOUT, f"the worker to reach {stage}")
    job_id = load_node(node.pk).get_job_id()
    (worker,) = daemon.worker_pids()
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not alive(worker), TIMEOUT, "the worker to die")
    hold.unlink(missing_ok=True)
    gate.touch()
    wait_until(
        lambda: worker not in daemon.worker_pids() and daemon.worker_pids(), TIMEOUT, "a new worker"
    )
    await_node(node, timeout=TIMEOUT)
    node = load_node(node.pk)
    assert node.is_finished_ok, (node.process_state, node.exception, node.exit_status)
    assert node.outputs.sum == 42
    assert counter.read_text() == "ran\n"  # the program ran exactly once
    if job_id is not None:
        assert node.get_job_id() == job_id  # the same job: never submitted again
    assert len(list(root.rglob("aiida.in"))) == 1  # one working folder


def test_kill_of_a_job_with_the_scheduler_cancels_the_job(
    daemon: DaemonGuard, tmp_path: Path
) -> None:
    code = local_bash(tmp_path)
    counter = tmp_path / "counter"
    daemon.start("--workers", "1", "--lease-timeout", "2")
    node = submit(
        ArithmeticAddCalculation,
        code=code,
        x=Int(1),
        y=Int(1),
        gate=Str(str(tmp_path / "never")),
        counter=Str(str(counter)),
        metadata=OPTIONS,
    )
    wait_until(lambda: load_node(node.pk).get_state() == "withscheduler", TIMEOUT, "the job")
    wait_until(counter.exists, TIMEOUT, "the program to start")
    pid = int(load_node(node.pk).get_job_id())
    assert not process_gone(pid)
    assert load_node(node.pk).lease[0] is None  # evicted: no worker holds it
    kill_processes([node.pk], wait=True, timeout=TIMEOUT)
    assert load_node(node.pk).is_killed
    wait_until(lambda: process_gone(pid), TIMEOUT, "the job's process to be cancelled")


def flaky_computer(tmp_path: Path) -> InstalledCode:
    computer = Computer(
        "flaky",
        str(workdir(tmp_path)),  # where FlakyTransport looks for its query flag
        transport_type="tests.workchains.calcjob_plugins:FlakyTransport",
        scheduler_type="core.direct",
        workdir=str(workdir(tmp_path)),
    ).store()
    computer.configure(use_login_shell=False)
    computer.set_minimum_job_poll_interval(0.1)
    return InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash").store()


def test_a_query_running_when_the_flag_appears_brings_no_answer(tmp_path: Path) -> None:
    """The premise of the next test: once the test breaks the queries, no answer reaches the
    engine, not even that of a ``ps`` already running (on a loaded machine it can outlast the
    job, which would then be seen to end and the process finish instead of pausing)."""
    flag = tmp_path / BROKEN_QUERY_FLAG
    transport = FlakyTransport(str(tmp_path))

    async def query() -> None:
        await transport.open()
        await transport.exec_command_wait(f"ps -o pid= -p {os.getpid()} && touch {flag}")

    with pytest.raises(TransportError, match="during the query"):
        anyio.run(query)
    assert flag.exists()  # the command ran: it was its answer that was lost


def test_a_scheduler_that_cannot_be_asked_pauses_the_job_until_play(
    daemon: DaemonGuard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIENGINE_TRANSPORT_BACKOFF", "0.05")
    monkeypatch.setenv("MINIENGINE_TRANSPORT_ATTEMPTS", "3")
    code = flaky_computer(tmp_path)
    counter, gate = tmp_path / "counter", tmp_path / "gate"
    daemon.start("--workers", "1", "--lease-timeout", "2")
    node = submit(
        ArithmeticAddCalculation,
        code=code,
        x=Int(2),
        y=Int(3),
        gate=Str(str(gate)),
        counter=Str(str(counter)),
        metadata=OPTIONS,
    )
    wait_until(lambda: load_node(node.pk).get_state() == "withscheduler", TIMEOUT, "the job")
    flag = workdir(tmp_path) / BROKEN_QUERY_FLAG
    flag.touch()  # from now on no query answers, not even one already running
    gate.touch()  # the job ends, but nobody can ask the scheduler about it
    wait_until(lambda: load_node(node.pk).paused, TIMEOUT, "the process to be paused")
    paused = load_node(node.pk)
    assert "update failed 3 times" in paused.process_status, paused.process_status
    assert paused.get_state() == "withscheduler" and not paused.is_terminated
    flag.unlink()
    play_processes([node.pk], wait=True)
    await_node(node, timeout=TIMEOUT)
    node = load_node(node.pk)
    assert node.is_finished_ok and node.outputs.sum == 5
    assert counter.read_text() == "ran\n"


def test_a_failing_transport_backs_off_then_pauses_and_play_retries(
    daemon: DaemonGuard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIENGINE_TRANSPORT_BACKOFF", "0.05")
    monkeypatch.setenv("MINIENGINE_TRANSPORT_ATTEMPTS", "3")
    code = flaky_computer(tmp_path)
    flag = workdir(tmp_path) / BROKEN_FLAG
    flag.touch()
    daemon.start("--workers", "1", "--lease-timeout", "2")
    node = submit(ArithmeticAddCalculation, code=code, x=Int(2), y=Int(3), metadata=OPTIONS)
    wait_until(lambda: load_node(node.pk).paused, TIMEOUT, "the process to be paused")
    paused = load_node(node.pk)
    assert not paused.is_terminated
    assert "upload failed 3 times" in paused.process_status
    assert "TransportError" in paused.process_status
    retries = [
        log for log in paused.logs if log.levelname == "WARNING" and "attempt" in log.message
    ]
    assert len(retries) == 2  # attempts 1 and 2 were retried, the 3rd paused it
    assert paused.lease[0] is None  # it holds no worker slot while paused
    flag.unlink()
    play_processes([node.pk], wait=True)
    await_node(node, timeout=TIMEOUT)
    node = load_node(node.pk)
    assert node.is_finished_ok and node.outputs.sum == 5


def test_kill_during_the_backoff_of_a_failing_transport_is_immediate(
    daemon: DaemonGuard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIENGINE_TRANSPORT_BACKOFF", "3600")  # an hour between attempts
    code = flaky_computer(tmp_path)
    (workdir(tmp_path) / BROKEN_FLAG).touch()
    daemon.start("--workers", "1", "--lease-timeout", "2")
    node = submit(ArithmeticAddCalculation, code=code, x=Int(2), y=Int(3), metadata=OPTIONS)
    wait_until(lambda: load_node(node.pk).process_status is not None, TIMEOUT, "the first attempt")
    wait_until(lambda: load_node(node.pk).lease[0] is not None, TIMEOUT, "a worker to hold it")
    kill_processes([node.pk], wait=True, timeout=TIMEOUT)
    # (``wait=True`` returned: the worker ended the backoff sleep; it would otherwise sleep 1 h)
    assert load_node(node.pk).is_killed


def test_the_watcher_asks_the_scheduler_once_for_all_the_jobs_of_a_computer(
    daemon: DaemonGuard, tmp_path: Path
) -> None:
    root = workdir(tmp_path)
    computer = Computer(
        "counted",
        str(root),  # where CountingTransport logs its queries
        transport_type="tests.workchains.calcjob_plugins:CountingTransport",
        scheduler_type="core.direct",
        workdir=str(root),
    ).store()
    computer.configure(use_login_shell=False)
    computer.set_minimum_job_poll_interval(0.2)
    code = InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash").store()
    gate = tmp_path / "gate"
    daemon.start("--workers", "1", "--lease-timeout", "2")
    nodes = [
        submit(
            ArithmeticAddCalculation,
            code=code,
            x=Int(i),
            y=Int(1),
            gate=Str(str(gate)),
            metadata=OPTIONS,
        )
        for i in range(8)
    ]
    wait_until(
        lambda: all(load_node(n.pk).get_state() == "withscheduler" for n in nodes),
        TIMEOUT,
        "every job with the scheduler",
    )
    pids = [load_node(n.pk).get_job_id() for n in nodes]
    log = root / QUERY_LOG

    def one_query_for_all() -> bool:
        lines = log.read_text().splitlines() if log.exists() else []
        return any(all(pid in line.split()[-2] for pid in pids) for line in lines)

    wait_until(one_query_for_all, TIMEOUT, "a query naming all 8 jobs")
    gate.touch()
    for node in nodes:
        await_node(node, timeout=TIMEOUT)
    assert all(load_node(n.pk).is_finished_ok for n in nodes)
    queries = log.read_text().splitlines()
    # every query is one command for the jobs still running, never one per job
    assert all(line.startswith("ps ") and "-p " in line for line in queries)
    assert len(queries) < 8 * 3
