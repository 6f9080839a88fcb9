"""Scaling with the size of the database: W1 (run mode), the client's submit and W6 (1-worker
daemon) on a database that already holds 1k, 10k, 100k and 1M nodes (1M is left out of
``--quick``).  The old provenance is bulk-inserted by SQL between the sizes
(:func:`benchmarks.support.prefill`: finished SmallWorkChains with their inputs, ``add`` calls,
results, links, done tasks and call memos).  Every cost is per item and should stay flat: a
per-call or per-submit time that grows with the database is a missing index or a scan.

The machine is noisy and one batch is short, so each point is robust to a burst of load: W1 and
submit are the median of 5 batches (mean per item in each), W6 the better of 2 rounds.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.registry import Measurement, Metric, Params, Scaling, Series, Workload, check
from benchmarks.support import (
    daemon,
    db_path,
    drain,
    node_count,
    prefill,
    submit_small,
    w1_round,
    w6_round,
)

SIZES = (1_000, 10_000, 100_000, 1_000_000)
BATCHES = 5


def _label(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1_000}k"


def measure(params: Params) -> Measurement:
    from miniengine.storage.paths import resolve_db_path
    from miniengine.storage.store import shared_store

    db = db_path()
    shared_store(resolve_db_path(None))  # the schema, made by miniengine
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {}
    w1_round(20)  # warm-up: imports, the first connections
    submit_small(20, offset=-100)  # queued, and drained by the first daemon
    offset = 0
    for size in params["sizes"]:
        fill_s = prefill(db, size - node_count(db))
        nodes_before = node_count(db)
        check(nodes_before >= size * 0.99, f"pre-filled {nodes_before} nodes, not {size}")
        w1_us = [1e6 * w1_round(params["w1"] // BATCHES)["mean_ms"] / 1e3 for _ in range(BATCHES)]
        queued, submit_us = [], []
        for _ in range(BATCHES):
            nodes, seconds = submit_small(params["w6"] // BATCHES, offset)
            offset += len(nodes)
            queued += nodes
            submit_us.append(1e6 * seconds / len(nodes))
        with daemon(db, workers=1):
            drain_s = drain(db, queued)
            w6 = []
            for _ in range(2):
                w6.append(w6_round(db, params["w6"], offset=offset))
                offset += params["w6"]
        metrics[f"w1_us@{size}"] = statistics.median(w1_us)
        metrics[f"submit_us@{size}"] = statistics.median(submit_us)
        metrics[f"w6_ms@{size}"] = 1e3 / max(round_["per_s"] for round_ in w6)
        details[_label(size)] = {
            "nodes_before": nodes_before,
            "prefill_s": fill_s,
            "w1_us_batches": w1_us,
            "submit_us_batches": submit_us,
            "drain_queued_s": drain_s,
            "w6_wc_per_s": [round_["per_s"] for round_ in w6],
        }
    return Measurement(metrics=metrics, details=details)


def _metrics() -> tuple[Metric, ...]:
    metrics = []
    for key, label, unit in (
        ("w1_us", "W1 per call", "µs"),
        ("submit_us", "submit per workchain", "µs"),
        ("w6_ms", "W6 per workchain (1 worker)", "ms"),
    ):
        for size in SIZES:
            metrics.append(Metric(f"{key}@{size}", f"{label} at {_label(size)} nodes", unit))
    return tuple(metrics)


WORKLOAD = Workload(
    id="scale-db",
    title="W1, submit and W6 against database size",
    metrics=_metrics(),
    measure=measure,
    params={"sizes": SIZES, "w1": 500, "w6": 200},
    quick_params={"sizes": SIZES[:3], "w1": 200, "w6": 200},
    repeat=1,
    scaling=Scaling(
        x_label="nodes in the database",
        series=(
            Series("W1 per call", "µs", tuple((s, f"w1_us@{s}") for s in SIZES)),
            Series("submit per workchain", "µs", tuple((s, f"submit_us@{s}") for s in SIZES)),
            Series(
                "W6 per workchain (1 worker)",
                "ms",
                tuple((s, f"w6_ms@{s}") for s in SIZES),
                digits=2,
            ),
        ),
    ),
)
