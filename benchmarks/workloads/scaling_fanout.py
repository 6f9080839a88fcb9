"""Scaling with fan-out: one FanOutWorkChain ``self.submit``s N LeafWorkChains in one step and
sums their outputs in the next, on a 1-worker daemon, for N = 10, 100, 1,000 (and 10,000 in the
full run).  The parent waits evicted; each child's terminal transaction decrements its count and
the last one enqueues it, so the cost per child should stay flat (O(N) in all)."""

from __future__ import annotations

import time

from benchmarks.registry import Measurement, Metric, Params, Scaling, Series, Workload, check
from benchmarks.support import Watcher, daemon, db_path

SIZES = (10, 100, 1_000, 10_000)


def fan_out(n: int, timeout: float) -> float:
    """Submit FanOutWorkChain(n) to the running daemon, wait, check; seconds."""
    from benchmarks.workchains import FanOutWorkChain
    from miniengine import Int, submit

    start = time.perf_counter()
    node = submit(FanOutWorkChain, n=Int(n))
    watcher = Watcher(db_path(), [node.pk])
    try:
        end = watcher.wait(timeout, interval=0.002)
    finally:
        watcher.close()
    expected = n * (n - 1) // 2
    check(
        node.is_finished_ok and node.outputs.total == expected,
        f"FanOutWorkChain(n={n}) ended {node.process_state} [{node.exit_status}], "
        f"not total={expected}",
    )
    return end - start


def measure(params: Params) -> Measurement:
    metrics: dict[str, float] = {}
    details: dict[str, float] = {}
    with daemon(db_path(), workers=1):
        fan_out(10, 60)  # warm-up
        for n in params["sizes"]:
            wall = fan_out(n, 600)
            metrics[f"child_us@{n}"] = 1e6 * wall / n
            details[f"wall_s@{n}"] = wall
    return Measurement(metrics=metrics, details=details)


WORKLOAD = Workload(
    id="scale-fanout",
    title="fan-out of one WorkChain to 10..10000 children, daemon",
    metrics=tuple(Metric(f"child_us@{n}", f"per child at fan-out {n}", "µs") for n in SIZES),
    measure=measure,
    params={"sizes": SIZES},
    quick_params={"sizes": SIZES[:3]},
    repeat=1,
    scaling=Scaling(
        x_label="children of one WorkChain",
        series=(Series("per child (1 worker)", "µs", tuple((n, f"child_us@{n}") for n in SIZES)),),
    ),
)
