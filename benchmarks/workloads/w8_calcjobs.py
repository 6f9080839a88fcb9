"""W8: trivial CalcJobs (``/bin/true`` on ``core.local`` + ``core.direct``) submitted to a running
2-worker daemon, from the first ``submit`` until all of them are seen terminated (AiiDA's
``peers/aiida/calcjob/cj_daemon.py``).  Each job goes through every stage: upload, submit (a
shell that starts the program and records the scheduler's answer), the wait (the worker learns
of the exit from a pidfd, with no poll), retrieve and the terminal commit.

The engine's cost per job is the CPU time of the workers over the round, from ``/proc``: their
own (the Python of the engine) and that of the children they reaped (the shells of the
transport; the jobs themselves are detached and not counted).  AiiDA's figure counts both.

Also, on the same daemon, one job sleeping 5 s: from its ``submit`` to seen finished (the floor
is the 5 s); and without a daemon, the latency of ``run(...)`` for one trivial job, first in the
process (cold) and then warm.
"""

from __future__ import annotations

import statistics
import time

from benchmarks.calcjob_support import (
    check_jobs,
    cpu_snapshot,
    cpu_used,
    installed_code,
    load_average,
    submit_jobs,
    wait_jobs,
    work_folder,
)
from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check
from benchmarks.support import daemon, db_path, rss_mib


def run_mode(code: object, reps: int) -> dict[str, object]:
    """``run`` of one trivial job, ``reps + 1`` times: the first (cold) and the warm ones, ms."""
    from benchmarks.calcjobs import OPTIONS, CommandCalculation
    from miniengine import run

    walls = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        result, node = run.get_node(CommandCalculation, code=code, metadata={"options": OPTIONS})
        walls.append(1e3 * (time.perf_counter() - start))
        check(
            node.is_finished_ok and {"remote_folder", "retrieved"} <= set(result),
            f"run(CommandCalculation) ended {node.process_state} [{node.exit_status}] "
            f"with outputs {sorted(result)}",
        )
    return {"first_ms": walls[0], "warm_ms": walls[1:], "median_ms": statistics.median(walls[1:])}


def sleeping_job(code: object, seconds: float) -> dict[str, float]:
    """One job of ``sleep <seconds>`` on the running daemon: submit to seen finished, s."""
    (node,), _ = submit_jobs(code, 1, arguments=f"{seconds:g}")
    start = time.perf_counter()
    end = wait_jobs([node], timeout=60 + seconds, interval=0.001)
    check_jobs([node])
    return {"sleep_s": seconds, "submit_to_finished_s": end - start}


def measure(params: Params) -> Measurement:
    from miniengine.runtime.computers import localhost_computer

    n = params["n"]
    computer = localhost_computer(work_folder())
    true = installed_code(computer, "/bin/true", "true")
    sleep = installed_code(computer, "/bin/sleep", "sleep")
    details: dict[str, object] = {"n": n, "workers": params["workers"]}

    # run mode first, in this fresh process: its first job pays for the lazy imports
    run = run_mode(true, params["run_reps"])
    details["run_mode"] = run

    with daemon(db_path(), workers=params["workers"]) as running:
        warm, _ = submit_jobs(true, params["warmup"])  # the workers import the CalcJob, untimed
        wait_jobs(warm, timeout=120)
        check_jobs(warm)
        pids = running.worker_pids()
        before = cpu_snapshot(pids)
        load_before = load_average()
        start = time.perf_counter()
        nodes, submit_s = submit_jobs(true, n)
        end = wait_jobs(nodes, timeout=600)
        after = cpu_snapshot(pids)
        load_after = load_average()
        wall = end - start
        rss = [rss_mib(pid) for pid in pids]
        check_jobs(nodes)
        sleeper = sleeping_job(sleep, params["sleep_s"])
        respawned = sorted(set(running.worker_pids()) - set(pids))
    used = cpu_used(before, after)
    details.update(
        wall_s=wall,
        submit_s=submit_s,
        submit_per_s=n / submit_s,
        worker_pids=pids,
        workers_respawned=respawned,
        worker_cpu_s={"own": used.own, "children": used.children},
        worker_rss_mib_after=rss,
        load1_before_after=[load_before, load_after],
        sleeping_job=sleeper,
        daemon_start_s=running.start_s,
    )
    return Measurement(
        metrics={
            "jobs_per_s": n / wall,
            "worker_cpu_ms_per_job": 1e3 * used.total / n,
            "worker_own_cpu_ms_per_job": 1e3 * used.own / n,
            "run_ms": float(run["median_ms"]),  # type: ignore[arg-type]
            "run_first_ms": float(run["first_ms"]),  # type: ignore[arg-type]
            "sleep5_s": sleeper["submit_to_finished_s"],
        },
        details=details,
    )


WORKLOAD = Workload(
    id="W8",
    title="200 trivial CalcJobs (core.local, core.direct), 2-worker daemon",
    metrics=(
        Metric(
            "jobs_per_s",
            "W8 200 CalcJobs /bin/true, 2 workers",
            "jobs/s",
            Target(">=", 100),
            aiida="1.06-1.72/s",
            digits=1,
        ),
        Metric(
            "worker_cpu_ms_per_job",
            "  W8 worker CPU per job (with its shells)",
            "ms",
            aiida="700-760 ms",
            digits=1,
        ),
        Metric(
            "worker_own_cpu_ms_per_job",
            "  W8 of it in the workers themselves",
            "ms",
            digits=1,
        ),
        Metric(
            "run_ms",
            "  W8 one CalcJob in run mode (warm)",
            "ms",
            Target("<=", 50),
            aiida="960 ms",
            digits=1,
        ),
        Metric("run_first_ms", "  W8 the first in the process (cold)", "ms", digits=1),
        Metric(
            "sleep5_s",
            "  W8 a job sleeping 5 s: submit to finished",
            "s",
            Target("<=", 5.2),
            aiida="19-29 s (50 at once)",
            digits=2,
        ),
    ),
    measure=measure,
    params={"n": 200, "workers": 2, "warmup": 2, "run_reps": 10, "sleep_s": 5},
    quick_params={"n": 200, "workers": 2, "warmup": 2, "run_reps": 5, "sleep_s": 5},
)
