"""``core.slurm``: submit with ``sbatch``, watch with one ``squeue`` for many jobs, judge with
``sacct``, cancel with ``scancel``."""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Mapping

from miniengine.schedulers.datastructures import (
    JobInfo,
    JobState,
    JobTemplate,
    NodeNumberJobResource,
)
from miniengine.schedulers.errors import (
    SchedulerError,
    SchedulerParsingError,
    SubmissionRefusedError,
)
from miniengine.schedulers.escaping import escape_for_bash
from miniengine.schedulers.scheduler import Scheduler

__all__ = ["SlurmJobResource", "SlurmScheduler"]

logger = logging.getLogger("miniengine.schedulers.slurm")

#: squeue's compact states (``%t``) mapped to job states.
_SLURM_STATES = {
    "BF": JobState.DONE,  # boot fail
    "CA": JobState.DONE,  # cancelled
    "CD": JobState.DONE,  # completed
    "CF": JobState.QUEUED,  # configuring
    "CG": JobState.RUNNING,  # completing
    "DL": JobState.DONE,  # deadline
    "F": JobState.DONE,  # failed
    "NF": JobState.DONE,  # node fail
    "OOM": JobState.DONE,  # out of memory
    "PD": JobState.QUEUED,  # pending
    "PR": JobState.DONE,  # preempted
    "R": JobState.RUNNING,
    "RD": JobState.QUEUED_HELD,  # resv del hold
    "RF": JobState.QUEUED,  # requeue fed
    "RH": JobState.QUEUED_HELD,  # requeue hold
    "RQ": JobState.QUEUED,  # requeued
    "RS": JobState.SUSPENDED,  # resizing
    "S": JobState.SUSPENDED,
    "SE": JobState.QUEUED,  # special exit
    "ST": JobState.RUNNING,  # stopped, holds its allocation
    "TO": JobState.DONE,  # timeout
}

#: How a job ended, from squeue's compact state of a finished job, as CalcJob exit code labels.
_FINAL_STATE_VERDICTS = {
    "TO": "ERROR_SCHEDULER_OUT_OF_WALLTIME",
    "OOM": "ERROR_SCHEDULER_OUT_OF_MEMORY",
    "NF": "ERROR_SCHEDULER_NODE_FAILURE",
}

#: Reasons (``%r``) that mean a pending job is held rather than waiting for resources.
_HELD_REASONS = frozenset({"Dependency", "JobHeldUser", "JobHeldAdmin", "BeginTime"})

#: The squeue fields asked for, in order; the job name goes last because it may contain anything.
_FIELDS = (
    ("%i", "job_id"),
    ("%t", "state"),
    ("%r", "annotation"),
    ("%u", "username"),
    ("%D", "number_nodes"),
    ("%C", "number_cpus"),
    ("%R", "allocated_machines"),
    ("%P", "partition"),
    ("%l", "time_limit"),
    ("%M", "time_used"),
    ("%j", "job_name"),
)
_SEPARATOR = "^^^"

_SUBMITTED = re.compile(
    r"^(?:.*:\s*)?(?:[Ss]ubmitted batch job\s+)?(?P<jobid>\d+)(?:;\S+)?\s*$", re.MULTILINE
)

_SACCT_FIELDS = "JobID,State,ExitCode,Elapsed,Timelimit,MaxRSS,ReqMem"


class SlurmJobResource(NodeNumberJobResource):
    """Machines and MPI processes per machine, as ``--nodes`` and ``--ntasks-per-node``."""


