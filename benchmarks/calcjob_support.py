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


def submit_jobs(
    code: Any, n: int, arguments: str | None = None, **options: Any
) -> tuple[list[Any], float]:
    """Submit ``n`` CommandCalculations of ``code`` (``options`` added to the defaults); their
    nodes and the seconds the loop took."""
    from benchmarks.calcjobs import OPTIONS, CommandCalculation
    from miniengine import Str, submit

    inputs: dict[str, Any] = {"code": code, "metadata": {"options": {**OPTIONS, **options}}}
    start = time.perf_counter()
    nodes = []
    for _ in range(n):
        if arguments is not None:
            inputs["arguments"] = Str(arguments)
        nodes.append(submit(CommandCalculation, **inputs))
    return nodes, time.perf_counter() - start


def wait_jobs(nodes: Sequence[Any], timeout: float, interval: float = 0.002) -> float:
    """Wait until every job terminated; the ``perf_counter`` time it was seen.

    A job the engine paused (a transport stage that kept failing) would never end: that is a
    wrong result at once, with the first statuses, rather than a timeout.
    """
    watcher = Watcher(db_path(), [node.pk for node in nodes])
    next_look = time.perf_counter() + 0.5

    def look_for_paused(done: int) -> None:
        nonlocal next_look
        if time.perf_counter() < next_look:
            return
        next_look = time.perf_counter() + 0.5
        marks = ",".join("?" * len(watcher.pks))
        paused = watcher.connection.execute(
            f"SELECT pk, process_status FROM nodes WHERE paused = 1 AND pk IN ({marks}) LIMIT 3",
            watcher.pks,
        ).fetchall()
        check(not paused, f"CalcJobs were paused (pk, status): {paused}")

    try:
        return watcher.wait(timeout, interval=interval, on_poll=look_for_paused)
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
            reason = (node.exception or node.process_status or "").strip().splitlines()[-1:]
            bad.append(
                (node.pk, str(node.process_state), node.exit_status, sorted(outputs), reason)
            )
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


def counting_wrappers(folder: Path, programs: Sequence[str]) -> tuple[Path, Path]:
    """Scripts named like ``programs`` in ``folder/bin`` that log each call (time, program,
    arguments) to ``folder/calls.log`` and then run the real program: put the ``bin`` folder
    first on the ``PATH`` of the daemon to count the scheduler commands its workers run."""
    import shutil

    bin_folder = folder / "bin"
    bin_folder.mkdir(parents=True, exist_ok=True)
    log = folder / "calls.log"
    log.touch()
    for program in programs:
        real = shutil.which(program)
        if real is None:
            continue
        script = bin_folder / program
        script.write_text(  # bash's clock: no process forked before the time is read
            "#!/bin/bash\n"
            f'printf "%s {program} %s\\n" "$EPOCHREALTIME" "$*" >> {log}\n'
            f'exec {real} "$@"\n'
        )
        script.chmod(0o755)
    return bin_folder, log


def read_calls(log: Path) -> list[tuple[float, str, str]]:
    """The calls a :func:`counting_wrappers` log holds: (time, program, arguments)."""
    calls = []
    for line in log.read_text().splitlines():
        stamp, program, *rest = line.split(" ", 2)
        calls.append((float(stamp), program, rest[0] if rest else ""))
    return calls


def most_in_a_window(times: Sequence[float], window: float) -> int:
    """The largest number of ``times`` that fall in any half-open window of ``window`` s.

    Calls made once per poll interval give 1 for a window a little shorter than the interval
    (the times are read in the called program, a fork or two after the engine decided).
    """
    ordered = sorted(times)
    most, first = 0, 0
    for last, stamp in enumerate(ordered):
        while stamp - ordered[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


class RssSampler:
    """The resident memory of a process, sampled by a thread every ``interval`` s while the
    ``with`` block runs: its peak, and its value now (:meth:`now`)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import threading

        self.pid = pid
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def now(self) -> float:
        from benchmarks.support import rss_mib

        value = rss_mib(self.pid) or 0.0
        self.peak = max(self.peak, value)
        return value

    def _sample(self) -> None:
        while True:
            self.now()
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def jobs_with_scheduler(db: Path) -> int:
    """How many CalcJobs have a job with the scheduler (rows of ``calcjob_jobs``)."""
    import sqlite3

    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(connection.execute("SELECT count(*) FROM calcjob_jobs").fetchone()[0])
    finally:
        connection.close()
