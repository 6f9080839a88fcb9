"""The scheduler plugin interface: write submit scripts, build commands, parse their output.

A scheduler plugin is sans-IO, like the rest of the pure layers: it turns a :class:`JobTemplate`
into a script and command lines, and turns the text a command printed back into job ids and
:class:`JobInfo` records.  Running the commands (locally or over SSH) is a transport's job, so a
plugin is tested on recorded outputs alone and one query can cover every job of a computer.

Method names follow ``aiida.schedulers.Scheduler`` so that AiiDA plugins port by their imports.
"""

from __future__ import annotations

import abc
import logging
import re
from collections.abc import Iterable, Mapping

from miniengine.schedulers.datastructures import (
    CodeRunMode,
    JobInfo,
    JobResource,
    JobTemplate,
    JobTemplateCodeInfo,
)
from miniengine.schedulers.errors import SchedulerError, SchedulerParsingError
from miniengine.schedulers.escaping import escape_for_bash

__all__ = ["EXIT_STATUS_FILENAME", "Scheduler", "parse_exit_statuses"]

logger = logging.getLogger("miniengine.schedulers")

#: The file in a job's working folder where the script records each program's exit status, one
#: ``<index> <status>`` line per program, so that a failed program is told from a failed job.
EXIT_STATUS_FILENAME = ".miniengine-exit-status"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_exit_statuses(text: str) -> dict[int, int]:
    """Read the exit status file a submit script wrote: ``{program index: exit status}``.

    A job cut off before a program ended has no line for it; a malformed line raises
    :class:`SchedulerParsingError` naming it.
    """
    statuses: dict[int, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not all(part.lstrip("-").isdigit() for part in parts):
            raise SchedulerParsingError(
                f"the line {line!r} of {EXIT_STATUS_FILENAME} is not '<index> <status>'"
            )
        statuses[int(parts[0])] = int(parts[1])
    return statuses


class Scheduler(abc.ABC):
    """Base class of scheduler plugins (``core.direct``, ``core.slurm``, third-party ones)."""

    #: The resource class this scheduler understands.
    _job_resource_class: type[JobResource]

    #: What the plugin can do; ``can_query_by_user``: list a user's jobs rather than given ids.
    _features: Mapping[str, bool] = {}

    def __str__(self) -> str:
        return type(self).__name__

    # resources ----------------------------------------------------------------------------------

    @classmethod
    def job_resource_class(cls) -> type[JobResource]:
        return cls._job_resource_class

    @classmethod
    def validate_resources(cls, **resources: object) -> None:
        """Raise ``ValueError`` naming the key if ``resources`` do not fit this scheduler."""
        cls._job_resource_class.validate_resources(**resources)

    @classmethod
    def create_job_resource(cls, **resources: object) -> JobResource:
        return cls._job_resource_class(**resources)

    @classmethod
    def preprocess_resources(
        cls, resources: dict[str, object], default_mpiprocs_per_machine: int | None = None
    ) -> None:
        """Fill in a computer's default MPI processes per machine where the job gave none."""
        if (
            default_mpiprocs_per_machine is not None
            and cls._job_resource_class.accepts_default_mpiprocs_per_machine()
            and resources.get("num_mpiprocs_per_machine") is None
            and resources.get("tot_num_mpiprocs") is None
        ):
            resources["num_mpiprocs_per_machine"] = default_mpiprocs_per_machine

    def get_feature(self, name: str) -> bool:
        try:
            return self._features[name]
        except KeyError:
            raise SchedulerError(f"{self} has no feature named {name!r}") from None

    # the submit script ------------------------------------------------------------------------

    def get_submit_script(self, job_tmpl: JobTemplate) -> str:
        """The whole submit script: shebang, scheduler header, environment, prepend text, the
        programs (each recording its exit status), append text, footer."""
        if not job_tmpl.codes_info:
            raise ValueError("the job template has no program to run (codes_info is empty)")
        lines: list[str] = []
        if job_tmpl.shebang is None:
            lines.append("#!/bin/bash")
        elif job_tmpl.shebang == "" or job_tmpl.shebang.startswith("#!"):
            lines.append(job_tmpl.shebang)
        else:
            raise ValueError(f"the shebang {job_tmpl.shebang!r} does not start with '#!'")
        lines.append(self._get_submit_script_header(job_tmpl))
        lines.append("")
        if job_tmpl.job_environment:
            lines.append(self._get_submit_script_environment_variables(job_tmpl))
            lines.append("")
        if job_tmpl.prepend_text:
            lines.append(job_tmpl.prepend_text)
            lines.append("")
        lines.append(self._get_run_line(job_tmpl.codes_info, job_tmpl.codes_run_mode))
        lines.append("")
        if job_tmpl.append_text:
            lines.append(job_tmpl.append_text)
            lines.append("")
        footer = self._get_submit_script_footer(job_tmpl)
        if footer:
            lines.append(footer)
            lines.append("")
        return "\n".join(lines)

    def _get_submit_script_environment_variables(self, job_tmpl: JobTemplate) -> str:
        assert job_tmpl.job_environment is not None
        lines = ["# ENVIRONMENT VARIABLES BEGIN ###"]
        for key, value in job_tmpl.job_environment.items():
            name = str(key).strip()
            if not _ENV_NAME.match(name):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            quoted = escape_for_bash(value, job_tmpl.environment_variables_double_quotes)
            lines.append(f"export {name}={quoted}")
        lines.append("# ENVIRONMENT VARIABLES END ###")
        return "\n".join(lines)

    @abc.abstractmethod
    def _get_submit_script_header(self, job_tmpl: JobTemplate) -> str:
        """The scheduler's directives (``#SBATCH ...``) and redirections, from the template."""

    def _get_submit_script_footer(self, job_tmpl: JobTemplate) -> str:
        return ""

    def _get_run_line(
        self, codes_info: Iterable[JobTemplateCodeInfo], codes_run_mode: CodeRunMode
    ) -> str:
        """The lines that run the programs and record each one's exit status.

        Serial programs run one after the other whatever their status (as in AiiDA); parallel
        ones start in the background and are waited for one by one, so every status is kept.
        """
        commands = [_command_line(info) for info in codes_info]
        record = f">> {EXIT_STATUS_FILENAME}"
        if codes_run_mode == CodeRunMode.SERIAL:
            blocks = [
                f'{command}\necho "{index} $?" {record}' for index, command in enumerate(commands)
            ]
            return "\n\n".join(blocks)
        if codes_run_mode == CodeRunMode.PARALLEL:
            started = [
                f"{command} &\n_miniengine_pid_{index}=$!" for index, command in enumerate(commands)
            ]
            waits = [
                f'wait "$_miniengine_pid_{index}"; echo "{index} $?" {record}'
                for index in range(len(commands))
            ]
            return "\n\n".join(started) + "\n\n" + "\n".join(waits)
        raise ValueError(f"unknown code run mode {codes_run_mode!r}")

    # commands and their output ------------------------------------------------------------------

    @abc.abstractmethod
    def _get_submit_command(self, submit_script: str) -> str:
        """The command, run in the job's working folder, that submits ``submit_script``."""

    @abc.abstractmethod
    def _parse_submit_output(self, retval: int, stdout: str, stderr: str) -> str:
        """The job id from the submit command's output; :class:`SchedulerError` if refused."""

    @abc.abstractmethod
    def _get_joblist_command(self, jobs: list[str] | None = None, user: str | None = None) -> str:
        """One command that reports on all of ``jobs`` (or on all of ``user``'s jobs)."""

    @abc.abstractmethod
    def _parse_joblist_output(self, retval: int, stdout: str, stderr: str) -> list[JobInfo]:
        """The jobs the joblist command reported; jobs it did not mention are absent."""

    @abc.abstractmethod
    def _get_kill_command(self, jobid: str) -> str:
        """The command that cancels ``jobid`` (and everything it started)."""

    def _parse_kill_output(self, retval: int, stdout: str, stderr: str) -> bool:
        """Whether the kill command succeeded."""
        if retval != 0:
            logger.warning("%s: kill failed (exit %d): %s", self, retval, stderr.strip())
            return False
        return True

    def _get_detailed_job_info_command(self, job_id: str) -> str | None:
        """A command whose output describes a finished job (accounting), or ``None``."""
        return None

    def parse_output(
        self,
        detailed_job_info: Mapping[str, str | int] | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
    ) -> str | None:
        """The label of the CalcJob exit code for the scheduler's verdict on a finished job
        (``ERROR_SCHEDULER_OUT_OF_WALLTIME``, ...), or ``None`` when it has nothing to say."""
        return None


def _command_line(info: JobTemplateCodeInfo) -> str:
    computer_quotes, code_quotes = info.use_double_quotes
    launcher = [escape_for_bash(arg, computer_quotes) for arg in info.prepend_cmdline_params]
    params = [escape_for_bash(arg, code_quotes) for arg in info.cmdline_params]
    if info.stdin_name:
        params.append(f"< {escape_for_bash(info.stdin_name, computer_quotes)}")
    if info.stdout_name:
        params.append(f"> {escape_for_bash(info.stdout_name, computer_quotes)}")
    if info.join_files:
        params.append("2>&1")
    elif info.stderr_name:
        params.append(f"2> {escape_for_bash(info.stderr_name, computer_quotes)}")
    program = " ".join(params)
    if info.wrap_cmdline_params:
        program = escape_for_bash(program, use_double_quotes=True)
    return " ".join(part for part in (" ".join(launcher), program) if part)
