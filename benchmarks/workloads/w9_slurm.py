"""W9: 1,000 CalcJobs that sleep 5 s on a real single-node SLURM (``core.local`` +
``core.slurm``), watched by one daemon worker.

A private cluster is started for the repetition (``tests/services/slurm.py``: munged,
slurmctld and slurmd in a temp folder, a node of 250 CPUs, so the jobs run in four waves: with
1,000 at once on this 2-core machine the load passed 100 and SLURM failed the node, exit code
140 for 960 of them).  The partition is down while the jobs are submitted, so they all queue:
once the worker has submitted every one of them (each has its row in ``calcjob_jobs``), its
memory is read with all of them waiting, over two poll intervals; then the partition goes up,
the jobs run, and the clock runs from the end of the last program (the mtime of the exit status
file its job script writes) until every CalcJob is seen terminated.

The scheduler commands the worker runs are counted by wrapper scripts first on the daemon's
``PATH`` (``squeue``, ``sacct``, ``sbatch``): the most ``squeue`` calls in any poll interval
should be 1, whatever the number of jobs.  The computer's poll interval is 5 s (``--quick``:
50 jobs of 1 s, polled every 2 s).
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.calcjob_support import (
    RssSampler,
    check_jobs,
    counting_wrappers,
    installed_code,
    jobs_with_scheduler,
    most_in_a_window,
    read_calls,
    submit_jobs,
    wait_jobs,
    work_folder,
)
from benchmarks.registry import Measurement, Metric, Params, Skipped, Target, Workload, check
from benchmarks.support import daemon, db_path

SCHEDULER_COMMANDS = ("squeue", "sacct", "sbatch", "scancel")
#: squeue calls are counted in windows this fraction of the poll interval long: the wrappers
#: read the time after the engine's shell started, which a loaded machine delays (by up to
#: 0.26 s seen at a load of 12); a second query per interval would still be seen
WINDOW = 0.75


def cluster(folder: Path, cpus: int) -> Any:
    """The private SLURM cluster's context manager, or Skipped when it cannot run here."""
    try:
        from tests.services.slurm import missing_slurm, running_slurm
    except ImportError as exc:
        raise Skipped(f"the SLURM service helper is not importable ({exc})") from exc
    missing = missing_slurm()
    if missing:
        raise Skipped(f"slurm-wlm not installed ({', '.join(missing)} missing)")
    if os.geteuid() != 0:
        raise Skipped("the private SLURM cluster runs its daemons as root")
    return running_slurm(folder, cpus=cpus)


