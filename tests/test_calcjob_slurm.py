"""CalcJobs through ``core.local`` + ``core.slurm`` on a real single-node SLURM the tests start.

The cluster (munged, slurmctld, slurmd) lives in a temp folder (:mod:`tests.services.slurm`); its
client commands find it through ``SLURM_CONF``, which these tests set in their own environment, so
that run mode and the daemon's workers (which inherit it) reach it, as a user's login environment
does on a real cluster.  The daemon tests run a real supervisor with real worker processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from miniengine import Computer, InstalledCode, Int, Str, await_node, load_node, run, submit
from miniengine.control import kill_processes
from tests.services.slurm import SlurmCluster, running_slurm
from tests.workchains.calcjob_plugins import ArithmeticAddCalculation
from tests.workchains.calcjob_remote_plugins import UnparsedAddCalculation
from tests.workchains.daemon_chains import DaemonGuard, alive, wait_until

RESOURCES = {"num_machines": 1, "num_mpiprocs_per_machine": 1}
OPTIONS = {"options": {"resources": RESOURCES}}
#: submitted held: the job waits in the queue until ``scontrol release``
HELD = {"options": {"resources": RESOURCES, "custom_scheduler_commands": "#SBATCH -H"}}
TIMEOUT = 60


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with running_slurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture
def db(tmp_path: Path, slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    path = tmp_path / "calcjobs.sqlite"
    monkeypatch.setenv("MINIENGINE_DB", str(path))
    return path


@pytest.fixture
def daemon(db: Path) -> Iterator[DaemonGuard]:
    with DaemonGuard(db) as guard:
        yield guard


@pytest.fixture
def code(db: Path, tmp_path: Path) -> InstalledCode:
    """``/bin/bash`` on a ``core.local`` + ``core.slurm`` computer."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    computer = Computer(
        "slurm",
        "localhost",
        transport_type="core.local",
        scheduler_type="core.slurm",
        workdir=str(workdir),
    ).store()
    computer.configure(use_login_shell=False)
    computer.set_minimum_job_poll_interval(0.2)
    return InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash").store()


