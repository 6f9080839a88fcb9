"""``core.direct``: run the submit script as a background process of the computer itself.

The job id is the pid of the script, which is started as the leader of a new session
(``setsid``), so that killing the job kills every program the script started, and ``ps`` on
the recorded pids is the job list: a pid that ``ps`` no longer shows is a finished job.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from miniengine.schedulers.datastructures import (
    JobInfo,
    JobState,
    JobTemplate,
    NodeNumberJobResource,
)
from miniengine.schedulers.errors import SchedulerError, SchedulerParsingError
from miniengine.schedulers.escaping import escape_for_bash
from miniengine.schedulers.scheduler import Scheduler

__all__ = ["DirectJobResource", "DirectScheduler"]

logger = logging.getLogger("miniengine.schedulers.direct")

#: What the walltime watchdog writes to the job's stderr before it ends the job.
_WALLTIME_MESSAGE = "miniengine: walltime exceeded, job terminated"

#: ``ps`` state letters (the first letter of STAT) mapped to job states.
_PS_STATES = {
    "D": JobState.RUNNING,
    "I": JobState.RUNNING,
    "R": JobState.RUNNING,
    "S": JobState.RUNNING,
    "T": JobState.SUSPENDED,
    "t": JobState.SUSPENDED,
    "U": JobState.RUNNING,
    "W": JobState.RUNNING,
    "X": JobState.DONE,
    "Z": JobState.DONE,
}


class DirectJobResource(NodeNumberJobResource):
    """One machine, the one the script runs on; MPI processes per machine as for SLURM."""


class DirectScheduler(Scheduler):
    """Runs jobs as background processes, without a queue (AiiDA's ``core.direct``)."""

    _job_resource_class = DirectJobResource
    _features = {"can_query_by_user": True}

    def _get_submit_script_header(self, job_tmpl: JobTemplate) -> str:
        lines: list[str] = []
        if job_tmpl.sched_output_path:
            lines.append(f"exec > {escape_for_bash(job_tmpl.sched_output_path)}")
        if job_tmpl.sched_join_files:
            lines.append("exec 2>&1")
        elif job_tmpl.sched_error_path:
            lines.append(f"exec 2> {escape_for_bash(job_tmpl.sched_error_path)}")
        if job_tmpl.max_memory_kb:
            # a soft address-space cap is the closest a plain shell gets to a memory limit
            lines.append(f"ulimit -v {_non_negative('max_memory_kb', job_tmpl.max_memory_kb)}")
        if job_tmpl.max_wallclock_seconds is not None:
            seconds = _non_negative("max_wallclock_seconds", job_tmpl.max_wallclock_seconds)
            if seconds:
                # a watchdog in the job's own session: the kill reaches every program
                lines.append(
                    "( trap 'kill $_miniengine_sleep 2> /dev/null; exit' TERM; "
                    f"sleep {seconds} & _miniengine_sleep=$!; wait $_miniengine_sleep "
                    f"&& echo '{_WALLTIME_MESSAGE} ({seconds} s)' >&2 "
                    "&& kill -TERM -- -$$ ) > /dev/null &"
                )
                lines.append("_miniengine_watchdog=$!")
        if job_tmpl.custom_scheduler_commands:
            lines.append(job_tmpl.custom_scheduler_commands)
        resource = job_tmpl.job_resource
        cores = getattr(resource, "num_cores_per_mpiproc", None)
        if cores:
            lines.append(f"export OMP_NUM_THREADS={int(cores)}")
        return "\n".join(lines)

    def _get_submit_script_footer(self, job_tmpl: JobTemplate) -> str:
        if job_tmpl.max_wallclock_seconds:
            return 'kill "$_miniengine_watchdog" 2> /dev/null'
        return ""

    def parse_output(
        self,
        detailed_job_info: Mapping[str, str | int] | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
    ) -> str | None:
        if stderr is not None and _WALLTIME_MESSAGE in stderr:
            return "ERROR_SCHEDULER_OUT_OF_WALLTIME"
        return None

    def _get_submit_command(self, submit_script: str) -> str:
        # the script's output goes nowhere: the transport would otherwise wait for the job
        return (
            f"setsid bash {escape_for_bash(submit_script)} > /dev/null 2>&1 < /dev/null & echo $!"
        )

    def _parse_submit_output(self, retval: int, stdout: str, stderr: str) -> str:
        if retval != 0:
            raise SchedulerError(
                f"starting the job failed (exit {retval}): {stderr.strip() or stdout.strip()}"
            )
        pid = stdout.strip()
        if not pid.isdigit():
            raise SchedulerParsingError(f"expected the job's pid, got {stdout.strip()!r}")
        return pid

    def _get_joblist_command(self, jobs: list[str] | None = None, user: str | None = None) -> str:
        command = "ps -o pid=,stat=,user=,time="
        if jobs:
            for job in jobs:
                if not str(job).isdigit():
                    raise ValueError(f"{job!r} is not a pid: direct job ids are pids")
            return f"{command} -p {','.join(str(job) for job in jobs)}; true"
        if user:
            return f"{command} -u {escape_for_bash(user)}; true"
        return f"{command} -x; true"

    def _parse_joblist_output(self, retval: int, stdout: str, stderr: str) -> list[JobInfo]:
        if retval != 0:
            raise SchedulerError(f"ps failed (exit {retval}): {stderr.strip()}")
        jobs: list[JobInfo] = []
        for line in stdout.splitlines():
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 3 or not fields[0].isdigit():
                raise SchedulerParsingError(f"unexpected line from ps: {line!r}")
            state = _PS_STATES.get(fields[1][0])
            if state is None:
                logger.warning("unknown ps state %r of pid %s", fields[1], fields[0])
                state = JobState.UNDETERMINED
            info = JobInfo(job_id=fields[0], job_state=state, job_owner=fields[2])
            if len(fields) > 3:
                info.wallclock_time_seconds = _ps_time(fields[3])
            jobs.append(info)
        return jobs

    def get_jobs_from_output(
        self, requested: list[str], retval: int, stdout: str, stderr: str
    ) -> dict[str, JobInfo]:
        """The jobs ``ps`` reported, with every requested pid it no longer shows as DONE."""
        found = {info.job_id: info for info in self._parse_joblist_output(retval, stdout, stderr)}
        for job_id in requested:
            found.setdefault(job_id, JobInfo(job_id=job_id, job_state=JobState.DONE))
        return found

    def _get_kill_command(self, jobid: str) -> str:
        if not str(jobid).isdigit():
            raise ValueError(f"{jobid!r} is not a pid: direct job ids are pids")
        # the job is a session leader: signal its whole process group, the programs included
        return f"kill -TERM -- -{jobid} 2> /dev/null || kill -TERM {jobid}"


def _non_negative(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    return value


_PS_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<hours>\d+):(?P<minutes>\d+):(?P<seconds>\d+)$")


def _ps_time(text: str) -> int | None:
    """Seconds from ps's ``[DD-]HH:MM:SS`` CPU time; ``None`` for another format."""
    match = _PS_TIME.match(text)
    if match is None:
        return None
    days = int(match["days"] or 0)
    return ((days * 24 + int(match["hours"])) * 60 + int(match["minutes"])) * 60 + int(
        match["seconds"]
    )
