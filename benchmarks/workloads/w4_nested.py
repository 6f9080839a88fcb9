"""W4: the seed's NestedWorkChain (``miniengine.demo_nested``) at depth 10 under ``run``: each
level ``self.submit``s the next and waits for it, so it measures how fast a parent in run mode
learns that its child finished (AiiDA polls, 1 s per level).  One warm-up run first, then the
median of a few timed runs in the same process."""

from __future__ import annotations

import statistics
import time

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check

DEPTH = 10


def nested_run(depth: int) -> float:
    """Run NestedWorkChain(inp=depth) and check it; the wall time in seconds."""
    from miniengine import Int, run
    from miniengine.demo_nested import NestedWorkChain

    start = time.perf_counter()
    result, node = run.get_node(NestedWorkChain, inp=Int(depth))
    wall = time.perf_counter() - start
    check(
        node.is_finished_ok and result["output"] == depth,
        f"NestedWorkChain(inp={depth}) returned {result!r} and ended "
        f"{node.process_state} [{node.exit_status}]",
    )
    called = node
    for level in range(depth):
        children = [child for child in called.called if child.process_label == "NestedWorkChain"]
        check(len(children) == 1, f"level {level} called {len(children)} NestedWorkChains")
        called = children[0]
    return wall


def measure(params: Params) -> Measurement:
    first = nested_run(DEPTH)
    walls = [nested_run(DEPTH) for _ in range(params["reps"])]
    median = statistics.median(walls)
    return Measurement(
        metrics={"wall_ms": 1e3 * median},
        details={
            "depth": DEPTH,
            "first_ms": 1e3 * first,
            "walls_ms": [1e3 * wall for wall in walls],
            "per_level_ms": 1e3 * median / (DEPTH + 1),
        },
    )


WORKLOAD = Workload(
    id="W4",
    title="NestedWorkChain depth 10, run mode",
    metrics=(
        Metric(
            "wall_ms",
            "W4 NestedWorkChain depth 10, run mode",
            "ms",
            Target("<=", 40),
            aiida="10.9 s",
            digits=1,
        ),
    ),
    measure=measure,
    params={"reps": 7},
    quick_params={"reps": 3},
    backends=("sqlite", "postgresql"),
)
