"""Helpers the external-program workloads (W8-W10) share: codes on a computer, submitting many
:class:`~benchmarks.calcjobs.CommandCalculation` jobs, checking them, and the CPU time and
memory of daemon workers read from ``/proc``.

Everything that imports miniengine does it inside a function, so that listing the workloads
stays cheap.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.registry import check
from benchmarks.support import Watcher, db_path

#: Clock ticks per second of ``/proc/<pid>/stat``'s CPU times.
_TICKS = os.sysconf("SC_CLK_TCK")


def work_folder(name: str = "work") -> Path:
    """A folder for the jobs' working folders, beside this repetition's database."""
    folder = db_path().parent / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def installed_code(computer: Any, executable: str, label: str) -> Any:
    from miniengine import InstalledCode

    return InstalledCode(computer=computer, filepath_executable=executable, label=label).store()


def submit_jobs(code: Any, n: int, arguments: str | None = None) -> tuple[list[Any], float]:
    """Submit ``n`` CommandCalculations of ``code``; their nodes and the seconds the loop took."""
    from benchmarks.calcjobs import OPTIONS, CommandCalculation
    from miniengine import Str, submit

    inputs: dict[str, Any] = {"code": code, "metadata": {"options": OPTIONS}}
    start = time.perf_counter()
    nodes = []
    for _ in range(n):
        if arguments is not None:
            inputs["arguments"] = Str(arguments)
        nodes.append(submit(CommandCalculation, **inputs))
    return nodes, time.perf_counter() - start


def wait_jobs(nodes: Sequence[Any], timeout: float, interval: float = 0.002) -> float:
    """Wait until every job terminated; the ``perf_counter`` time it was seen."""
    watcher = Watcher(db_path(), [node.pk for node in nodes])
    try:
        return watcher.wait(timeout, interval=interval)
    finally:
        watcher.close()


def check_jobs(nodes: Sequence[Any]) -> None:
    """Every job finished with exit status 0 and has its ``remote_folder`` and ``retrieved``."""
    from miniengine import load_node

    bad = []
    for node in nodes:
        node = load_node(node.pk)
        outputs = set(node.outputs)
        if not (node.is_finished_ok and {"remote_folder", "retrieved"} <= outputs):
            bad.append((node.pk, str(node.process_state), node.exit_status, sorted(outputs)))
    check(not bad, f"{len(bad)} of {len(nodes)} CalcJobs did not finish OK: {bad[:5]}")


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of a process: its own, and those of its children it reaped."""

    own: float
    children: float

    @property
    def total(self) -> float:
        return self.own + self.children


def cpu_of(pid: int) -> Cpu | None:
    """``utime + stime`` and ``cutime + cstime`` of ``/proc/<pid>/stat``; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return Cpu((utime + stime) / _TICKS, (cutime + cstime) / _TICKS)


def cpu_used(before: dict[int, Cpu | None], after: dict[int, Cpu | None]) -> Cpu:
    """The CPU seconds the processes of ``before`` used until ``after`` (a process gone by then
    is a worker that died: what it used is lost, so the sum is a lower bound)."""
    own = children = 0.0
    for pid, start in before.items():
        end = after.get(pid)
        if start is None or end is None:
            continue
        own += end.own - start.own
        children += end.children - start.children
    return Cpu(own, children)


def cpu_snapshot(pids: Sequence[int]) -> dict[int, Cpu | None]:
    return {pid: cpu_of(pid) for pid in pids}


def load_average() -> float:
    return os.getloadavg()[0]