def partition(env: dict[str, str], name: str, state: str) -> None:
    subprocess.run(
        ["scontrol", "update", f"PartitionName={name}", f"State={state}"],
        env=env,
        check=True,
        capture_output=True,
    )


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.05) -> float:
    """Wait for ``condition()`` (read from the database, another process's doing); the
    ``perf_counter`` time it held."""
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            check(False, f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.perf_counter()


def job_ends(nodes: list[Any]) -> list[float]:
    """When each job's program ended (wall clock): its exit status file's mtime."""
    from miniengine import load_node
    from miniengine.schedulers import EXIT_STATUS_FILENAME

    ends = []
    for node in nodes:
        folder = load_node(node.pk).get_remote_workdir()
        path = Path(folder) / EXIT_STATUS_FILENAME if folder else None
        check(path is not None and path.exists(), f"job {node.pk} left no {EXIT_STATUS_FILENAME}")
        assert path is not None
        ends.append(path.stat().st_mtime)
    return ends


def gaps(times: list[float]) -> dict[str, float] | None:
    """The shortest, median and longest time between two successive calls."""
    ordered = sorted(times)
    between = [later - earlier for earlier, later in itertools.pairwise(ordered)]
    if not between:
        return None
    return {"min": min(between), "median": statistics.median(between), "max": max(between)}


def measure(params: Params) -> Measurement:
    from miniengine.runtime.computers import localhost_computer

    n, interval, seconds = params["n"], params["interval"], params["sleep_s"]
    db = db_path()
    services = db.parent / "slurm"
    services.mkdir()
    with cluster(services, cpus=params["cpus"]) as slurm:
        bin_folder, calls_log = counting_wrappers(db.parent / "wrappers", SCHEDULER_COMMANDS)
        saved = {key: os.environ.get(key) for key in ("PATH", "SLURM_CONF")}
        os.environ.update(slurm.environment())
        os.environ["PATH"] = f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}"
        env = dict(os.environ)
        try:
            computer = localhost_computer(work_folder(), label="slurm", scheduler_type="core.slurm")
            computer.set_minimum_job_poll_interval(interval)
            code = installed_code(computer, "/bin/sleep", "sleep")
            partition(env, slurm.partition, "DOWN")
            with daemon(db, workers=1) as running:
                (worker,) = running.worker_pids()
                with RssSampler(worker) as rss:
                    idle_rss = rss.now()
                    start = time.perf_counter()
                    # no --get-user-env: SLURM would run `su - <user>` per job, a login
                    # shell whose profile (here: pyenv's init, ~100 processes) is not the
                    # engine's cost and drove the load past 100
                    nodes, submit_s = submit_jobs(
                        code, n, arguments=f"{seconds:g}", import_sys_environment=False
                    )
                    queued = wait_until(
                        lambda: jobs_with_scheduler(db) >= n,
                        timeout=600,
                        what=f"{n} jobs to be with SLURM",
                    )
                    waiting = []  # all n queued: what the worker holds for them
                    for _ in range(8):
                        time.sleep(interval / 4)
                        waiting.append(rss.now())
                    released_wall = time.time()
                    partition(env, slurm.partition, "UP")
                    end = wait_jobs(nodes, timeout=600, interval=0.01)
                    end_wall = time.time() - (time.perf_counter() - end)
                    peak = rss.peak
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        check_jobs(nodes)
        ends = job_ends(nodes)
        calls = read_calls(calls_log)
    squeue = [stamp for stamp, program, _ in calls if program == "squeue"]
    squeue_ids = [
        len(arguments.split("--jobs=", 1)[1].split()[0].split(","))
        for _, program, arguments in calls
        if program == "squeue" and "--jobs=" in arguments
    ]
    counts = {
        name: sum(1 for _, program, _ in calls if program == name) for name in SCHEDULER_COMMANDS
    }
    check(counts["sbatch"] == n, f"{counts['sbatch']} sbatch calls for {n} jobs")
    watched = max(squeue) - min(squeue) if squeue else 0.0
    last_end = max(ends)
    details = {
        "n": n,
        "slurm_cpus": params["cpus"],
        "sleep_s": seconds,
        "poll_interval_s": interval,
        "submit_s": submit_s,
        "all_with_slurm_s": queued - start,
        "scheduler_calls": counts,
        "squeue_calls_per_interval_mean": len(squeue) * interval / (watched + interval),
        "squeue_gap_s": gaps(squeue),
        # when each squeue ran, from the partition going up (negative: before), with its ids
        "squeue_calls": [
            (round(stamp - released_wall, 3), len(arguments.split(",")))
            for stamp, program, arguments in calls
            if program == "squeue"
        ],
        "job_ids_per_squeue": {
            "min": min(squeue_ids, default=0),
            "max": max(squeue_ids, default=0),
        },
        "rss_mib": {"idle": idle_rss, "all_waiting": waiting, "peak": peak},
        "released_to_first_end_s": min(ends) - released_wall,
        "released_to_last_end_s": last_end - released_wall,
        "last_end_to_all_finished_s": end_wall - last_end,
        "daemon_start_s": running.start_s,
        "load1_at_end": os.getloadavg()[0],
    }
    return Measurement(
        metrics={
            "squeue_per_interval": float(most_in_a_window(squeue, WINDOW * interval)),
            "rss_waiting_mib": max(waiting),
            "rss_peak_mib": peak,
            "end_to_finished_intervals": (end_wall - last_end) / interval,
            "submitted_per_s": n / (queued - start),
        },
        details=details,
    )


WORKLOAD = Workload(
    id="W9",
    title="1,000 sleeping CalcJobs on SLURM, 1 worker",
    metrics=(
        Metric(
            "squeue_per_interval",
            "W9 1,000 SLURM jobs: most squeue in a poll interval",
            "calls",
            Target("<=", 1),
            aiida="poll per job",
        ),
        Metric(
            "rss_waiting_mib",
            "  W9 worker RSS with all jobs waiting",
            "MiB",
            Target("<=", 64),
            digits=1,
        ),
        Metric("rss_peak_mib", "  W9 worker RSS, peak over the run", "MiB", digits=1),
        Metric(
            "end_to_finished_intervals",
            "  W9 last job end to all finished",
            "intervals",
            Target("<=", 2),
            digits=2,
        ),
        Metric(
            "submitted_per_s",
            "  W9 jobs uploaded and submitted to SLURM",
            "jobs/s",
            digits=1,
        ),
    ),
    measure=measure,
    params={"n": 1000, "interval": 5.0, "sleep_s": 5, "cpus": 250},
    quick_params={"n": 50, "interval": 2.0, "sleep_s": 1, "cpus": 50},
    repeat=1,
)
