"""W1: the calcfunction ``add`` called directly in run mode, as ``peers/aiida/workloads.py w1``
does: ``add(Int(i), Int(1))`` in a loop."""

from __future__ import annotations

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, WrongResult, check
from benchmarks.timing import count_rows, latency_stats, timed

WARMUP = 10


def measure(params: Params) -> Measurement:
    from benchmarks.procs import add
    from miniengine import Int, find_processes

    def call(i: int) -> None:
        result = add(Int(i), Int(1))
        # Not check(): its f-string message would be formatted at every call.
        if not (isinstance(result, Int) and result.is_stored and result == i + 1):
            raise WrongResult(f"add({i}, 1) returned {result!r}, not a stored Int({i + 1})")

    first = timed(call, WARMUP)
    stats = latency_stats(timed(call, params["n"]))
    calls = WARMUP + params["n"]
    recorded = len(find_processes(process_label="add"))
    check(recorded == calls, f"{calls} calls of add recorded {recorded} process nodes")
    nodes = count_rows("nodes")
    return Measurement(
        metrics={"calls_per_s": stats["per_s"]},
        details={
            **stats,
            "first_call_ms": 1e3 * first[0],
            "nodes_per_call": nodes / calls if nodes is not None else None,
        },
    )


WORKLOAD = Workload(
    id="W1",
    title="calcfunction add, run mode",
    metrics=(
        Metric(
            "calls_per_s",
            "W1 calcfunction add, run mode",
            "calls/s",
            Target(">=", 2000),
            aiida="3.96/s",
        ),
    ),
    measure=measure,
    params={"n": 2000},
    quick_params={"n": 300},
    backends=("sqlite", "postgresql"),
)
