"""CalcJobs over ``core.ssh`` to a real OpenSSH server (``core.direct`` behind it).

The server is Debian's ``sshd`` on a free loopback port with its own host and user keys
(:mod:`tests.services.sshd`); the working folders are on this machine, reached only through
SSH.  The daemon tests run a real supervisor with real worker processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from miniengine import (
    Computer,
    InstalledCode,
    Int,
    PortableCode,
    Str,
    await_node,
    load_node,
    run,
    submit,
)
from tests.services.sshd import SshServer, running_sshd
from tests.workchains.calcjob_plugins import AddTwiceWorkChain, ArithmeticAddCalculation
from tests.workchains.calcjob_remote_plugins import PORTABLE_SCRIPT, PortableAddCalculation
from tests.workchains.daemon_chains import ROOT, DaemonGuard, python_env, wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds sshd's connections in /proc"
)

RESOURCES = {"num_machines": 1, "num_mpiprocs_per_machine": 1}
OPTIONS = {"options": {"resources": RESOURCES}}
TIMEOUT = 60


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calcjobs.sqlite"
    monkeypatch.setenv("MINIENGINE_DB", str(path))
    return path


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def daemon(db: Path) -> Iterator[DaemonGuard]:
    with DaemonGuard(db) as guard:
        yield guard


def ssh_bash(server: SshServer, tmp_path: Path, db: Path) -> InstalledCode:
    """``/bin/bash`` on a ``core.ssh`` + ``core.direct`` computer that is this machine's sshd."""
    workdir = tmp_path / "remote"
    workdir.mkdir(exist_ok=True)
    computer = Computer(
        "sshd",
        server.host,
        transport_type="core.ssh",
        scheduler_type="core.direct",
        workdir=str(workdir),
    ).store()
    computer.configure(**server.transport_params(), safe_interval=0)
    computer.set_minimum_job_poll_interval(0.1)
    return InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash").store()


def accepted_logins(server: SshServer) -> int:
    return sum("Accepted publickey" in line for line in server.log)


def test_a_job_over_ssh_is_uploaded_run_retrieved_and_parsed(
    sshd: SshServer, tmp_path: Path, db: Path
) -> None:
    code = ssh_bash(sshd, tmp_path, db)
    counter = tmp_path / "counter"
    result, node = run.get_node(
        ArithmeticAddCalculation,
        code=code,
        x=Int(4),
        y=Int(5),
        counter=Str(str(counter)),
        metadata=OPTIONS,
    )
    assert node.is_finished_ok, (node.process_state, node.exception, node.exit_status)
    assert result["sum"] == 9
    workdir = Path(node.get_remote_workdir())
    assert workdir.is_relative_to(tmp_path / "remote")
    assert (workdir / "aiida.in").read_text() == "4 5\n"  # uploaded over SFTP
    assert (workdir / "aiida.out").read_text().strip() == "9"  # written by the remote program
    assert node.outputs.retrieved.get_object_content("aiida.out").strip() == "9"
    assert counter.read_text() == "ran\n"
    assert node.get_program_exit_statuses() == {0: 0}
    assert node.computer.transport_type == "core.ssh"


def test_a_portable_code_is_uploaded_and_run_over_ssh(
    sshd: SshServer, tmp_path: Path, db: Path
) -> None:
    computer = ssh_bash(sshd, tmp_path, db).computer
    program = tmp_path / "program"
    program.mkdir()
    (program / "add.sh").write_text(PORTABLE_SCRIPT)
    code = PortableCode(filepath_files=program, filepath_executable="add.sh", label="add").store()
    counter = tmp_path / "counter"
    result, node = run.get_node(
        PortableAddCalculation,
        code=code,
        x=Int(6),
        y=Int(7),
        counter=Str(str(counter)),
        metadata={"computer": computer, "options": {"resources": RESOURCES}},
    )
    assert node.is_finished_ok, (node.process_state, node.exception, node.exit_status)
    assert result["sum"] == 13
    workdir = Path(node.get_remote_workdir())
    assert os.access(workdir / "add.sh", os.X_OK)  # uploaded executable
    assert counter.read_text() == "ran\n"


def play_on_the_command_line(pk: int, db: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "miniengine", "process", "play", str(pk)],
        env=python_env(db),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("moment", ["before-upload", "while-running"])
