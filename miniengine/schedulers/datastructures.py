"""What a scheduler plugin reads and returns: job resources, the job template, job states and infos.

The names and fields follow ``aiida.schedulers.datastructures`` so that a scheduler plugin written
for AiiDA ports by changing its imports.  Everything here is plain data: no IO, no event loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

from miniengine.core.calcinfo import CodeRunMode

__all__ = [
    "CodeRunMode",
    "JobInfo",
    "JobResource",
    "JobState",
    "JobTemplate",
    "JobTemplateCodeInfo",
    "NodeNumberJobResource",
]


class JobState(enum.StrEnum):
    """The state of a job as the scheduler reports it, mapped to AiiDA's six states.

    A ``str`` too, so that it compares equal to its value (``JobState.DONE == "done"``), which
    is how it is stored."""

    UNDETERMINED = "undetermined"
    QUEUED = "queued"
    QUEUED_HELD = "queued held"
    RUNNING = "running"
    SUSPENDED = "suspended"
    DONE = "done"


class JobResource:
    """The resources a job asks for; each scheduler names the subclass it understands."""

    _fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def validate_resources(cls, **kwargs: Any) -> dict[str, Any]:
        """Return the complete, checked resources, or raise ``ValueError`` naming the bad key."""
        raise NotImplementedError

    @classmethod
    def accepts_default_mpiprocs_per_machine(cls) -> bool:
        """Whether a computer's ``default_mpiprocs_per_machine`` may fill in a missing value."""
        return False

    def __init__(self, **kwargs: Any) -> None:
        for key, value in self.validate_resources(**kwargs).items():
            setattr(self, key, value)

    def get_tot_num_mpiprocs(self) -> int:
        """The total number of MPI processes the job runs."""
        raise NotImplementedError

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name, None)!r}" for name in self._fields)
        return f"{type(self).__name__}({shown})"


def _positive_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"the resource {name!r} must be a positive integer, not {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"the resource {name!r} must be a positive integer, not {value!r}"
        ) from None
    if number != value and not isinstance(value, str):
        raise ValueError(f"the resource {name!r} must be a whole number, not {value!r}")
    if number < 1:
        raise ValueError(f"the resource {name!r} must be a positive integer, not {value!r}")
    return number


