"""Checking that a computer works (``verdi computer test``): connect, user, folder, scheduler.

Each check reports as it ends, so a command line can print it at once; a failed connection skips
the checks that need it.
"""

from __future__ import annotations

import posixpath
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from miniengine.runtime.computers import Computer
from miniengine.transports.transport import Transport

__all__ = ["ComputerCheck", "check_computer"]


@dataclass(frozen=True)
class ComputerCheck:
    """The outcome of one check: its name, whether it passed, and what was found or wrong."""

    name: str
    ok: bool
    detail: str


async def check_computer(
    computer: Computer, report: Callable[[ComputerCheck], None] | None = None
) -> list[ComputerCheck]:
    """Run the checks on ``computer`` (which must be configured); return every outcome."""
    results: list[ComputerCheck] = []

    def record(name: str, ok: bool, detail: str) -> bool:
        check = ComputerCheck(name, ok, detail)
        results.append(check)
        if report is not None:
            report(check)
        return ok

    transport = computer.get_transport()
    try:
        await transport.open()
    except Exception as exc:
        record("open the transport", False, f"{transport}: {exc}")
        return results
    try:
        record("open the transport", True, str(transport))
        await _checks(computer, transport, record)
    finally:
        await transport.close()
    return results


async def _checks(
    computer: Computer, transport: Transport, record: Callable[[str, bool, str], bool]
) -> None:
    try:
        username = await transport.whoami()
    except Exception as exc:
        record("whoami", False, str(exc))
        return
    record("whoami", True, f"the remote user is {username}")

    workdir = computer.get_workdir().format(username=username)
    probe = posixpath.join(workdir, f".miniengine-test-{secrets.token_hex(6)}")
    try:
        await transport.makedirs(workdir, ignore_existing=True)
        payload = b"miniengine computer test\n"
        await transport.write_bytes(probe, payload)
        if await transport.read_bytes(probe) != payload:
            raise OSError(f"{probe} did not read back what was written")
        await transport.remove(probe)
    except Exception as exc:
        record("work folder", False, f"cannot create or write {workdir}: {exc}")
    else:
        record("work folder", True, f"{workdir} can be created and written")

    scheduler = computer.get_scheduler()
    command = scheduler._get_joblist_command(user=username)
    try:
        result = await transport.exec_command_wait(command)
        jobs = scheduler._parse_joblist_output(result.retval, result.stdout, result.stderr)
    except Exception as exc:
        record("scheduler", False, f"{computer.scheduler_type}: `{command}` failed: {exc}")
    else:
        record(
            "scheduler",
            True,
            f"{computer.scheduler_type}: `{command}` lists {len(jobs)} job(s) of {username}",
        )
