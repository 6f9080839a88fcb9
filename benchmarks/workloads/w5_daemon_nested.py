"""W5: the seed's NestedWorkChain at depth 10 submitted to a running 1-worker daemon: from
``submit`` until the top node is seen terminated.  Every level is a separate task: the parent
is evicted to its checkpoint while it waits, and the child's terminal transaction enqueues it
again.  The daemon is started before the clock and stopped after; one warm-up submission, then
the median of several on the same daemon."""

from __future__ import annotations

import statistics
import time

from benchmarks.backends import db_location
from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check
from benchmarks.support import Watcher, daemon, rss_mib

DEPTH = 10


def submit_nested(depth: int) -> float:
    """Submit NestedWorkChain(inp=depth), wait for it, check it; submit to seen finished, s."""
    from miniengine import Int, submit
    from miniengine.demo_nested import NestedWorkChain

    start = time.perf_counter()
    node = submit(NestedWorkChain, inp=Int(depth))
    watcher = Watcher(db_location(), [node.pk])
    try:
        end = watcher.wait(120, interval=0.001)
    finally:
        watcher.close()
    check(
        node.is_finished_ok and node.outputs.output == depth,
        f"NestedWorkChain(inp={depth}) ended {node.process_state} [{node.exit_status}]",
    )
    return end - start


def measure(params: Params) -> Measurement:
    with daemon(db_location(), workers=1) as running:
        first = submit_nested(DEPTH)
        walls = [submit_nested(DEPTH) for _ in range(params["reps"])]
        rss = [rss_mib(pid) for pid in running.workers]
    median = statistics.median(walls)
    return Measurement(
        metrics={"wall_ms": 1e3 * median},
        details={
            "depth": DEPTH,
            "first_ms": 1e3 * first,
            "walls_ms": [1e3 * wall for wall in walls],
            "per_level_ms": 1e3 * median / (DEPTH + 1),
            "daemon_start_s": running.start_s,
            "worker_rss_mib_after": rss,
        },
    )


WORKLOAD = Workload(
    id="W5",
    title="NestedWorkChain depth 10, 1-worker daemon",
    metrics=(
        Metric(
            "wall_ms",
            "W5 NestedWorkChain depth 10, daemon",
            "ms",
            Target("<=", 150),
            aiida="5.4 s",
            digits=1,
        ),
    ),
    measure=measure,
    params={"reps": 7},
    quick_params={"reps": 3},
    backends=("sqlite", "postgresql"),
)
