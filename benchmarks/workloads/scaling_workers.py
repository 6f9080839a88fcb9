"""Scaling with workers: W6 (SmallWorkChains submitted to a daemon, first submit to all done)
with 1, 2 and 4 worker processes.  On 2 cores, 2 workers give at most ~1.3x one worker and 4
cannot give more than 2; the client that submits competes for the same cores."""

from __future__ import annotations

from benchmarks.backends import db_location
from benchmarks.registry import Measurement, Metric, Params, Scaling, Series, Workload
from benchmarks.support import daemon, w6_round

WORKERS = (1, 2, 4)


def measure(params: Params) -> Measurement:
    db = db_location()
    metrics: dict[str, float] = {}
    details: dict[str, object] = {}
    offset = 0
    for workers in WORKERS:
        with daemon(db, workers=workers) as running:
            w6_round(db, 20, offset=offset)  # warm-up: every worker imports the workchain
            offset += 20
            round_ = w6_round(db, params["n"], offset=offset)
            offset += params["n"]
        metrics[f"wc_per_s@{workers}"] = round_["per_s"]
        details[f"{workers}w"] = {**round_, "daemon_start_s": running.start_s}
    return Measurement(metrics=metrics, details=details)


WORKLOAD = Workload(
    id="scale-workers",
    title="W6 with 1, 2 and 4 workers",
    metrics=tuple(Metric(f"wc_per_s@{w}", f"W6 with {w} workers", "wc/s") for w in WORKERS),
    measure=measure,
    params={"n": 400},
    quick_params={"n": 200},
    repeat=1,
    scaling=Scaling(
        x_label="worker processes",
        series=(
            Series(
                "W6 throughput",
                "wc/s",
                tuple((w, f"wc_per_s@{w}") for w in WORKERS),
                growth_limit=None,
            ),
        ),
        linear_x=True,
    ),
    backends=("sqlite", "postgresql"),
)