class SlurmScheduler(Scheduler):
    """The SLURM workload manager (AiiDA's ``core.slurm``)."""

    _job_resource_class = SlurmJobResource
    _features = {"can_query_by_user": False}

    def _get_submit_script_header(self, job_tmpl: JobTemplate) -> str:
        lines: list[str] = []
        if job_tmpl.submit_as_hold:
            lines.append("#SBATCH -H")
        lines.append("#SBATCH --requeue" if job_tmpl.rerunnable else "#SBATCH --no-requeue")
        if job_tmpl.email:
            lines.append(f"#SBATCH --mail-user={_directive('email', job_tmpl.email)}")
        if job_tmpl.email_on_started:
            lines.append("#SBATCH --mail-type=BEGIN")
        if job_tmpl.email_on_terminated:
            lines.append("#SBATCH --mail-type=FAIL")
            lines.append("#SBATCH --mail-type=END")
        if job_tmpl.job_name:
            lines.append(f'#SBATCH --job-name="{_job_title(job_tmpl.job_name)}"')
        if job_tmpl.import_sys_environment:
            lines.append("#SBATCH --get-user-env")
        if job_tmpl.sched_output_path:
            path = _directive("sched_output_path", job_tmpl.sched_output_path)
            lines.append(f"#SBATCH --output={path}")
        if job_tmpl.sched_join_files:
            pass  # without --error, SLURM writes stderr into the --output file
        elif job_tmpl.sched_error_path:
            path = _directive("sched_error_path", job_tmpl.sched_error_path)
            lines.append(f"#SBATCH --error={path}")
        else:
            lines.append("#SBATCH --error=slurm-%j.err")
        for option, name, value in (
            ("partition", "queue_name", job_tmpl.queue_name),
            ("account", "account", job_tmpl.account),
            ("qos", "qos", job_tmpl.qos),
            ("nice", "priority", job_tmpl.priority),
        ):
            if value:
                lines.append(f"#SBATCH --{option}={_directive(name, str(value))}")
        resource = job_tmpl.job_resource
        if not isinstance(resource, NodeNumberJobResource):
            raise ValueError(
                "the SLURM scheduler needs job resources (num_machines and "
                "num_mpiprocs_per_machine or tot_num_mpiprocs)"
            )
        lines.append(f"#SBATCH --nodes={resource.num_machines}")
        lines.append(f"#SBATCH --ntasks-per-node={resource.num_mpiprocs_per_machine}")
        if resource.num_cores_per_mpiproc:
            lines.append(f"#SBATCH --cpus-per-task={resource.num_cores_per_mpiproc}")
        if job_tmpl.max_wallclock_seconds is not None:
            lines.append(f"#SBATCH --time={_slurm_time(job_tmpl.max_wallclock_seconds)}")
        if job_tmpl.max_memory_kb is not None:
            memory = job_tmpl.max_memory_kb
            if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
                raise ValueError(f"max_memory_kb must be a non-negative integer, not {memory!r}")
            lines.append(f"#SBATCH --mem={memory // 1024}")  # 0 means no limit
        if job_tmpl.custom_scheduler_commands:
            lines.append(job_tmpl.custom_scheduler_commands)
        return "\n".join(lines)

    def _get_submit_command(self, submit_script: str) -> str:
        return f"sbatch --parsable {escape_for_bash(submit_script)}"

    def _parse_submit_output(self, retval: int, stdout: str, stderr: str) -> str:
        if retval != 0:
            text = stderr.strip() or stdout.strip()
            if "invalid account" in text.lower():
                raise SubmissionRefusedError(
                    f"sbatch refused the job: {text}", "ERROR_SCHEDULER_INVALID_ACCOUNT"
                )
            raise SchedulerError(f"sbatch failed (exit {retval}): {text}")
        if stderr.strip():
            logger.warning("sbatch succeeded but wrote to stderr: %s", stderr.strip())
        match = _SUBMITTED.search(stdout)
        if match is None:
            raise SchedulerParsingError(f"no job id in sbatch's output {stdout.strip()!r}")
        return match["jobid"]

    def _get_joblist_command(self, jobs: list[str] | None = None, user: str | None = None) -> str:
        if user and jobs:
            raise ValueError("SLURM jobs are listed by job ids or by user, not both")
        fmt = _SEPARATOR.join(code for code, _ in _FIELDS)
        command = ["SLURM_TIME_FORMAT=standard", "squeue", "--noheader", f"-o '{fmt}'"]
        if user:
            command.append(f"-u {escape_for_bash(user)}")
        if jobs:
            for job in jobs:
                if not str(job).isdigit():
                    raise ValueError(f"{job!r} is not a SLURM job id")
            ids = [str(job) for job in jobs]
            # squeue fails for a single finished job id but not for a list: asking for the id
            # twice keeps a non-zero exit for real failures only
            if len(ids) == 1:
                ids.append(ids[0])
            # --states=all keeps jobs that ended in the answer, with how they ended (TO, OOM)
            command.append(f"--states=all --jobs={','.join(ids)}")
        return " ".join(command)

    def _parse_joblist_output(self, retval: int, stdout: str, stderr: str) -> list[JobInfo]:
        if retval != 0:
            raise SchedulerError(f"squeue failed (exit {retval}): {stderr.strip()}")
        if stderr.strip():
            logger.warning("squeue succeeded but wrote to stderr: %s", stderr.strip())
        jobs: list[JobInfo] = []
        for line in stdout.splitlines():
            if _SEPARATOR not in line:
                continue
            values = line.split(_SEPARATOR, len(_FIELDS) - 1)
            if len(values) != len(_FIELDS):
                raise SchedulerParsingError(f"squeue line with too few fields: {line!r}")
            row = dict(zip((name for _, name in _FIELDS), values, strict=True))
            state = _SLURM_STATES.get(row["state"])
            if state is None:
                logger.warning("unknown SLURM state %r of job %s", row["state"], row["job_id"])
                state = JobState.UNDETERMINED
            if state is JobState.QUEUED and row["annotation"] in _HELD_REASONS:
                state = JobState.QUEUED_HELD
            info = JobInfo(
                job_id=row["job_id"],
                job_state=state,
                annotation=row["annotation"],
                job_owner=row["username"],
                title=row["job_name"],
                queue_name=row["partition"],
                num_machines=_int_or_none(row["number_nodes"]),
                num_mpiprocs=_int_or_none(row["number_cpus"]),
                requested_wallclock_time_seconds=parse_slurm_time(row["time_limit"]),
                raw_data=values,
            )
            if state is JobState.RUNNING:
                info.allocated_machines_raw = row["allocated_machines"]
                info.wallclock_time_seconds = parse_slurm_time(row["time_used"])
            jobs.append(info)
        return jobs

    def _get_kill_command(self, jobid: str) -> str:
        if not str(jobid).isdigit():
            raise ValueError(f"{jobid!r} is not a SLURM job id")
        return f"scancel {jobid}"

    def _get_detailed_job_info_command(self, job_id: str) -> str:
        if not str(job_id).isdigit():
            raise ValueError(f"{job_id!r} is not a SLURM job id")
        return f"sacct --format={_SACCT_FIELDS} --parsable2 --jobs={job_id}"

    def parse_output(
        self,
        detailed_job_info: Mapping[str, str | int] | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
    ) -> str | None:
        """The scheduler's verdict: from ``sacct`` (``detailed_job_info['stdout']``), from the
        final compact state squeue reported (``detailed_job_info['squeue_state']``, for clusters
        without accounting), or from SLURM's messages in the job's stderr."""
        if detailed_job_info is not None and "stdout" in detailed_job_info:
            output = detailed_job_info.get("stdout")
            if not isinstance(output, str):
                raise ValueError("detailed_job_info has no 'stdout' text from sacct")
            lines = [line for line in output.splitlines() if line.strip()]
            if len(lines) >= 2:
                header = lines[0].split("|")
                if "State" not in header:
                    raise SchedulerParsingError(f"sacct's header {lines[0]!r} has no State")
                states = [
                    (row.split("|") + [""] * len(header))[header.index("State")].split(" ")[0]
                    for row in lines[1:]
                ]
                # the job's own line decides walltime and node failure; a step may run out of
                # memory while the job's line says FAILED
                if "OUT_OF_MEMORY" in states:
                    return "ERROR_SCHEDULER_OUT_OF_MEMORY"
                if states[0] == "TIMEOUT":
                    return "ERROR_SCHEDULER_OUT_OF_WALLTIME"
                if states[0] == "NODE_FAIL":
                    return "ERROR_SCHEDULER_NODE_FAILURE"
        final_state = detailed_job_info.get("squeue_state") if detailed_job_info else None
        if isinstance(final_state, str) and final_state in _FINAL_STATE_VERDICTS:
            return _FINAL_STATE_VERDICTS[final_state]
        if stderr:
            lowered = stderr.lower()
            if re.search(r"exceeded.*memory limit|oom-kill", lowered):
                return "ERROR_SCHEDULER_OUT_OF_MEMORY"
            if re.search(r"cancelled at .* due to time limit", lowered):
                return "ERROR_SCHEDULER_OUT_OF_WALLTIME"
        return None


