"""Run each repetition of a workload in a fresh interpreter with its own temporary database."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.backends import ENV_VAR as BACKEND_VAR
from benchmarks.backends import POSTGRESQL, SQLITE, Cluster
from benchmarks.registry import Metric, Workload

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Bytecode for the children and the daemons they start, as an installed package has it (this
#: environment sets ``PYTHONDONTWRITEBYTECODE``, and compiling miniengine from source at each
#: start would add 0.4-0.7 s to a daemon's start-up).
PYCACHE_DIR = RESULTS_DIR / ".pycache"

#: A repetition that takes longer than this is reported as crashed.
CHILD_TIMEOUT_S = 900


@dataclass
class MetricResult:
    """One metric over the repetitions of its workload."""

    metric: Metric
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def holds(self) -> bool | None:
        target = self.metric.target
        return None if target is None else target.holds(self.median)

    def verdict(self) -> str:
        target = self.metric.target
        if target is None:
            return ""
        if target.holds(self.median):
            return "ok"
        return f"MISSED by {100 * target.shortfall(self.median):.0f}%"


@dataclass
class WorkloadResult:
    """The repetitions of one workload and what they add up to."""

    workload: Workload
    backend: str = SQLITE
    status: str = "ok"  # ok | skipped | wrong | crashed
    message: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[MetricResult] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in ("wrong", "crashed")


def child_env(db: Path | str, backend: str = SQLITE) -> dict[str, str]:
    """The environment of a child: its database (a file path or a URL) and backend, this tree
    importable (daemon workers import the benchmark WorkChains by module path), and a bytecode
    cache."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    python_path = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(
        MINIENGINE_DB=str(db),
        **{BACKEND_VAR: backend},
        PYTHONPATH=os.pathsep.join(dict.fromkeys(python_path)),
        PYTHONPYCACHEPREFIX=str(PYCACHE_DIR),
    )
    return env


def run_child(
    workload: Workload,
    *,
    quick: bool,
    profile: Path | None = None,
    cluster: Cluster | None = None,
) -> dict[str, Any]:
    """Run one repetition of ``workload`` in a fresh interpreter and return its report: on a
    fresh sqlite file, or on a fresh database of ``cluster`` (PostgreSQL)."""
    if cluster is None:
        return _run_child(workload, quick=quick, profile=profile, url=None)
    with cluster.database() as url:
        return _run_child(workload, quick=quick, profile=profile, url=url)


def _run_child(
    workload: Workload, *, quick: bool, profile: Path | None, url: str | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="miniengine-bench-") as tmp:
        out = Path(tmp) / "result.json"
        env = child_env(Path(tmp) / "engine.sqlite") if url is None else child_env(url, POSTGRESQL)
        command = [sys.executable, "-m", "benchmarks.child", workload.id, "--out", str(out)]
        if quick:
            command.append("--quick")
        if profile is not None:
            command += ["--profile", str(profile)]
        try:
            completed = subprocess.run(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return {"status": "crashed", "error": f"timed out after {CHILD_TIMEOUT_S} s"}
        finally:
            stopped = stop_leftover_daemons(Path(tmp), url)
        if out.exists():
            report: dict[str, Any] = json.loads(out.read_text())
        else:
            report = {"status": "crashed", "error": f"exited {completed.returncode} with no result"}
        if completed.returncode != 0 and report.get("status") == "ok":
            report.update(status="crashed", error=f"exited {completed.returncode} after measuring")
        if report["status"] in ("wrong", "crashed"):
            report["stderr_tail"] = completed.stderr[-4000:]
        if stopped:
            report.setdefault("details", {})["leftover_daemons_killed"] = stopped
        return report


def stop_leftover_daemons(folder: Path, url: str | None = None) -> list[int]:
    """SIGKILL the daemons a child started in ``folder`` (or for the PostgreSQL database
    ``url``) and left running (it crashed or timed out): their supervisors run in sessions of
    their own and would outlive it.  Their pids are in the daemon pid files next to the
    databases (a URL's: in this host's folder for it); nothing else is touched."""
    import json
    import signal

    pid_files = list(folder.glob("*.daemon.pid"))
    if url is not None:
        from miniengine.daemon.files import DaemonFiles

        pid_files.append(DaemonFiles(url).pid_file)
    killed: list[int] = []
    for pid_file in pid_files:
        try:
            state = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            continue
        pids = [state.get("pid"), *(state.get("workers") or [])]
        for pid in pids:
            if not isinstance(pid, int) or not _is_ours(pid, None if url else folder):
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
            killed.append(pid)
    return killed


def _is_ours(pid: int, folder: Path | None) -> bool:
    """True if ``pid`` is a live miniengine daemon process serving a database in ``folder``
    (``None``: a URL's daemon, which has no database on its command line)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    in_folder = folder is None or any(str(folder).encode() in part for part in command)
    return in_folder and any(b"miniengine.daemon" in part for part in command)


def run_workload(
    workload: Workload,
    *,
    quick: bool,
    repeat: int,
    position: str,
    backend: str = SQLITE,
    cluster: Cluster | None = None,
) -> WorkloadResult:
    """Run ``repeat`` repetitions (fewer if one is skipped or fails) on ``backend``, printing
    progress; ``cluster`` is the PostgreSQL cluster of the run (for ``postgresql``)."""
    result = WorkloadResult(workload, backend)
    clock = time.perf_counter()
    if backend not in workload.backends:
        result.status = "skipped"
        result.message = f"measured on {', '.join(workload.backends)} only"
        return result
    for rep in range(1, repeat + 1):
        _progress(
            f"[{position}] {workload.id} {workload.title} ({backend}): rep {rep}/{repeat} ... "
        )
        start = time.perf_counter()
        report = run_child(workload, quick=quick, cluster=cluster)
        result.runs.append(report)
        status = report["status"]
        if status != "ok":
            result.status = status
            result.message = report.get("reason") or report.get("error")
            _progress(f"{status}: {result.message}\n")
            if report.get("traceback"):
                _progress(report["traceback"])
            if report.get("stderr_tail"):
                _progress(report["stderr_tail"])
            break
        elapsed = time.perf_counter() - start
        cpu_ref = report.get("cpu_ref_ms", 0.0)
        headline = next((m for m in workload.metrics if m.key in report["metrics"]), None)
        shown = (
            f"{report['metrics'][headline.key]:,.{headline.digits}f} {headline.unit}"
            if headline is not None
            else "no metric"
        )
        _progress(f"{shown} ({elapsed:.1f} s, cpu_ref {cpu_ref:.0f} ms)\n")
    if result.status == "ok":
        result.metrics = [
            MetricResult(metric, values)
            for metric in workload.metrics
            if (
                values := [
                    run["metrics"][metric.key]
                    for run in result.runs
                    if metric.key in run["metrics"]
                ]
            )
        ]
    result.elapsed_s = time.perf_counter() - clock
    return result


def _progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()
