"""The SLURM scheduler plugin against a real single-node SLURM started by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from miniengine.schedulers import (
    EXIT_STATUS_FILENAME,
    JobInfo,
    JobState,
    JobTemplate,
    JobTemplateCodeInfo,
    parse_exit_statuses,
)
from miniengine.schedulers.slurm import SlurmScheduler
from miniengine.transports.local import LocalTransport
from tests.services.slurm import SlurmCluster, running_slurm

SCHEDULER = SlurmScheduler()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with running_slurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def _slurm_conf(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))


def _template(*programs: list[str], **options: object) -> JobTemplate:
    template = JobTemplate(
        codes_info=[
            JobTemplateCodeInfo(cmdline_params=program, stdout_name=f"out{index}.txt")
            for index, program in enumerate(programs)
        ],
        job_resource=SCHEDULER.create_job_resource(num_machines=1, num_mpiprocs_per_machine=1),
        job_name="miniengine-test",
        sched_output_path="_scheduler-stdout.txt",
        sched_error_path="_scheduler-stderr.txt",
    )
    for key, value in options.items():
        setattr(template, key, value)
    return template


async def _submit(transport: LocalTransport, template: JobTemplate, folder: Path) -> str:
    folder.mkdir()
    (folder / "job.sh").write_text(SCHEDULER.get_submit_script(template))
    result = await transport.exec_command_wait(
        SCHEDULER._get_submit_command("job.sh"), workdir=str(folder)
    )
    return SCHEDULER._parse_submit_output(*result)


async def _jobs(transport: LocalTransport, job_ids: list[str]) -> dict[str, JobInfo]:
    result = await transport.exec_command_wait(SCHEDULER._get_joblist_command(jobs=job_ids))
    return {job.job_id: job for job in SCHEDULER._parse_joblist_output(*result)}


async def _until(transport: LocalTransport, job_id: str, done: object, timeout: float) -> JobInfo:
    """Ask SLURM, as a worker does, until ``done(job)``: another program's state has no event
    to await."""
    assert callable(done)
    with anyio.fail_after(timeout):
        while True:
            job = (await _jobs(transport, [job_id])).get(job_id)
            if job is not None and done(job):
                return job
            await anyio.sleep(0.1)


def _ended(job: JobInfo) -> bool:
    return job.job_state is JobState.DONE


async def test_a_job_runs_its_programs_and_reports_each_status(tmp_path: Path) -> None:
    async with LocalTransport(use_login_shell=False) as transport:
        template = _template(["bash", "-c", "echo job $SLURM_JOB_ID"], ["bash", "-c", "exit 5"])
        job_id = await _submit(transport, template, tmp_path / "job")
        job = await _until(transport, job_id, _ended, 120)
    assert job.raw_data is not None and job.raw_data[1] == "CD"
    assert (tmp_path / "job" / "out0.txt").read_text() == f"job {job_id}\n"
    statuses = parse_exit_statuses((tmp_path / "job" / EXIT_STATUS_FILENAME).read_text())
    assert statuses == {0: 0, 1: 5}
    assert SCHEDULER.parse_output(detailed_job_info={"squeue_state": "CD"}) is None


async def test_one_squeue_reports_on_every_job(tmp_path: Path) -> None:
    async with LocalTransport(use_login_shell=False) as transport:
        ids = [
            await _submit(transport, _template(["true"]), tmp_path / f"job{index}")
            for index in range(3)
        ]
        for job_id in ids:
            await _until(transport, job_id, _ended, 120)
        assert set(await _jobs(transport, ids)) == set(ids)
        assert set(await _jobs(transport, ids[:1])) == {ids[0]}  # one id, asked twice


async def test_a_queued_job_is_cancelled_before_it_runs(tmp_path: Path) -> None:
    async with LocalTransport(use_login_shell=False) as transport:
        template = _template(["touch", str(tmp_path / "ran")], submit_as_hold=True)
        job_id = await _submit(transport, template, tmp_path / "job")
        held = await _until(transport, job_id, lambda job: True, 60)
        assert held.job_state is JobState.QUEUED_HELD
        result = await transport.exec_command_wait(SCHEDULER._get_kill_command(job_id))
        assert SCHEDULER._parse_kill_output(*result)
        job = await _until(transport, job_id, _ended, 60)
    assert job.raw_data is not None and job.raw_data[1] == "CA"
    assert not (tmp_path / "ran").exists()


async def test_a_running_job_is_cancelled_with_its_program(tmp_path: Path) -> None:
    started, finished = tmp_path / "started", tmp_path / "finished"
    async with LocalTransport(use_login_shell=False) as transport:
        template = _template(["bash", "-c", f"touch {started}; sleep 300; touch {finished}"])
        job_id = await _submit(transport, template, tmp_path / "job")
        with anyio.fail_after(120):
            while not started.exists():
                await anyio.sleep(0.05)
        assert (await _jobs(transport, [job_id]))[job_id].job_state is JobState.RUNNING
        result = await transport.exec_command_wait(SCHEDULER._get_kill_command(job_id))
        assert SCHEDULER._parse_kill_output(*result)
        job = await _until(transport, job_id, _ended, 60)
    assert job.raw_data is not None and job.raw_data[1] == "CA"
    assert not finished.exists()


@pytest.mark.long
async def test_a_job_over_its_walltime_reads_as_out_of_walltime(tmp_path: Path) -> None:
    """SLURM's limits have minute granularity: this job is ended about a minute in.  The same
    verdict is checked end to end (a CalcJob ending with exit code 120) in the default suite by
    test_calcjob_slurm; this scheduler-level variant runs with ``-m long``."""
    async with LocalTransport(use_login_shell=False) as transport:
        template = _template(["sleep", "600"], max_wallclock_seconds=1)
        job_id = await _submit(transport, template, tmp_path / "job")
        job = await _until(transport, job_id, _ended, 240)
    assert job.raw_data is not None
    state = job.raw_data[1]
    assert state == "TO"
    assert SCHEDULER.parse_output(detailed_job_info={"squeue_state": state}) == (
        "ERROR_SCHEDULER_OUT_OF_WALLTIME"
    )
    stderr = (tmp_path / "job" / "_scheduler-stderr.txt").read_text()
    assert SCHEDULER.parse_output(stderr=stderr) == "ERROR_SCHEDULER_OUT_OF_WALLTIME"