def _directive(name: str, value: str) -> str:
    """A value for an ``#SBATCH`` line: one line, no quotes to break out of."""
    if any(char in value for char in "\n\r\"'"):
        raise ValueError(f"{name} may not contain quotes or line breaks: {value!r}")
    return value


def _job_title(name: str) -> str:
    title = re.sub(r"[^a-zA-Z0-9_.-]+", "", name)
    if not title or title[0] not in string.ascii_letters + string.digits:
        title = f"j{title}"
    return title[:128]


def _slurm_time(seconds: object) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise ValueError(f"max_wallclock_seconds must be a positive integer, not {seconds!r}")
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def _int_or_none(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<clock>\d+(?::\d+){0,2})$")


def parse_slurm_time(text: str) -> int | None:
    """Seconds from SLURM's ``[days-][hours:]minutes[:seconds]``; ``None`` for unset or unknown.

    ``UNLIMITED`` is the largest 32-bit integer, as in AiiDA.  A lone number is minutes, two are
    minutes and seconds, three hours, minutes and seconds; with a day count, ``d-h``, ``d-h:m``
    and ``d-h:m:s``.
    """
    text = text.strip()
    if text == "UNLIMITED":
        return 2**31 - 1
    match = _TIME.match(text)
    if match is None:
        return None
    parts = [int(part) for part in match["clock"].split(":")]
    days = int(match["days"] or 0)
    if match["days"] is not None:
        parts += [0] * (3 - len(parts))  # after a day count the first number is hours
        hours, minutes, seconds = parts
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = 0, parts[0], 0
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
