"""``--compare aiida``: run AiiDA's matching run-mode workloads (W1-W4 of
``peers/aiida/workloads.py``) in another interpreter, in the same sitting, and print the ratios;
for the CalcJob workload (W8), show AiiDA's recorded figures beside ours (:data:`RECORDED`).

The suite never installs aiida-core and never imports it: the given interpreter (a virtual
environment where ``aiida-core`` is installed and a profile exists) runs the peer's script, which
prints one JSON line per workload.  The machine is noisy, so the ratio measured in one run is the
figure of merit.  Problems (no such interpreter, no aiida there, a workload that fails) are
reported and the comparison goes on without them; they never fail the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from benchmarks.runner import ROOT, WorkloadResult

#: ``peers/aiida/workloads.py`` in the shared folder beside the repository.
DEFAULT_SCRIPT = ROOT.parent / "shared" / "peers" / "aiida" / "workloads.py"

#: A single AiiDA workload taking longer than this is abandoned.
AIIDA_TIMEOUT_S = 600


@dataclass(frozen=True)
class Peer:
    """How one of our workloads maps to the peer's script and its JSON."""

    workload: str  # our workload id
    metric: str  # our metric key
    args: tuple[str, ...]  # the peer script's arguments (full run)
    quick_args: tuple[str, ...]
    field: str  # the key of the peer's JSON line
    kind: Literal["rate", "time"]  # rate: higher is better; time: lower is better
    scale: float = 1.0  # multiplies the peer's value into our metric's unit
    name: str = ""  # the row's name when not the workload id


# AiiDA takes 250 ms per W1 call and 3.3 s per W3 workchain here: a few calls give the ratio.
PEERS = (
    Peer("W1", "calls_per_s", ("w1", "--n", "40"), ("w1", "--n", "10"), "per_s", "rate"),
    Peer("W2", "wf_per_s", ("w2", "--n", "20"), ("w2", "--n", "5"), "per_s", "rate"),
    Peer("W3", "wc_per_s", ("w3", "--n", "5"), ("w3", "--n", "2"), "per_s", "rate"),
    Peer(
        "W4",
        "wall_ms",
        ("w4", "--depth", "10"),
        ("w4", "--depth", "10"),
        "wall_s",
        "time",
        scale=1e3,
    ),
)


#: AiiDA's figures for the CalcJob workloads, as recorded with its own scripts (a daemon with
#: RabbitMQ, a profile and a computer of its own: the suite does not set those up), the same
#: day on this kind of machine.  The ratio is taken against AiiDA's best figure.
RECORDED_WHEN = "2026-12-05"


@dataclass(frozen=True)
class Recorded:
    peer: Peer
    value: float  # AiiDA's best recorded figure, in our metric's unit
    text: str  # the recorded figures as shown


RECORDED = (
    Recorded(
        Peer("W8", "jobs_per_s", (), (), "", "rate", name="W8 200 trivial CalcJobs"),
        2.09,
        "1.06-1.72 (2.09 without login shells)",
    ),
    Recorded(
        Peer("W8", "worker_cpu_ms_per_job", (), (), "", "time", name="W8 worker CPU per job"),
        486,
        "676-759 (486-503 without login shells)",
    ),
    Recorded(
        Peer("W8", "run_ms", (), (), "", "time", name="W8 one CalcJob in run mode"),
        960,
        "960 (median; 730-1,140)",
    ),
)


@dataclass
class Comparison:
    peer: Peer
    args: tuple[str, ...] = ()
    ours: float | None = None
    theirs: float | None = None
    error: str | None = None
    seconds: float = 0.0
    recorded: str | None = None  # AiiDA's recorded figures (not run now), as shown

    @property
    def ratio(self) -> float | None:
        """How many times faster miniengine is (> 1: faster)."""
        if not self.ours or not self.theirs:
            return None
        if self.peer.kind == "rate":
            return self.ours / self.theirs
        return self.theirs / self.ours


def default_python() -> str | None:
    """``$AIIDA_PYTHON``, else ``$AIIDA_VENV/bin/python`` (as in peers/aiida/RESULTS.md)."""
    if os.environ.get("AIIDA_PYTHON"):
        return os.environ["AIIDA_PYTHON"]
    if os.environ.get("AIIDA_VENV"):
        return str(Path(os.environ["AIIDA_VENV"]) / "bin" / "python")
    return None


