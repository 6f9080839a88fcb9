"""What a CalcJob's ``prepare_for_submission`` returns: which programs to run and which files go
where (AiiDA's ``CalcInfo`` and ``CodeInfo``, with their field names).

Plain data with fixed fields: assigning a misspelled field (``calcinfo.retrieve_lst``) raises
``AttributeError`` instead of being silently ignored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CalcInfo",
    "CalcJobState",
    "CodeInfo",
    "CodeRunMode",
    "FileCopyOperation",
]


class CodeRunMode(enum.IntEnum):
    """How the programs of one job run: one after the other, or all at once (then ``wait``)."""

    SERIAL = 0
    PARALLEL = 1


class CalcJobState(enum.StrEnum):
    """Where a running CalcJob is in its life: each is a checkpointed transition.

    A ``str`` too, so that it compares equal to its stored value (``"withscheduler"``)."""

    UPLOADING = "uploading"
    SUBMITTING = "submitting"
    WITHSCHEDULER = "withscheduler"
    RETRIEVING = "retrieving"
    PARSING = "parsing"


class FileCopyOperation(enum.IntEnum):
    """The three sources of a job's input files, for ``CalcInfo.file_copy_operation_order``:
    the repository's files (``local_copy_list``), files already on the computer
    (``remote_copy_list``) and the folder the plugin wrote (the sandbox)."""

    LOCAL = 0
    REMOTE = 1
    SANDBOX = 2


@dataclass(slots=True)
class CodeInfo:
    """One program of a job: the code, its arguments and where its standard streams go."""

    cmdline_params: list[str] | None = None
    stdin_name: str | None = None
    stdout_name: str | None = None
    stderr_name: str | None = None
    join_files: bool | None = None
    withmpi: bool | None = None
    code_uuid: str | None = None


@dataclass(slots=True)
class CalcInfo:
    """Everything the engine needs to upload, run and retrieve one job.

    ``local_copy_list`` holds ``(node uuid, file name in the node, target path)``;
    ``remote_copy_list`` and ``remote_symlink_list`` hold ``(computer uuid, absolute source
    path, target path)``; ``retrieve_list`` holds names, globs or ``(source, target, depth)``.
    """

    uuid: str | None = None
    job_environment: dict[str, str] | None = None
    email: str | None = None
    email_on_started: bool | None = None
    email_on_terminated: bool | None = None
    prepend_text: str | None = None
    append_text: str | None = None
    num_machines: int | None = None
    num_mpiprocs_per_machine: int | None = None
    priority: str | None = None
    max_wallclock_seconds: int | None = None
    max_memory_kb: int | None = None
    rerunnable: bool | None = None
    retrieve_list: list[Any] | None = None
    retrieve_temporary_list: list[Any] | None = None
    local_copy_list: list[tuple[str, str, str]] | None = None
    remote_copy_list: list[tuple[str, str, str]] | None = None
    remote_symlink_list: list[tuple[str, str, str]] | None = None
    provenance_exclude_list: list[str] | None = None
    codes_info: list[CodeInfo] | None = None
    codes_run_mode: CodeRunMode | None = None
    skip_submit: bool | None = None
    file_copy_operation_order: list[FileCopyOperation] | None = None
