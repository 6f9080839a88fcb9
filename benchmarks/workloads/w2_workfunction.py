"""W2: the seed's scenario 1 workfunction, ``run.get_node(add_and_multiply, ...)`` repeated."""

from __future__ import annotations

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, WrongResult, check
from benchmarks.timing import count_rows, latency_stats, timed

WARMUP = 5


def measure(params: Params) -> Measurement:
    from benchmarks.procs import add_and_multiply
    from miniengine import Int, find_processes, run

    def call(i: int) -> None:
        result, node = run.get_node(add_and_multiply, x=Int(i), y=Int(2), z=Int(3))
        # Not check(): its f-string message would be formatted at every call.
        if not (node.is_finished_ok and result == (i + 2) * 3):
            raise WrongResult(
                f"add_and_multiply({i}, 2, 3) returned {result!r} and ended "
                f"{node.process_state} [{node.exit_status}]"
            )

    first = timed(call, WARMUP)
    stats = latency_stats(timed(call, params["n"]))
    calls = WARMUP + params["n"]
    recorded = len(find_processes(process_label="add_and_multiply"))
    check(recorded == calls, f"{calls} workflows recorded {recorded} process nodes")
    nodes = count_rows("nodes")
    return Measurement(
        metrics={"wf_per_s": stats["per_s"]},
        details={
            **stats,
            "first_call_ms": 1e3 * first[0],
            "nodes_per_wf": nodes / calls if nodes is not None else None,
        },
    )


WORKLOAD = Workload(
    id="W2",
    title="seed scenario 1 workfunction, run.get_node",
    metrics=(
        Metric(
            "wf_per_s",
            "W2 scenario 1 workfunction",
            "wf/s",
            Target(">=", 800),
            aiida="1.38/s",
        ),
    ),
    measure=measure,
    params={"n": 1000},
    quick_params={"n": 200},
    backends=("sqlite", "postgresql"),
)
