"""``python -m benchmarks``: run the workloads, print the table, write the JSON.

Exits 0 whenever the suite ran, targets missed or not; 1 if a workload crashed or gave a wrong
result; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.backends import BACKENDS, POSTGRESQL, SQLITE, Cluster, postgres_problem
from benchmarks.compare import (
    DEFAULT_SCRIPT,
    Comparison,
    compare,
    default_python,
    format_comparison,
    problem_with,
    recorded,
)
from benchmarks.compare import to_json as comparison_json
from benchmarks.machine import cpu_reference_ms, machine_info
from benchmarks.profiling import print_top
from benchmarks.registry import Workload
from benchmarks.report import (
    format_scaling,
    format_table,
    furthest_from_target,
    growing,
    plot_scaling,
    table_rows,
    to_json,
    write_json,
)
from benchmarks.runner import RESULTS_DIR, ROOT, WorkloadResult, run_child, run_workload
from benchmarks.workloads import all_workloads, select

PROFILE_LINES = 25


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the miniengine benchmark workloads and compare them with the targets "
        "of DESIGN.md. Each repetition runs in a fresh interpreter with its own database.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller workloads, 1 repetition by default"
    )
    parser.add_argument("--only", metavar="W1,W2", help="comma-separated workload ids to run")
    parser.add_argument(
        "--repeat", type=int, metavar="N", help="repetitions per workload (default 3, quick 1)"
    )
    parser.add_argument(
        "--profile",
        metavar="ID",
        help="run one workload once under cProfile, save it to benchmarks/results/ and print "
        f"the top {PROFILE_LINES} functions by own time (no table)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table as Markdown (for RESULTS.md)"
    )
    parser.add_argument(
        "--backend",
        choices=[*BACKENDS, "both"],
        help="the database to measure on: a sqlite file, a private PostgreSQL cluster started "
        "for the run, or both side by side (default: both when PostgreSQL's binaries and "
        "psycopg are here, else sqlite); workloads that run on sqlite only stay sqlite-only",
    )
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    parser.add_argument(
        "--compare",
        choices=["aiida"],
        help="also run the matching AiiDA workloads (run mode W1-W4) in another interpreter "
        "and print the ratios, with AiiDA's recorded CalcJob figures beside W8",
    )
    parser.add_argument(
        "--aiida-python",
        metavar="PATH",
        help="the Python of an environment with aiida-core installed (default $AIIDA_PYTHON, "
        "else $AIIDA_VENV/bin/python)",
    )
    parser.add_argument(
        "--aiida-profile", metavar="NAME", help="the AiiDA profile to use (default: its default)"
    )
    parser.add_argument(
        "--aiida-script",
        metavar="PATH",
        type=Path,
        default=DEFAULT_SCRIPT,
        help=f"the peer's workload script (default {DEFAULT_SCRIPT})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for workload in all_workloads().values():
            print(f"{workload.id:<12} {workload.title} [{', '.join(workload.backends)}]")
        return 0
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        workloads = select(args.profile or args.only)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    backends = _backends(args.backend, default=SQLITE if args.profile else None)
    if backends is None:
        return 2
    needed = any(POSTGRESQL in w.backends for w in workloads)
    if len(backends) > 1 and not needed:
        backends = [SQLITE]  # nothing chosen runs on PostgreSQL: no cluster to start
    cluster = None
    if POSTGRESQL in backends and needed:
        cluster = Cluster()
        sys.stderr.write("starting a private PostgreSQL cluster for the run ... ")
        start = time.perf_counter()
        try:
            cluster.start()
        except Exception as exc:  # the run goes on without it, and says so
            cluster.stop()
            sys.stderr.write(f"failed: {exc}\n")
            if backends == [POSTGRESQL]:
                return 1
            print("note: PostgreSQL could not be started; measuring on sqlite only")
            backends, cluster = [SQLITE], None
        else:
            sys.stderr.write(f"{time.perf_counter() - start:.1f} s\n")
    try:
        if args.profile:
            if len(workloads) != 1:
                parser.error("--profile takes one workload id")
            return _profile(workloads[0], quick=args.quick, stamp=stamp, cluster=cluster)
        return _run(workloads, args, stamp=stamp, argv=argv, backends=backends, cluster=cluster)
    finally:
        if cluster is not None:
            cluster.stop()


def _backends(chosen: str | None, *, default: str | None) -> list[str] | None:
    """The backends to measure on (None: PostgreSQL was asked for and cannot run here)."""
    problem = postgres_problem()
    if chosen is None:
        chosen = default or ("both" if problem is None else SQLITE)
        if problem is not None and default is None:
            print(f"note: measuring on sqlite only: {problem}")
    if chosen == SQLITE:
        return [SQLITE]
    if problem is not None:
        print(f"--backend {chosen}: {problem}", file=sys.stderr)
        return None
    return [POSTGRESQL] if chosen == POSTGRESQL else [SQLITE, POSTGRESQL]


def _run(
    workloads: list[Workload],
    args: argparse.Namespace,
    *,
    stamp: str,
    argv: list[str] | None,
    backends: list[str],
    cluster: Cluster | None,
) -> int:
    quick, markdown = args.quick, args.markdown
    default_repeat = args.repeat if args.repeat is not None else (1 if quick else 3)
    machine = machine_info(ROOT)
    cpu_before = cpu_reference_ms()
    start = time.perf_counter()
    results: list[WorkloadResult] = []
    for index, workload in enumerate(workloads, 1):
        position = f"{index}/{len(workloads)}"
        repeat = args.repeat or workload.repeat_for(quick, default_repeat)
        for backend in backends:  # side by side: each workload on each backend in turn
            results.append(
                run_workload(
                    workload,
                    quick=quick,
                    repeat=repeat,
                    position=position,
                    backend=backend,
                    cluster=cluster if backend == POSTGRESQL else None,
                )
            )
    comparisons = _compare(results, args) if args.compare else []
    elapsed = time.perf_counter() - start
    cpu_after = cpu_reference_ms()

    if table_rows(results):
        print(format_table(results))
        if markdown:
            print("\n" + format_table(results, markdown=True))
    for backend in backends:
        furthest = furthest_from_target([r for r in results if r.backend == backend])
        if furthest is not None:
            where = f" on {backend}" if len(backends) > 1 else ""
            print(
                f"\nfurthest from its target{where}: {furthest.metric.label.strip()} "
                f"({furthest.verdict()})"
            )
    scaling = format_scaling(results)
    if scaling:
        print("\nScaling (medians; a cost should stay flat as the size grows)\n")
        print(scaling)
        if markdown:
            print("\n" + format_scaling(results, markdown=True))
        for curve in growing(results):
            print(
                f"GROWS: {curve.workload.id} {curve.series.name} rises x{curve.growth:.1f} "
                f"over {curve.workload.scaling.x_label if curve.workload.scaling else 'size'} "
                f"(limit x{curve.series.growth_limit:g}): a missing index or a quadratic loop"
            )
        caption = (
            f"1-min load average {_load(machine_info(ROOT))} at the end, "
            f"{machine['cpu_count']} CPUs, {stamp}"
        )
        for plot in plot_scaling(results, RESULTS_DIR, stamp, caption=caption):
            print(f"plot: {_relative(plot)}")
    if comparisons:
        print(
            "\nSide by side with AiiDA, measured in this run (or, where marked, as recorded "
            "with its own scripts on this kind of machine: the ratio is to its best figure)\n"
        )
        print(format_comparison(comparisons))
        if markdown:
            print("\n" + format_comparison(comparisons, markdown=True))
    meta = {
        "timestamp": stamp,
        "command": ["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)],
        "quick": quick,
        "repeat": default_repeat,
        "backends": backends,
        "elapsed_s": elapsed,
        "machine": {**machine, "cpu_ref_ms": [cpu_before, cpu_after]},
    }
    if args.compare:
        meta["compare_aiida"] = comparison_json(comparisons)
    path = write_json(to_json(results, meta), RESULTS_DIR, stamp)
    print(
        f"{machine['cpu_count']} CPUs, Python {machine['python']}, sqlite {machine['sqlite']}, "
        f"cpu_ref {cpu_before:.0f}/{cpu_after:.0f} ms (before/after; lower is quieter), "
        f"load {_load(machine)}; {elapsed:.0f} s; "
        f"wrote {_relative(path)}"
    )
    failed = [result.workload.id for result in results if result.failed]
    if failed:
        print(f"FAILED: {', '.join(failed)} crashed or gave a wrong result", file=sys.stderr)
        return 1
    return 0


def _compare(results: list[WorkloadResult], args: argparse.Namespace) -> list[Comparison]:
    results = [result for result in results if result.backend == SQLITE]  # AiiDA's figures
    written = recorded(results)  # needs no interpreter
    python = args.aiida_python or default_python()
    problem = problem_with(python, args.aiida_script)
    if problem is not None:
        sys.stderr.write(f"[aiida] no comparison: {problem}\n")
        return written
    assert python is not None
    comparisons = compare(
        results,
        python,
        script=args.aiida_script,
        quick=args.quick,
        profile=args.aiida_profile,
        progress=_write_progress,
    )
    if not comparisons:
        sys.stderr.write("[aiida] no comparison: none of W1-W4 ran\n")
    return comparisons + written


def _write_progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _profile(workload: Workload, *, quick: bool, stamp: str, cluster: Cluster | None) -> int:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    backend = POSTGRESQL if cluster is not None else SQLITE
    path = RESULTS_DIR / f"profile-{workload.id}-{backend}-{stamp}.prof"
    sys.stderr.write(f"profiling {workload.id} {workload.title} ({backend}) ...\n")
    report = run_child(workload, quick=quick, profile=path, cluster=cluster)
    if report["status"] != "ok":
        message = report.get("reason") or report.get("error")
        print(f"{workload.id}: {report['status']}: {message}", file=sys.stderr)
        for key in ("traceback", "stderr_tail"):
            if report.get(key):
                sys.stderr.write(report[key])
        return 0 if report["status"] == "skipped" else 1
    for metric in workload.metrics:
        value = report["metrics"][metric.key]
        print(f"{metric.label.strip()}: {value:,.{metric.digits}f} {metric.unit} (under cProfile)")
    print(f"profile: {_relative(path)} (every thread of the benchmark's process)")
    print_top(path, PROFILE_LINES)
    for daemon_profile in sorted(path.parent.glob(f"{path.stem}-*.prof")):
        print(f"profile: {_relative(daemon_profile)} (a daemon process, every thread)")
        print_top(daemon_profile, PROFILE_LINES)
    return 0


def _load(machine: dict[str, Any]) -> str:
    load = machine.get("load_average")
    return f"{load[0]:.1f}" if load else "n/a"


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
