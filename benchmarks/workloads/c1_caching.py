"""C1: W1's calcfunction ``add`` with caching enabled and every call a cache hit: each call
creates its node finished, as a copy of the first one (its body does not run)."""

from __future__ import annotations

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, WrongResult, check
from benchmarks.timing import latency_stats, timed

WARMUP = 10


def measure(params: Params) -> Measurement:
    from benchmarks.procs import add
    from miniengine import Int, enable_caching, find_processes

    def call(i: int) -> None:
        result = add(Int(2), Int(1))
        if not (isinstance(result, Int) and result.is_stored and result == 3):
            raise WrongResult(f"cached add(2, 1) returned {result!r}, not a stored Int(3)")

    with enable_caching(identifier=add.process_type):
        add(Int(2), Int(1))  # the source
        first = timed(call, WARMUP)
        stats = latency_stats(timed(call, params["n"]))
    calls = 1 + WARMUP + params["n"]
    nodes = find_processes(process_label="add")
    check(len(nodes) == calls, f"{calls} calls of add recorded {len(nodes)} process nodes")
    source = nodes[0] if nodes[0].base.caching.get_cache_source() is None else nodes[-1]
    copies = sum(1 for node in nodes if node.base.caching.get_cache_source() == source.uuid)
    check(copies == calls - 1, f"{copies} of {calls - 1} calls were cache hits")
    return Measurement(
        metrics={"calls_per_s": stats["per_s"]},
        details={**stats, "first_call_ms": 1e3 * first[0]},
    )


WORKLOAD = Workload(
    id="C1",
    title="calcfunction add, run mode, every call a cache hit",
    metrics=(
        Metric(
            "calls_per_s",
            "C1 calcfunction add, cache hits",
            "calls/s",
            Target(">=", 2000),
        ),
    ),
    measure=measure,
    params={"n": 2000},
    quick_params={"n": 300},
    backends=("sqlite", "postgresql"),
)