def problem_with(python: str | None, script: Path) -> str | None:
    """Why the comparison cannot run at all, or None."""
    if not python:
        return (
            "--compare aiida needs --aiida-python PATH (or $AIIDA_PYTHON / $AIIDA_VENV): the "
            "interpreter of a virtual environment where aiida-core is installed"
        )
    path = Path(python)
    if not path.exists():
        return f"--aiida-python {python}: no such file"
    if not os.access(path, os.X_OK) or path.is_dir():
        return f"--aiida-python {python}: not an executable file"
    if not script.is_file():
        return f"the AiiDA workload script {script} is missing"
    return None


def run_peer(
    python: str, script: Path, peer: Peer, args: Sequence[str], *, profile: str | None
) -> tuple[float | None, str | None]:
    """Run one AiiDA workload; its value in our metric's unit, or an error."""
    command = [python, str(script), *args]
    if profile:
        command += ["--profile", profile]
    try:
        completed = subprocess.run(
            command,
            cwd=script.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=AIIDA_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {AIIDA_TIMEOUT_S} s"
    except OSError as exc:
        return None, f"could not start {python}: {exc}"
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"exited {completed.returncode}: {tail}"
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except ValueError as exc:
        return None, f"unreadable output ({exc}): {lines[-1][:200]}"
    if report.get("ok") is False:
        return None, f"wrong result: {report.get('error') or report}"
    value = report.get(peer.field)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None, f"no {peer.field!r} in its output: {lines[-1][:200]}"
    return float(value) * peer.scale, None


def compare(
    results: Sequence[WorkloadResult],
    python: str,
    *,
    script: Path = DEFAULT_SCRIPT,
    quick: bool = False,
    profile: str | None = None,
    progress: Any = None,
) -> list[Comparison]:
    """Run the peer workloads that match those of ``results`` that ran; one Comparison each."""
    ours = {
        result.workload.id: {m.metric.key: m.median for m in result.metrics}
        for result in results
        if result.status == "ok"
    }
    comparisons = []
    for peer in PEERS:
        if peer.workload not in ours:
            continue
        args = peer.quick_args if quick else peer.args
        comparison = Comparison(peer, args, ours=ours[peer.workload].get(peer.metric))
        if progress is not None:
            progress(f"[aiida] {peer.workload}: workloads.py {' '.join(args)} ... ")
        start = time.perf_counter()
        comparison.theirs, comparison.error = run_peer(python, script, peer, args, profile=profile)
        comparison.seconds = time.perf_counter() - start
        if progress is not None:
            progress(
                f"{comparison.error}\n"
                if comparison.error
                else f"{comparison.theirs:,.3g} ({comparison.seconds:.0f} s)\n"
            )
        comparisons.append(comparison)
    return comparisons


def recorded(results: Sequence[WorkloadResult]) -> list[Comparison]:
    """AiiDA's recorded figures beside ours, for the workloads of ``results`` that ran."""
    ours = {
        result.workload.id: {m.metric.key: m.median for m in result.metrics}
        for result in results
        if result.status == "ok"
    }
    return [
        Comparison(
            item.peer,
            ours=ours[item.peer.workload].get(item.peer.metric),
            theirs=item.value,
            recorded=f"{item.text} (recorded {RECORDED_WHEN})",
        )
        for item in RECORDED
        if item.peer.workload in ours and item.peer.metric in ours[item.peer.workload]
    ]


def format_comparison(comparisons: Sequence[Comparison], *, markdown: bool = False) -> str:
    from benchmarks.report import render

    headers = ("workload", "unit", "miniengine", "AiiDA 2.9.4", "miniengine is")
    rows: list[tuple[str, ...]] = []
    for comparison in comparisons:
        peer = comparison.peer
        unit = "ms" if peer.kind == "time" else "per s"
        ratio = comparison.ratio
        if comparison.recorded is not None:
            theirs = comparison.recorded
        elif comparison.theirs is not None:
            theirs = f"{comparison.theirs:,.3g} (this run)"
        else:
            theirs = f"failed: {comparison.error}"
        rows.append(
            (
                peer.name or peer.workload,
                unit,
                f"{comparison.ours:,.3g}" if comparison.ours is not None else "",
                theirs,
                f"x{ratio:,.0f} faster" if ratio is not None else "",
            )
        )
    return render(headers, rows, markdown=markdown, numeric={2, 3})


def to_json(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    return [
        {
            "workload": c.peer.workload,
            "args": list(c.args),
            "miniengine": c.ours,
            "aiida": c.theirs,
            "ratio": c.ratio,
            "error": c.error,
            "aiida_seconds": c.seconds,
            "recorded": c.recorded,
        }
        for c in comparisons
    ]
