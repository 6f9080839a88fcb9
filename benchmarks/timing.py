"""Small timing helpers shared by the workloads."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def timed(call: Callable[[int], object], n: int) -> list[float]:
    """Call ``call(i)`` for ``i`` in ``range(n)`` and return each call's wall time in seconds."""
    latencies = []
    clock = time.perf_counter
    for i in range(n):
        start = clock()
        call(i)
        latencies.append(clock() - start)
    return latencies


def latency_stats(samples: Sequence[float]) -> dict[str, Any]:
    """Throughput and latency percentiles, as the peers' scripts report them."""
    ordered = sorted(samples)
    total = sum(ordered)
    p99_index = min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))
    return {
        "n": len(ordered),
        "per_s": len(ordered) / total,
        "mean_ms": 1e3 * total / len(ordered),
        "p50_ms": 1e3 * statistics.median(ordered),
        "p99_ms": 1e3 * ordered[p99_index],
        "max_ms": 1e3 * ordered[-1],
    }


def count_rows(table: str) -> int | None:
    """Rows in a table of this repetition's database (a detail for the report; None if
    unreadable)."""
    from benchmarks.backends import db_location, probe

    try:
        with probe(db_location()) as connection:
            (count,) = connection.one(f"SELECT count(*) FROM {table}")
    except Exception:
        return None
    return int(count)