def squeue(*args: str) -> list[list[str]]:
    """``squeue --states=all`` lines (job id, compact state, working folder) for the jobs
    ``args`` select."""
    completed = subprocess.run(
        ["squeue", "--states=all", "--noheader", "-o", "%i|%t|%Z", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.split("|") for line in completed.stdout.splitlines() if line.strip()]


def jobs_of(node: Any) -> list[list[str]]:
    """(job id, state) of every job SLURM knows (finished ones too) that ran in the working
    folder of ``node``: a job submitted twice would be there twice."""
    workdir = os.path.realpath(node.get_remote_workdir())
    return [
        [job_id, state] for job_id, state, folder in squeue() if os.path.realpath(folder) == workdir
    ]


def job_state(job_id: str) -> str | None:
    found = squeue(f"--jobs={job_id}")
    return found[0][1] if found else None


def test_a_job_on_slurm_runs_and_is_parsed(code: InstalledCode, tmp_path: Path) -> None:
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
    job_id = node.get_job_id()
    assert job_id is not None and job_id.isdigit()
    assert jobs_of(node) == [[job_id, "CD"]]
    script = (Path(node.get_remote_workdir()) / "_aiidasubmit.sh").read_text()
    assert "#SBATCH" in script
    assert counter.read_text() == "ran\n"
    assert node.get_program_exit_statuses() == {0: 0}
    assert node.get_scheduler_state() == "done"


@pytest.mark.long
def test_a_job_over_its_walltime_is_error_scheduler_out_of_walltime(
    code: InstalledCode, tmp_path: Path
) -> None:
    """SLURM's limits have minute granularity: the job is ended about a minute in, and
    slurmctld looks every 30 s, so this takes 60-90 s (``-m long``; the parsing of SLURM's
    TIMEOUT state into ERROR_SCHEDULER_OUT_OF_WALLTIME is checked on fixtures by default)."""
    counter = tmp_path / "counter"
    _, node = run.get_node(
        UnparsedAddCalculation,
        code=code,
        x=Int(1),
        y=Int(2),
        counter=Str(str(counter)),
        gate=Str(str(tmp_path / "never")),  # runs until SLURM ends it
        metadata={"options": {"resources": RESOURCES, "max_wallclock_seconds": 60}},
    )
    codes = UnparsedAddCalculation.exit_codes
    assert node.is_finished and not node.is_excepted
    assert node.exit_status == 120, (node.exit_status, node.exit_message)
    assert node.exit_status == codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status
    assert job_state(node.get_job_id()) == "TO"
    assert counter.read_text() == "ran\n"


@pytest.mark.parametrize("moment", ["queued", "running"])
def test_a_kill_cancels_the_slurm_job(
    daemon: DaemonGuard, code: InstalledCode, tmp_path: Path, moment: str
) -> None:
    counter = tmp_path / "counter"
    daemon.start("--workers", "1", "--lease-timeout", "2")
    node = submit(
        ArithmeticAddCalculation,
        code=code,
        x=Int(1),
        y=Int(1),
        counter=Str(str(counter)),
        gate=Str(str(tmp_path / "never")),
        metadata=HELD if moment == "queued" else OPTIONS,
    )
    wait_until(lambda: load_node(node.pk).get_state() == "withscheduler", TIMEOUT, "the job")
    job_id = load_node(node.pk).get_job_id()
    if moment == "queued":
        assert job_state(job_id) == "PD"
    else:
        wait_until(counter.exists, TIMEOUT, "the program to start")
        assert job_state(job_id) == "R"
    kill_processes([node.pk], wait=True, timeout=TIMEOUT)
    assert load_node(node.pk).is_killed
    # scancel comes from the worker's job watcher: ask SLURM until it says so
    wait_until(lambda: job_state(job_id) == "CA", TIMEOUT, "the job to be cancelled")
    assert jobs_of(load_node(node.pk)) == [[job_id, "CA"]]  # gone from the queue, never resubmitted
    if moment == "queued":
        assert not counter.exists()  # it never ran


def gated_slurm_code(tmp_path: Path) -> InstalledCode:
    """``bash`` on SLURM through a ``core.local`` that can hold the worker right after sbatch
    answered, before the job id is committed (``HOLD-submitted`` in the work folder)."""
    workdir = tmp_path / "gated"
    workdir.mkdir()
    (workdir / "ROOT").touch()  # where the gated transport looks for its flags
    computer = Computer(
        "gated-slurm",
        "localhost",
        transport_type="tests.workchains.calcjob_plugins:GatedTransport",
        scheduler_type="core.slurm",
        workdir=str(workdir),
    ).store()
    computer.configure(use_login_shell=False)
    computer.set_minimum_job_poll_interval(0.2)
    return InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash").store()


@pytest.mark.parametrize("moment", ["submitted", "queued", "running"])
def test_a_sigkilled_worker_is_followed_by_one_that_neither_submits_again_nor_reruns(
    daemon: DaemonGuard, code: InstalledCode, tmp_path: Path, moment: str
) -> None:
    counter = tmp_path / "counter"
    gate = tmp_path / "gate"
    if moment != "running":
        gate.touch()
    if moment == "submitted":  # SIGKILLed between sbatch's answer and the commit of the job id
        code = gated_slurm_code(tmp_path)
        (tmp_path / "gated" / "HOLD-submitted").touch()
    daemon.start("--workers", "1", "--lease-timeout", "1")
    node = submit(
        ArithmeticAddCalculation,
        code=code,
        x=Int(20),
        y=Int(22),
        counter=Str(str(counter)),
        gate=Str(str(gate)),
        metadata=HELD if moment == "queued" else OPTIONS,
    )
    if moment == "submitted":
        at = tmp_path / "gated" / "AT-submitted"
        wait_until(at.exists, TIMEOUT, "the worker to hold after sbatch")
        job_id = None
    else:
        wait_until(lambda: load_node(node.pk).get_state() == "withscheduler", TIMEOUT, "the job")
        job_id = load_node(node.pk).get_job_id()
    if moment == "running":
        wait_until(counter.exists, TIMEOUT, "the program to start")
    (worker,) = daemon.worker_pids()
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not alive(worker), TIMEOUT, "the worker to die")
    wait_until(
        lambda: worker not in daemon.worker_pids() and daemon.worker_pids(), TIMEOUT, "a new worker"
    )
    if moment == "submitted":
        (tmp_path / "gated" / "HOLD-submitted").unlink()
    elif moment == "queued":
        assert job_id is not None and job_state(job_id) == "PD"
        subprocess.run(["scontrol", "release", job_id], check=True, capture_output=True)
    else:
        gate.touch()
    await_node(node, timeout=TIMEOUT)
    node = load_node(node.pk)
    assert node.is_finished_ok, (node.process_state, node.exception, node.exit_status)
    assert node.outputs.sum == 42
    if job_id is None:
        job_id = node.get_job_id()
    assert node.get_job_id() == job_id
    assert jobs_of(node) == [[job_id, "CD"]]  # submitted once
    assert counter.read_text() == "ran\n"  # the program ran once
