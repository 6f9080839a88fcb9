"""What a CalcJob does on its computer, stage by stage: write the submit script, upload,
submit, ask the scheduler, cancel, retrieve.

Each function takes an open transport and is safe to run again after a crash at any point:
uploading rewrites the same files, retrieving copies the same files again, and submitting first
looks for the marker that an earlier submission left (see :func:`submit`).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from miniengine.core.calcinfo import CalcInfo, CodeRunMode
from miniengine.schedulers.datastructures import JobInfo, JobState, JobTemplate, JobTemplateCodeInfo
from miniengine.schedulers.escaping import escape_for_bash
from miniengine.schedulers.scheduler import EXIT_STATUS_FILENAME, Scheduler
from miniengine.transports.transport import Transport

__all__ = [
    "SUBMITTED_MARKER",
    "build_job_template",
    "kill_job",
    "query_jobs",
    "retrieve",
    "submit",
    "upload",
]

#: The file the submit command writes in the working folder, with the scheduler's answer, in the
#: same remote shell that submitted: a retry after a crash reads it instead of submitting again.
SUBMITTED_MARKER = ".miniengine-submitted"


def remote_workdir(root: str, uuid: str, username: str | None) -> str:
    """AiiDA's layout: ``<workdir>/<uuid[:2]>/<uuid[2:4]>/<uuid[4:]>``."""
    if "{username}" in root:
        root = root.replace("{username}", username or "")
    return f"{root.rstrip('/')}/{uuid[:2]}/{uuid[2:4]}/{uuid[4:]}"


def build_job_template(
    calcinfo: CalcInfo,
    options: Mapping[str, Any],
    computer: Any,
    scheduler: Scheduler,
    codes: Mapping[str, Any],
    title: str,
    workdir: str,
) -> JobTemplate:
    """The scheduler's view of the job, from the plugin's CalcInfo and the options."""
    template = JobTemplate()
    template.shebang = computer.get_shebang()
    template.submit_as_hold = False
    template.rerunnable = bool(options.get("rerunnable", False))
    environment = dict(options.get("environment_variables") or {})
    environment.update(calcinfo.job_environment or {})
    template.job_environment = environment or None
    template.environment_variables_double_quotes = bool(
        options.get("environment_variables_double_quotes", False)
    )
    template.working_directory = workdir
    template.job_name = title
    template.sched_output_path = options.get("scheduler_stdout")
    template.sched_error_path = options.get("scheduler_stderr")
    template.sched_join_files = False
    template.queue_name = options.get("queue_name")
    template.account = options.get("account")
    template.qos = options.get("qos")
    template.priority = options.get("priority")
    template.max_memory_kb = options.get("max_memory_kb")
    template.max_wallclock_seconds = options.get("max_wallclock_seconds")
    template.custom_scheduler_commands = options.get("custom_scheduler_commands") or None
    template.import_sys_environment = bool(options.get("import_sys_environment", True))
    template.job_resource = scheduler.create_job_resource(**dict(options["resources"]))
    prepend = [computer.get_prepend_text()]
    append: list[str] = []
    code_infos: list[JobTemplateCodeInfo] = []
    seen: set[str] = set()
    for info in calcinfo.codes_info or []:
        code = codes.get(info.code_uuid or "")
        if code is None:
            raise ValueError(f"CodeInfo names the code {info.code_uuid!r}, which is not an input")
        if code.uuid not in seen:
            seen.add(code.uuid)
            prepend.append(code.get_prepend_text())
            append.append(code.get_append_text())
        withmpi = info.withmpi if info.withmpi is not None else options.get("withmpi", False)
        if code.with_mpi is not None and info.withmpi is None:
            withmpi = code.with_mpi
        launcher: list[str] = []
        if withmpi:
            resource = template.job_resource
            mpirun = [
                part.replace("{tot_num_mpiprocs}", str(resource.get_tot_num_mpiprocs()))
                for part in computer.get_mpirun_command()
            ]
            launcher = [*mpirun, *[str(p) for p in options.get("mpirun_extra_params", [])]]
        code_info = JobTemplateCodeInfo(
            prepend_cmdline_params=launcher,
            cmdline_params=code.get_executable_cmdline_params(info.cmdline_params),
            use_double_quotes=(computer.get_use_double_quotes(), code.use_double_quotes),
            stdin_name=info.stdin_name,
            stdout_name=info.stdout_name,
            stderr_name=info.stderr_name,
            join_files=bool(info.join_files),
        )
        code_infos.append(code_info)
    prepend.extend([options.get("prepend_text", ""), calcinfo.prepend_text or ""])
    append[:0] = [calcinfo.append_text or "", options.get("append_text", "")]
    append.append(computer.get_append_text())
    template.prepend_text = "\n".join(text for text in prepend if text) or None
    template.append_text = "\n".join(text for text in append if text) or None
    mode = calcinfo.codes_run_mode or CodeRunMode.SERIAL
    template.codes_run_mode = CodeRunMode(int(mode))
    template.codes_info = code_infos
    return template