class NodeNumberJobResource(JobResource):
    """Resources counted in machines and MPI processes per machine (SLURM, PBS, direct).

    Two of ``num_machines``, ``num_mpiprocs_per_machine`` and ``tot_num_mpiprocs`` determine the
    third; all three must agree when given.  ``num_cores_per_machine`` and
    ``num_cores_per_mpiproc`` are optional (OpenMP threads).
    """

    _fields = (
        "num_machines",
        "num_mpiprocs_per_machine",
        "num_cores_per_machine",
        "num_cores_per_mpiproc",
    )

    num_machines: int
    num_mpiprocs_per_machine: int
    num_cores_per_machine: int | None
    num_cores_per_mpiproc: int | None

    @classmethod
    def accepts_default_mpiprocs_per_machine(cls) -> bool:
        return True

    @classmethod
    def validate_resources(cls, **kwargs: Any) -> dict[str, Any]:
        known = {*cls._fields, "tot_num_mpiprocs"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(
                f"unknown resource {unknown[0]!r}; {cls.__name__} takes {', '.join(sorted(known))}"
            )
        machines = _positive_int("num_machines", kwargs.get("num_machines"))
        per_machine = _positive_int(
            "num_mpiprocs_per_machine", kwargs.get("num_mpiprocs_per_machine")
        )
        total = _positive_int("tot_num_mpiprocs", kwargs.get("tot_num_mpiprocs"))
        if machines is None:
            if per_machine is None or total is None:
                raise ValueError(
                    "the resources need two of num_machines, num_mpiprocs_per_machine and "
                    "tot_num_mpiprocs"
                )
            if total % per_machine:
                raise ValueError(
                    f"tot_num_mpiprocs={total} is not a multiple of "
                    f"num_mpiprocs_per_machine={per_machine}"
                )
            machines = total // per_machine
        elif per_machine is None:
            if total is None:
                raise ValueError(
                    "the resources need num_mpiprocs_per_machine or tot_num_mpiprocs besides "
                    "num_machines"
                )
            if total % machines:
                raise ValueError(
                    f"tot_num_mpiprocs={total} is not a multiple of num_machines={machines}"
                )
            per_machine = total // machines
        elif total is not None and total != machines * per_machine:
            raise ValueError(
                f"tot_num_mpiprocs={total} is not num_machines={machines} times "
                f"num_mpiprocs_per_machine={per_machine}"
            )
        cores_machine = _positive_int("num_cores_per_machine", kwargs.get("num_cores_per_machine"))
        cores_proc = _positive_int("num_cores_per_mpiproc", kwargs.get("num_cores_per_mpiproc"))
        if (
            cores_machine is not None
            and cores_proc is not None
            and cores_machine != cores_proc * per_machine
        ):
            raise ValueError(
                f"num_cores_per_machine={cores_machine} is not num_cores_per_mpiproc={cores_proc} "
                f"times num_mpiprocs_per_machine={per_machine}"
            )
        return {
            "num_machines": machines,
            "num_mpiprocs_per_machine": per_machine,
            "num_cores_per_machine": cores_machine,
            "num_cores_per_mpiproc": cores_proc,
        }

    def get_tot_num_mpiprocs(self) -> int:
        return self.num_machines * self.num_mpiprocs_per_machine


@dataclass
class JobTemplateCodeInfo:
    """One program of a job: its command line and where its standard streams go.

    ``prepend_cmdline_params`` is the launcher (``mpirun -np 4``), ``cmdline_params`` the
    executable and its arguments.  ``use_double_quotes`` is (computer's, code's): double quotes
    let ``$VARIABLES`` expand in the arguments, single quotes pass them literally.
    """

    prepend_cmdline_params: list[str] = field(default_factory=list)
    cmdline_params: list[str] = field(default_factory=list)
    use_double_quotes: tuple[bool, bool] = (False, False)
    wrap_cmdline_params: bool = False
    stdin_name: str | None = None
    stdout_name: str | None = None
    stderr_name: str | None = None
    join_files: bool = False


@dataclass
class JobTemplate:
    """Everything a scheduler needs to write a job's submit script."""

    shebang: str | None = None
    submit_as_hold: bool = False
    rerunnable: bool = False
    job_environment: dict[str, str] | None = None
    environment_variables_double_quotes: bool = False
    working_directory: str | None = None
    email: str | None = None
    email_on_started: bool = False
    email_on_terminated: bool = False
    job_name: str | None = None
    sched_output_path: str | None = None
    sched_error_path: str | None = None
    sched_join_files: bool = False
    queue_name: str | None = None
    account: str | None = None
    qos: str | None = None
    job_resource: JobResource | None = None
    priority: str | None = None
    max_memory_kb: int | None = None
    max_wallclock_seconds: int | None = None
    custom_scheduler_commands: str | None = None
    prepend_text: str | None = None
    append_text: str | None = None
    import_sys_environment: bool = True
    codes_run_mode: CodeRunMode = CodeRunMode.SERIAL
    codes_info: list[JobTemplateCodeInfo] = field(default_factory=list)


@dataclass
class JobInfo:
    """What one scheduler query says about one job."""

    job_id: str = ""
    job_state: JobState = JobState.UNDETERMINED
    annotation: str | None = None
    job_owner: str | None = None
    title: str | None = None
    queue_name: str | None = None
    num_machines: int | None = None
    num_mpiprocs: int | None = None
    allocated_machines_raw: str | None = None
    requested_wallclock_time_seconds: int | None = None
    wallclock_time_seconds: int | None = None
    raw_data: list[str] | None = None