def test_sshd_stopped_backs_off_pauses_and_play_after_a_restart_finishes_the_job_once(
    daemon: DaemonGuard,
    sshd: SshServer,
    tmp_path: Path,
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
    moment: str,
) -> None:
    monkeypatch.setenv("MINIENGINE_TRANSPORT_BACKOFF", "0.05")
    monkeypatch.setenv("MINIENGINE_TRANSPORT_ATTEMPTS", "3")
    code = ssh_bash(sshd, tmp_path, db)
    counter = tmp_path / "counter"
    gate = tmp_path / "gate"
    if moment == "before-upload":
        sshd.stop()
        gate.touch()
    daemon.start("--workers", "1", "--lease-timeout", "2")
    node = submit(
        ArithmeticAddCalculation,
        code=code,
        x=Int(20),
        y=Int(22),
        counter=Str(str(counter)),
        gate=Str(str(gate)),
        metadata=OPTIONS,
    )
    stage = "upload"
    if moment == "while-running":
        stage = "update"
        wait_until(lambda: load_node(node.pk).get_state() == "withscheduler", TIMEOUT, "the job")
        wait_until(counter.exists, TIMEOUT, "the program to start")
        sshd.stop()
        gate.touch()  # the job ends while nobody can reach the computer
    wait_until(lambda: load_node(node.pk).paused, TIMEOUT, "the process to be paused")
    paused = load_node(node.pk)
    assert not paused.is_terminated
    assert paused.process_status.startswith("Pausing after failed transport task")
    assert f"{stage} failed 3 times" in paused.process_status
    assert "TransportError" in paused.process_status
    if stage == "upload":  # each failed attempt of a stage is in the process's log
        retries = [
            log for log in paused.logs if log.levelname == "WARNING" and "attempt" in log.message
        ]
        assert len(retries) == 2  # attempts 1 and 2 were retried after a backoff, the 3rd paused
    assert paused.lease[0] is None  # it holds no worker slot while paused
    with running_sshd(
        tmp_path / "sshd-again",
        port=sshd.port,
        host_key=sshd.host_key,
        user_key=sshd.key_filename,
    ):
        play_on_the_command_line(node.pk, db)
        await_node(node, timeout=TIMEOUT)
        node = load_node(node.pk)
        assert node.is_finished_ok, (node.process_state, node.exception, node.exit_status)
        assert node.outputs.sum == 42
    assert counter.read_text() == "ran\n"  # the program ran exactly once


def test_a_worker_opens_one_ssh_connection_for_many_concurrent_jobs(
    daemon: DaemonGuard, sshd: SshServer, tmp_path: Path, db: Path
) -> None:
    code = ssh_bash(sshd, tmp_path, db)
    gate = tmp_path / "gate"
    daemon.start("--workers", "1", "--lease-timeout", "2")
    nodes = [
        submit(
            ArithmeticAddCalculation,
            code=code,
            x=Int(index),
            y=Int(1),
            gate=Str(str(gate)),
            counter=Str(str(tmp_path / f"counter-{index}")),
            metadata=OPTIONS,
        )
        for index in range(6)
    ]
    wait_until(
        lambda: all(load_node(n.pk).get_state() == "withscheduler" for n in nodes),
        TIMEOUT,
        "every job with the scheduler",
    )
    gate.touch()
    for index, node in enumerate(nodes):
        await_node(node, timeout=TIMEOUT)
        node = load_node(node.pk)
        assert node.is_finished_ok, (node.process_state, node.exception, node.exit_status)
        assert node.outputs.sum == index + 1
    assert accepted_logins(sshd) == 1, [line for line in sshd.log if "Accepted" in line]


def test_the_calcjobs_of_a_run_mode_workchain_share_one_ssh_connection(
    sshd: SshServer, tmp_path: Path, db: Path
) -> None:
    code = ssh_bash(sshd, tmp_path, db)
    outputs, chain = run.get_node(AddTwiceWorkChain, code=code, x=Int(3), y=Int(4))
    assert chain.is_finished_ok, (chain.process_state, chain.exception)
    assert outputs["total"] == (3 + 4) + (4 + 4)
    jobs = [child for child in chain.called if child.process_label == "ArithmeticAddCalculation"]
    assert len(jobs) == 2 and all(job.is_finished_ok for job in jobs)
    assert accepted_logins(sshd) == 1, [line for line in sshd.log if "Accepted" in line]
