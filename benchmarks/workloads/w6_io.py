"""W6-io: 2,000 WorkChains whose one step awaits a 20 ms sleep (``SleepWorkChain``: an async
step waiting on I/O, not using the CPU), run by a daemon of 1, 2 and 4 workers of 50 slots each.

The work is queued before each daemon starts (submitted with no daemon running, untimed), so the
client's submit rate does not bound the round.  The clock starts when ``start_daemon`` returns
(every worker is ready) and stops when every workchain is seen terminated; the workchains done
before the clock started are not counted.  ``steady`` is the rate from 10% to 90% done, which
leaves out the start and the tail.

The sleep alone allows 50 / 20 ms = 2,500 wc/s per worker, so a worker is bound by its own CPU
and its round trips to the database; more workers can only help if the broker spreads the tasks
over them and the database takes their transactions side by side.

Whether the CPU was the limit is measured too: the machine's busy cores during the timed round
(from ``/proc/stat``, so other programs' load counts: it is CPU the workers could not have) and
the workers' own CPU per workchain (``/proc/<pid>/stat``).  A ratio from 1 to 4 workers can only
approach 4 while four workers leave cores idle.
"""

from __future__ import annotations

import os
import time
from typing import Any

from benchmarks.backends import db_location
from benchmarks.calcjob_support import cpu_snapshot, cpu_used
from benchmarks.registry import Measurement, Metric, Params, Scaling, Series, Workload, check
from benchmarks.support import Watcher, daemon, process_states

WORKERS = (1, 2, 4)
SLOTS = 50


def submit_sleepers(n: int, offset: int) -> tuple[list[Any], float]:
    from benchmarks.workchains import SleepWorkChain
    from miniengine import Int, submit

    start = time.perf_counter()
    nodes = [submit(SleepWorkChain, x=Int(offset + i)) for i in range(n)]
    return nodes, time.perf_counter() - start


def one_round(db: Any, n: int, workers: int, offset: int) -> dict[str, Any]:
    nodes, submit_s = submit_sleepers(n, offset)
    watcher = Watcher(db, [node.pk for node in nodes])
    marks: dict[float, float] = {}

    def on_poll(done: int) -> None:
        now = time.perf_counter()
        for fraction in (0.1, 0.9):
            if fraction not in marks and done >= fraction * n:
                marks[fraction] = now

    try:
        called = time.perf_counter()
        with daemon(db, workers=workers, slots=SLOTS) as running:
            ready = time.perf_counter()
            busy_before, workers_before = _busy_jiffies(), cpu_snapshot(running.workers)
            done_at_ready = watcher.poll()
            end = watcher.wait(300, interval=0.002, on_poll=on_poll)
            busy_after, workers_after = _busy_jiffies(), cpu_snapshot(running.workers)
    finally:
        watcher.close()
    bad = [
        node.pk
        for i, node in enumerate(nodes)
        if not (node.is_finished_ok and node.outputs.x == offset + i)
    ]
    check(not bad, f"{len(bad)} of {n} SleepWorkChains did not finish OK: {bad[:5]}")
    counted = n - done_at_ready
    worker_cpu = cpu_used(workers_before, workers_after).own
    busy_cores = None
    if busy_before is not None and busy_after is not None and busy_after[1] > busy_before[1]:
        share = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])
        busy_cores = share * (os.cpu_count() or 1)
    steady = (
        0.8 * n / (marks[0.9] - marks[0.1])
        if marks.get(0.1, 0) > ready and marks[0.9] > marks[0.1]
        else None
    )
    return {
        "n": n,
        "submit_s": submit_s,
        "daemon_start_s": running.start_s,
        "done_at_ready": done_at_ready,
        "wall_s": end - ready,
        "per_s": counted / (end - ready),
        "steady_per_s": steady,
        "start_call_to_done_s": end - called,
        "busy_cores": busy_cores,
        "worker_cpu_ms_per_wc": 1000 * worker_cpu / counted if counted else None,
    }


def _busy_jiffies() -> tuple[int, int] | None:
    """The machine's busy and total CPU time so far (``/proc/stat``), or None without it."""
    try:
        with open("/proc/stat") as stat:
            values = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + values[4]  # idle and iowait
    return sum(values) - idle, sum(values)


def measure(params: Params) -> Measurement:
    db = db_location()
    n = params["n"]
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {"n": n, "slots": SLOTS}
    offset = 0
    for workers in WORKERS:
        round_ = one_round(db, n, workers, offset)
        offset += n
        metrics[f"wc_per_s@{workers}"] = round_["per_s"]
        for key, name in (("busy_cores", "busy@"), ("worker_cpu_ms_per_wc", "worker_ms@")):
            if round_[key] is not None:
                metrics[f"{name}{workers}"] = round_[key]
        details[f"{workers}w"] = round_
    metrics["speedup_4w"] = metrics["wc_per_s@4"] / metrics["wc_per_s@1"]
    metrics["speedup_2w"] = metrics["wc_per_s@2"] / metrics["wc_per_s@1"]
    states = process_states(db)
    check(set(states) == {"finished"}, f"every process should have finished: {states}")
    return Measurement(metrics=metrics, details=details)


WORKLOAD = Workload(
    id="W6-io",
    title="2,000 workchains with a 20 ms async step, 1/2/4 workers x 50 slots",
    metrics=(
        *(Metric(f"wc_per_s@{w}", f"W6-io with {w} workers", "wc/s") for w in WORKERS),
        Metric("speedup_2w", "W6-io 2 workers / 1 worker", "x", digits=2),
        Metric("speedup_4w", "W6-io 4 workers / 1 worker", "x", digits=2),
        *(
            Metric(f"busy@{w}", f"  machine's busy cores, {w} worker(s)", "cores", digits=2)
            for w in WORKERS
        ),
        *(
            Metric(f"worker_ms@{w}", f"  workers' CPU per workchain, {w} worker(s)", "ms", digits=2)
            for w in WORKERS
        ),
    ),
    measure=measure,
    params={"n": 2000},
    quick_params={"n": 500},
    repeat=1,
    scaling=Scaling(
        x_label="worker processes",
        series=(
            Series(
                "W6-io throughput",
                "wc/s",
                tuple((w, f"wc_per_s@{w}") for w in WORKERS),
                growth_limit=None,
            ),
            Series(
                "machine's busy cores",
                "cores",
                tuple((w, f"busy@{w}") for w in WORKERS),
                growth_limit=None,
                digits=2,
                perfect_scaling=False,
            ),
            Series(
                "workers' CPU per workchain",
                "ms",
                tuple((w, f"worker_ms@{w}") for w in WORKERS),
                growth_limit=None,
                digits=2,
                perfect_scaling=False,
            ),
        ),
        linear_x=True,
    ),
    backends=("sqlite", "postgresql"),
)
