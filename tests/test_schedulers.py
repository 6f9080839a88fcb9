"""Scheduler plugins: submit scripts run by a real bash, and SLURM's outputs parsed from records."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miniengine.schedulers import (
    EXIT_STATUS_FILENAME,
    CodeRunMode,
    JobState,
    JobTemplate,
    JobTemplateCodeInfo,
    NodeNumberJobResource,
    SchedulerError,
    SchedulerFactory,
    SchedulerParsingError,
    SubmissionRefusedError,
    load_scheduler,
    parse_exit_statuses,
)
from miniengine.schedulers.direct import DirectScheduler
from miniengine.schedulers.escaping import escape_for_bash
from miniengine.schedulers.slurm import SlurmScheduler, parse_slurm_time

# resources ----------------------------------------------------------------------------------------


def test_two_of_three_resource_counts_determine_the_third() -> None:
    assert NodeNumberJobResource(num_machines=2, tot_num_mpiprocs=8).num_mpiprocs_per_machine == 4
    assert NodeNumberJobResource(num_mpiprocs_per_machine=4, tot_num_mpiprocs=8).num_machines == 2
    resource = NodeNumberJobResource(num_machines=3, num_mpiprocs_per_machine=2)
    assert resource.get_tot_num_mpiprocs() == 6


@pytest.mark.parametrize(
    ("resources", "named"),
    [
        ({"num_machines": 2, "num_mpiprocs_per_machine": 2, "tot_num_mpiprocs": 5}, "tot_num"),
        ({"num_machines": 2, "tot_num_mpiprocs": 5}, "tot_num_mpiprocs=5"),
        ({"num_machines": 0, "num_mpiprocs_per_machine": 1}, "num_machines"),
        ({"num_machines": 1.5, "num_mpiprocs_per_machine": 1}, "num_machines"),
        ({"num_machines": True, "num_mpiprocs_per_machine": 1}, "num_machines"),
        ({"num_machines": 1}, "num_mpiprocs_per_machine"),
        ({"num_machines": 1, "num_mpiprocs_per_machine": 1, "gpus": 2}, "gpus"),
        (
            {
                "num_machines": 1,
                "num_mpiprocs_per_machine": 2,
                "num_cores_per_machine": 3,
                "num_cores_per_mpiproc": 2,
            },
            "num_cores_per_machine",
        ),
    ],
)
def test_bad_resources_raise_value_error_naming_the_key(
    resources: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        NodeNumberJobResource(**resources)


def test_computer_default_fills_mpiprocs_per_machine_only_when_missing() -> None:
    resources: dict[str, object] = {"num_machines": 2}
    SlurmScheduler.preprocess_resources(resources, default_mpiprocs_per_machine=16)
    assert resources["num_mpiprocs_per_machine"] == 16
    given_resources: dict[str, object] = {"num_machines": 2, "num_mpiprocs_per_machine": 4}
    SlurmScheduler.preprocess_resources(given_resources, default_mpiprocs_per_machine=16)
    assert given_resources["num_mpiprocs_per_machine"] == 4


# quoting ------------------------------------------------------------------------------------------


def _bash_echo(word: str) -> str:
    result = subprocess.run(
        ["bash", "-c", f"printf '%s' {word}"],
        capture_output=True,
        check=True,
        env={"PATH": os.environ["PATH"], "HOME": "/home/someone"},
    )
    return result.stdout.decode()


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=30))
def test_single_quoted_values_reach_the_program_unchanged(value: str) -> None:
    assert _bash_echo(escape_for_bash(value)) == value


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\x00$", codec="utf-8"), max_size=30))
def test_double_quoted_values_without_variables_reach_the_program_unchanged(value: str) -> None:
    assert _bash_echo(escape_for_bash(value, use_double_quotes=True)) == value


def test_double_quotes_expand_variables_but_never_run_commands() -> None:
    assert _bash_echo(escape_for_bash("$HOME/run", use_double_quotes=True)) == "/home/someone/run"
    assert _bash_echo(escape_for_bash("$(id)`id`", use_double_quotes=True)) == "$(id)`id`"


# the direct scheduler, run for real ---------------------------------------------------------------


def _submit(scheduler: DirectScheduler, template: JobTemplate, folder: Path) -> str:
    (folder / "job.sh").write_text(scheduler.get_submit_script(template))
    result = subprocess.run(
        ["bash", "-c", scheduler._get_submit_command("job.sh")],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return scheduler._parse_submit_output(result.returncode, result.stdout, result.stderr)


def _state(scheduler: DirectScheduler, job_id: str) -> JobState:
    result = subprocess.run(
        ["bash", "-c", scheduler._get_joblist_command(jobs=[job_id])],
        capture_output=True,
        text=True,
        timeout=30,
    )
    jobs = scheduler.get_jobs_from_output([job_id], result.returncode, result.stdout, result.stderr)
    return jobs[job_id].job_state


def _wait_done(scheduler: DirectScheduler, job_id: str) -> None:
    """Ask the scheduler, as the engine will, until the job is gone (the job is not our child,
    so there is nothing to await but its absence from ``ps``)."""
    deadline = time.monotonic() + 60
    while _state(scheduler, job_id) is not JobState.DONE:
        assert time.monotonic() < deadline, f"job {job_id} still running after 60 s"
        time.sleep(0.05)


def _template(*programs: list[str], **options: object) -> JobTemplate:
    infos = [
        JobTemplateCodeInfo(cmdline_params=program, stdout_name=f"out{index}.txt")
        for index, program in enumerate(programs)
    ]
    template = JobTemplate(
        codes_info=infos,
        sched_output_path="_scheduler-stdout.txt",
        sched_error_path="_scheduler-stderr.txt",
    )
    for key, value in options.items():
        setattr(template, key, value)
    return template


def test_direct_job_runs_every_program_and_records_each_exit_status(tmp_path: Path) -> None:
    scheduler = DirectScheduler()
    template = _template(
        ["bash", "-c", 'echo "hello $GREETING"'],
        ["bash", "-c", "exit 3"],
        ["echo", "it's; rm -rf $HOME"],
        job_environment={"GREETING": "world's"},
        prepend_text="echo prepended > prepend.txt",
        append_text="echo appended > append.txt",
    )
    job_id = _submit(scheduler, template, tmp_path)
    _wait_done(scheduler, job_id)
    assert (tmp_path / "out0.txt").read_text() == "hello world's\n"
    assert (tmp_path / "out2.txt").read_text() == "it's; rm -rf $HOME\n"
    assert parse_exit_statuses((tmp_path / EXIT_STATUS_FILENAME).read_text()) == {0: 0, 1: 3, 2: 0}
    assert (tmp_path / "prepend.txt").read_text() == "prepended\n"
    assert (tmp_path / "append.txt").read_text() == "appended\n"


def test_parallel_programs_are_all_waited_for(tmp_path: Path) -> None:
    scheduler = DirectScheduler()
    template = _template(
        ["bash", "-c", "exit 4"],
        ["bash", "-c", "echo two"],
        codes_run_mode=CodeRunMode.PARALLEL,
    )
    _wait_done(scheduler, _submit(scheduler, template, tmp_path))
    assert parse_exit_statuses((tmp_path / EXIT_STATUS_FILENAME).read_text()) == {0: 4, 1: 0}
    assert (tmp_path / "out1.txt").read_text() == "two\n"


def _pids_in_group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                continue
    return pids


def test_killing_a_direct_job_ends_the_programs_it_started(tmp_path: Path) -> None:
    scheduler = DirectScheduler()
    template = _template(["bash", "-c", "touch started; sleep 300"])
    job_id = _submit(scheduler, template, tmp_path)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _state(scheduler, job_id) is JobState.RUNNING
    assert len(_pids_in_group(int(job_id))) >= 2  # the script and the program's sleep
    result = subprocess.run(
        ["bash", "-c", scheduler._get_kill_command(job_id)], capture_output=True, text=True
    )
    assert scheduler._parse_kill_output(result.returncode, result.stdout, result.stderr)
    _wait_done(scheduler, job_id)
    deadline = time.monotonic() + 30
    while _pids_in_group(int(job_id)):
        assert time.monotonic() < deadline, "the job's programs outlived the kill"
        time.sleep(0.02)


def test_direct_walltime_ends_the_job_and_reads_as_out_of_walltime(tmp_path: Path) -> None:
    scheduler = DirectScheduler()
    template = _template(["sleep", "300"], max_wallclock_seconds=1)
    _wait_done(scheduler, _submit(scheduler, template, tmp_path))
    stderr = (tmp_path / "_scheduler-stderr.txt").read_text()
    assert scheduler.parse_output(stderr=stderr) == "ERROR_SCHEDULER_OUT_OF_WALLTIME"
    assert not (tmp_path / EXIT_STATUS_FILENAME).exists()  # cut off before the program ended


def test_a_finished_quick_job_leaves_no_watchdog_behind(tmp_path: Path) -> None:
    scheduler = DirectScheduler()
    template = _template(["true"], max_wallclock_seconds=300)
    job_id = _submit(scheduler, template, tmp_path)
    _wait_done(scheduler, job_id)
    deadline = time.monotonic() + 30
    while _pids_in_group(int(job_id)):
        assert time.monotonic() < deadline, "the walltime watchdog outlived its job"
        time.sleep(0.02)
    assert scheduler.parse_output(stderr=(tmp_path / "_scheduler-stderr.txt").read_text()) is None


def test_direct_scheduler_refuses_ids_that_are_not_pids() -> None:
    scheduler = DirectScheduler()
    with pytest.raises(ValueError, match="not a pid"):
        scheduler._get_kill_command("1; rm -rf /")
    with pytest.raises(ValueError, match="not a pid"):
        scheduler._get_joblist_command(jobs=["12", "$(id)"])
    with pytest.raises(SchedulerParsingError, match="pid"):
        scheduler._parse_submit_output(0, "bash: setsid: not found\n", "")


def test_a_template_without_programs_is_refused() -> None:
    with pytest.raises(ValueError, match="codes_info"):
        DirectScheduler().get_submit_script(JobTemplate())


# SLURM, from recorded outputs ---------------------------------------------------------------------


def _slurm_template(**options: object) -> JobTemplate:
    template = JobTemplate(
        codes_info=[
            JobTemplateCodeInfo(
                prepend_cmdline_params=["mpirun", "-np", "8"],
                cmdline_params=["pw.x", "-in", "x"],
                stdout_name="aiida.out",
                stderr_name="aiida.err",
            )
        ],
        job_resource=SlurmScheduler.create_job_resource(num_machines=2, num_mpiprocs_per_machine=4),
        job_name="my job: relax #1",
        sched_output_path="_scheduler-stdout.txt",
        sched_error_path="_scheduler-stderr.txt",
    )
    for key, value in options.items():
        setattr(template, key, value)
    return template


def test_slurm_script_carries_every_option() -> None:
    script = SlurmScheduler().get_submit_script(
        _slurm_template(
            queue_name="debug",
            account="proj1",
            qos="high",
            max_wallclock_seconds=90061,
            max_memory_kb=2048000,
            custom_scheduler_commands="#SBATCH --constraint=gpu",
            rerunnable=True,
        )
    )
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for expected in (
        "#SBATCH --requeue",
        '#SBATCH --job-name="myjobrelax1"',
        "#SBATCH --partition=debug",
        "#SBATCH --account=proj1",
        "#SBATCH --qos=high",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --time=1-01:01:01",
        "#SBATCH --mem=2000",
        "#SBATCH --constraint=gpu",
        "#SBATCH --output=_scheduler-stdout.txt",
        "#SBATCH --error=_scheduler-stderr.txt",
        "'mpirun' '-np' '8' 'pw.x' '-in' 'x' > 'aiida.out' 2> 'aiida.err'",
        f'echo "0 $?" >> {EXIT_STATUS_FILENAME}',
    ):
        assert expected in lines, expected
    # the directives come before the first command, or SLURM ignores them
    assert max(i for i, line in enumerate(lines) if line.startswith("#SBATCH")) < lines.index(
        "'mpirun' '-np' '8' 'pw.x' '-in' 'x' > 'aiida.out' 2> 'aiida.err'"
    )


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("max_wallclock_seconds", 0, "max_wallclock_seconds"),
        ("max_wallclock_seconds", "3600", "max_wallclock_seconds"),
        ("max_memory_kb", -1, "max_memory_kb"),
        ("account", 'x"\n#SBATCH --uid=0', "account"),
        ("job_resource", None, "resources"),
    ],
)
def test_slurm_refuses_bad_options_naming_them(option: str, value: object, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SlurmScheduler().get_submit_script(_slurm_template(**{option: value}))


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("12345\n", "12345"),
        ("12345;cluster1\n", "12345"),
        ("Submitted batch job 777\n", "777"),
        ("sbatch: Submitted batch job 778\n", "778"),
    ],
)
def test_sbatch_output_gives_the_job_id(stdout: str, expected: str) -> None:
    assert SlurmScheduler()._parse_submit_output(0, stdout, "") == expected


def test_sbatch_refusals_are_errors_and_an_invalid_account_names_its_exit_code() -> None:
    scheduler = SlurmScheduler()
    with pytest.raises(SubmissionRefusedError) as refused:
        scheduler._parse_submit_output(
            1,
            "",
            "sbatch: error: Batch job submission failed: Invalid account or "
            "account/partition combination specified\n",
        )
    assert refused.value.exit_code_label == "ERROR_SCHEDULER_INVALID_ACCOUNT"
    with pytest.raises(SchedulerError, match="exit 1"):
        scheduler._parse_submit_output(1, "", "sbatch: error: Unable to contact slurm controller")
    with pytest.raises(SchedulerParsingError):
        scheduler._parse_submit_output(0, "nothing useful\n", "")


SQUEUE = "\n".join(
    [
        "101^^^R^^^None^^^alice^^^2^^^8^^^node[01-02]^^^debug^^^1:00:00^^^12:34^^^relax",
        "102^^^PD^^^Resources^^^alice^^^1^^^4^^^(Resources)^^^debug^^^UNLIMITED^^^0:00^^^scf",
        "103^^^PD^^^Dependency^^^alice^^^1^^^4^^^(Dependency)^^^debug^^^30:00^^^0:00^^^nscf",
        "104^^^CG^^^None^^^alice^^^1^^^4^^^node01^^^debug^^^2-00:00:00^^^1-02:03:04^^^a^^^b",
        "105^^^XX^^^None^^^alice^^^1^^^4^^^node01^^^debug^^^NOT_SET^^^0:01^^^odd",
        "",
    ]
)


def test_squeue_output_maps_states_reasons_and_times() -> None:
    jobs = {job.job_id: job for job in SlurmScheduler()._parse_joblist_output(0, SQUEUE, "")}
    assert jobs["101"].job_state is JobState.RUNNING
    assert jobs["101"].wallclock_time_seconds == 754
    assert jobs["101"].requested_wallclock_time_seconds == 3600
    assert jobs["101"].allocated_machines_raw == "node[01-02]"
    assert jobs["101"].num_machines == 2 and jobs["101"].num_mpiprocs == 8
    assert jobs["102"].job_state is JobState.QUEUED
    assert jobs["102"].requested_wallclock_time_seconds == 2**31 - 1
    assert jobs["103"].job_state is JobState.QUEUED_HELD
    assert jobs["104"].job_state is JobState.RUNNING
    assert jobs["104"].wallclock_time_seconds == 93784
    assert jobs["104"].title == "a^^^b"  # the name is the last field, separators and all
    assert jobs["105"].job_state is JobState.UNDETERMINED
    assert jobs["105"].requested_wallclock_time_seconds is None


def test_one_squeue_covers_many_jobs_and_a_single_job_is_asked_twice() -> None:
    scheduler = SlurmScheduler()
    assert "--states=all --jobs=1,2,3" in scheduler._get_joblist_command(jobs=["1", "2", "3"])
    assert "--jobs=7,7" in scheduler._get_joblist_command(jobs=["7"])
    with pytest.raises(ValueError, match="not a SLURM job id"):
        scheduler._get_joblist_command(jobs=["1,2"])
    with pytest.raises(SchedulerError, match="exit 1"):
        scheduler._parse_joblist_output(1, "", "slurm_load_jobs error: Unable to contact")
    with pytest.raises(SchedulerParsingError):
        scheduler._parse_joblist_output(0, "101^^^R^^^cut", "")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 300),
        ("5:06", 306),
        ("1:02:03", 3723),
        ("2-3", 2 * 86400 + 3 * 3600),
        ("2-3:04", 2 * 86400 + 3 * 3600 + 240),
        ("2-03:04:05", 2 * 86400 + 3 * 3600 + 245),
        ("UNLIMITED", 2**31 - 1),
        ("NOT_SET", None),
        ("INVALID", None),
        ("", None),
    ],
)
def test_slurm_time_formats(text: str, seconds: int | None) -> None:
    assert parse_slurm_time(text) == seconds


def _sacct(*rows: str) -> dict[str, str | int]:
    header = "JobID|State|ExitCode|Elapsed|Timelimit|MaxRSS|ReqMem"
    return {"retval": 0, "stdout": "\n".join([header, *rows]) + "\n", "stderr": ""}


@pytest.mark.parametrize(
    ("info", "stderr", "label"),
    [
        (
            _sacct("9|TIMEOUT|0:0|00:01:00|00:01:00||1G", "9.batch|CANCELLED|0:15|||"),
            None,
            "ERROR_SCHEDULER_OUT_OF_WALLTIME",
        ),
        (
            _sacct("9|FAILED|0:0|||", "9.batch|OUT_OF_MEMORY|0:125|||"),
            None,
            "ERROR_SCHEDULER_OUT_OF_MEMORY",
        ),
        (_sacct("9|NODE_FAIL|0:0|||"), None, "ERROR_SCHEDULER_NODE_FAILURE"),
        (_sacct("9|COMPLETED|0:0|||"), None, None),
        (_sacct("9|CANCELLED by 0|0:0|||"), None, None),
        (
            None,
            "slurmstepd: error: *** JOB 9 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO "
            "TIME LIMIT ***",
            "ERROR_SCHEDULER_OUT_OF_WALLTIME",
        ),
        (
            None,
            "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=9.batch.",
            "ERROR_SCHEDULER_OUT_OF_MEMORY",
        ),
        (None, "", None),
    ],
)
def test_slurm_verdicts_become_calcjob_exit_code_labels(
    info: dict[str, str | int] | None, stderr: str | None, label: str | None
) -> None:
    assert SlurmScheduler().parse_output(detailed_job_info=info, stderr=stderr) == label


def test_exit_status_file_format_is_checked() -> None:
    assert parse_exit_statuses("0 0\n1 137\n\n") == {0: 0, 1: 137}
    with pytest.raises(SchedulerParsingError, match="not '<index> <status>'"):
        parse_exit_statuses("0 0\ngarbage\n")


# finding plugins ----------------------------------------------------------------------------------


def test_plugins_are_found_by_name_and_by_class_path() -> None:
    assert SchedulerFactory("core.direct") is DirectScheduler
    assert SchedulerFactory("core.slurm") is SlurmScheduler
    assert SchedulerFactory("miniengine.schedulers.slurm:SlurmScheduler") is SlurmScheduler
    assert SchedulerFactory("miniengine.schedulers.direct.DirectScheduler") is DirectScheduler
    assert isinstance(load_scheduler("core.slurm"), SlurmScheduler)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("core.pbs", "no plugin named 'core.pbs'"),
        ("no.such.module:Thing", "cannot load the plugin"),
        ("miniengine.schedulers.escaping:escape_for_bash", "not a Scheduler"),
    ],
)
def test_unknown_plugins_raise_value_errors_naming_them(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SchedulerFactory(name)