def make_executable(path: str) -> None:
    mode = os.stat(path).st_mode
    os.chmod(path, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


async def upload(
    transport: Transport,
    sandbox: str,
    workdir: str,
    remote_copy_list: Sequence[Sequence[str]],
    remote_symlink_list: Sequence[Sequence[str]],
) -> None:
    """Create the working folder and copy the prepared files into it (again, after a crash)."""
    await transport.makedirs(workdir, ignore_existing=True)
    await transport.put(sandbox, workdir)
    for _, source, target in remote_copy_list:
        await transport.copy(source, f"{workdir}/{target}")
    for _, source, target in remote_symlink_list:
        await transport.symlink(source, f"{workdir}/{target}")


async def submit(
    transport: Transport, scheduler: Scheduler, workdir: str, script_filename: str
) -> str:
    """Submit the job, or find the job that an earlier attempt submitted: never two jobs.

    The submit command runs in a remote shell that writes the scheduler's answer to
    :data:`SUBMITTED_MARKER` as soon as the scheduler accepted the job, so a worker killed
    between the scheduler's answer and the commit of the job id leaves the answer behind.
    """
    earlier = await submitted_job(transport, scheduler, workdir)
    if earlier is not None:
        return earlier
    command = scheduler._get_submit_command(script_filename)
    temporary = escape_for_bash(f"{SUBMITTED_MARKER}.tmp")
    # (a dropped connection must not stop the shell between the scheduler's answer and the
    # marker: it ignores SIGHUP)
    wrapped = (
        "trap '' HUP; "
        f"_miniengine_out=$({command}); _miniengine_rc=$?; "
        'if [ "$_miniengine_rc" -eq 0 ]; then '
        f"printf '%s\\n' \"$_miniengine_out\" > {temporary} && "
        f"mv -f {temporary} {escape_for_bash(SUBMITTED_MARKER)}; fi; "
        "printf '%s\\n' \"$_miniengine_out\"; exit $_miniengine_rc"
    )
    result = await transport.exec_command_wait(wrapped, workdir=workdir)
    return scheduler._parse_submit_output(result.retval, result.stdout, result.stderr)


async def submitted_job(transport: Transport, scheduler: Scheduler, workdir: str) -> str | None:
    """The job an earlier submission in ``workdir`` started (from its marker), if any."""
    marker = f"{workdir}/{SUBMITTED_MARKER}"
    if not await transport.isfile(marker):
        return None
    answer = (await transport.read_bytes(marker)).decode(errors="replace")
    return scheduler._parse_submit_output(0, answer, "")


async def query_jobs(
    transport: Transport, scheduler: Scheduler, job_ids: Sequence[str]
) -> dict[str, JobInfo]:
    """One scheduler query for all of ``job_ids``; a job the scheduler no longer lists is DONE."""
    command = scheduler._get_joblist_command(jobs=list(job_ids))
    result = await transport.exec_command_wait(command)
    get_jobs = getattr(scheduler, "get_jobs_from_output", None)
    if get_jobs is not None:
        found: dict[str, JobInfo] = get_jobs(
            list(job_ids), result.retval, result.stdout, result.stderr
        )
    else:
        found = {
            info.job_id: info
            for info in scheduler._parse_joblist_output(result.retval, result.stdout, result.stderr)
        }
    for job_id in job_ids:
        found.setdefault(job_id, JobInfo(job_id=job_id, job_state=JobState.DONE))
    return found


def detailed_info(info: JobInfo | None) -> dict[str, Any] | None:
    """What the scheduler's last report says about a finished job, for ``parse_output``: SLURM's
    compact final state (``squeue --states=all``) as ``squeue_state``."""
    if info is None or not info.raw_data:
        return None
    from miniengine.schedulers import slurm

    names = [name for _, name in slurm._FIELDS]
    if len(info.raw_data) == len(names):
        return {"squeue_state": dict(zip(names, info.raw_data, strict=True))["state"]}
    return None


async def kill_job(transport: Transport, scheduler: Scheduler, job_id: str) -> bool:
    """Cancel the job; False if the scheduler refused (it may have ended already)."""
    result = await transport.exec_command_wait(scheduler._get_kill_command(job_id))
    return scheduler._parse_kill_output(result.retval, result.stdout, result.stderr)


async def retrieve(
    transport: Transport, workdir: str, names: Sequence[Any], target: str
) -> dict[int, int] | None:
    """Copy the retrieve list (names, globs or ``(source, target, depth)``) from the working
    folder into the local folder ``target``; return the programs' exit statuses if recorded."""
    from miniengine.schedulers.scheduler import parse_exit_statuses

    # one listing of the working folder answers for every top-level name and glob (a transport
    # call each would cost a round trip each, over SSH too)
    listing = set(await transport.listdir(workdir))
    for item in names:
        if isinstance(item, list | tuple):
            source, destination, _depth = item
            sources = await _expand(transport, workdir, str(source))
            for path in sources:
                relative = os.path.join(str(destination), os.path.basename(path))
                local = os.path.join(target, relative)
                os.makedirs(os.path.dirname(local), exist_ok=True)
                await transport.get(f"{workdir}/{path}", local)
            continue
        name = str(item)
        if any(char in name for char in "*?["):
            matched = sorted(entry for entry in listing if fnmatch.fnmatch(entry, name))
        elif "/" in name.strip("/"):
            matched = [name] if await transport.path_exists(f"{workdir}/{name}") else []
        else:
            matched = [name] if name in listing else []
        for entry in matched:
            local = os.path.join(target, entry)
            os.makedirs(os.path.dirname(local) or target, exist_ok=True)
            await transport.get(f"{workdir}/{entry}", local)
    if EXIT_STATUS_FILENAME in listing:
        status_file = f"{workdir}/{EXIT_STATUS_FILENAME}"
        text = (await transport.read_bytes(status_file)).decode(errors="replace")
        return parse_exit_statuses(text)
    return None


async def _expand(transport: Transport, workdir: str, pattern: str) -> list[str]:
    if not any(char in pattern for char in "*?["):
        return [pattern] if await transport.path_exists(f"{workdir}/{pattern}") else []
    folder, _, name = pattern.rpartition("/")
    base = f"{workdir}/{folder}" if folder else workdir
    entries = await transport.listdir(base)
    return [
        f"{folder}/{entry}" if folder else entry
        for entry in entries
        if fnmatch.fnmatch(entry, name)
    ]


def local_files_of(path: str) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file())
