"""Daemon start-up and the memory of an idle worker.

- Start to first task done: ``start_daemon(db, workers=1)`` (which returns once the worker is
  ready), then one SmallWorkChain submitted at once, until it is seen finished.  AiiDA's 3 s is
  ``start_daemon`` until circus lists the worker, and its first SmallWorkChain took another 3 s.
- Idle worker RSS: ``VmRSS`` of the worker process 1 s after a daemon started, before it ran
  anything (AiiDA's figure is after 20 s idle).  The supervisor's RSS is a detail.

The idle daemon runs first and is stopped, so the timed start finds the bytecode and the
database file warm, as a user's second start would.
"""

from __future__ import annotations

import statistics
import time

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check
from benchmarks.support import Watcher, daemon, db_path, rss_mib, submit_small

IDLE_SECONDS = 1.0


def measure(params: Params) -> Measurement:
    db = db_path()
    with daemon(db, workers=1) as idle:
        time.sleep(IDLE_SECONDS)
        worker_rss = [rss_mib(pid) for pid in idle.workers]
        supervisor_rss = rss_mib(idle.pid)
    check(worker_rss and all(worker_rss), f"no RSS read for the workers {idle.workers}")
    starts: list[float] = []
    firsts: list[float] = []
    for _ in range(params["reps"]):
        start = time.perf_counter()
        with daemon(db, workers=1) as running:
            ready = time.perf_counter()
            nodes, _ = submit_small(1, offset=len(starts))
            watcher = Watcher(db, [nodes[0].pk])
            try:
                end = watcher.wait(60, interval=0.001)
            finally:
                watcher.close()
            node = nodes[0]
            check(node.is_finished_ok, f"the first task ended {node.process_state}")
            after_task = [rss_mib(pid) for pid in running.workers]
        starts.append(end - start)
        firsts.append(end - ready)
    return Measurement(
        metrics={
            "start_to_first_s": statistics.median(starts),
            "idle_worker_rss_mib": max(rss for rss in worker_rss if rss is not None),
        },
        details={
            "start_to_first_s_all": starts,
            "first_task_after_ready_s": firsts,
            "start_daemon_s": running.start_s,
            "idle_worker_rss_mib": worker_rss,
            "supervisor_rss_mib": supervisor_rss,
            "worker_rss_mib_after_first_task": after_task,
        },
    )


WORKLOAD = Workload(
    id="daemon",
    title="daemon start to first task done; idle worker RSS",
    metrics=(
        Metric(
            "start_to_first_s",
            "daemon start to first task done",
            "s",
            Target("<=", 0.5),
            aiida="3 s",
            digits=2,
        ),
        Metric(
            "idle_worker_rss_mib",
            "idle worker RSS",
            "MiB",
            Target("<=", 32),
            aiida="109 MiB",
            digits=1,
        ),
    ),
    measure=measure,
    params={"reps": 3},
    quick_params={"reps": 1},
)
