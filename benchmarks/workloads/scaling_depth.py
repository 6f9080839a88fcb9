"""Scaling with nesting depth: the seed's NestedWorkChain at depth 10, 100 and 1,000 under
``run``.  No recursion limit may be hit and each level should cost the same: time per level
(wall / (depth + 1)) is the curve."""

from __future__ import annotations

from benchmarks.registry import Measurement, Metric, Params, Scaling, Series, Workload
from benchmarks.workloads.w4_nested import nested_run

DEPTHS = (10, 100, 1_000)


def measure(params: Params) -> Measurement:
    nested_run(10)  # warm-up
    metrics: dict[str, float] = {}
    details: dict[str, float] = {}
    for depth in params["depths"]:
        wall = nested_run(depth)
        metrics[f"level_ms@{depth}"] = 1e3 * wall / (depth + 1)
        details[f"wall_ms@{depth}"] = 1e3 * wall
    return Measurement(metrics=metrics, details=details)


WORKLOAD = Workload(
    id="scale-depth",
    title="NestedWorkChain depth 10/100/1000, run mode",
    metrics=tuple(Metric(f"level_ms@{d}", f"per level at depth {d}", "ms") for d in DEPTHS),
    measure=measure,
    params={"depths": DEPTHS},
    quick_params={"depths": DEPTHS},
    repeat=1,
    scaling=Scaling(
        x_label="nesting depth",
        series=(
            Series(
                "NestedWorkChain per level",
                "ms",
                tuple((d, f"level_ms@{d}") for d in DEPTHS),
                digits=2,
            ),
        ),
    ),
)
