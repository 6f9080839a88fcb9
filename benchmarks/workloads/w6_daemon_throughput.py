"""W6: 200 SmallWorkChains (one step that calls ``add``) submitted to a running daemon, from
the first ``submit`` until all of them are seen terminated, with 1 worker and with 2 workers
(AiiDA's ``daemon_workloads.py w6``).  Also the client's submit rate alone: 200 submits with no
daemon running (each stores the process, its inputs and its task in one transaction).

The peak size of the database's WAL file is sampled throughout, and through one more round on 2
workers that commits far more (LoopWorkChains of 20 steps, one ``add`` each): with several
writers and readers always busy, the WAL once grew to gigabytes and never shrank.  It must stay
bounded whatever the scale; after the daemon stops it must be empty."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from benchmarks.backends import db_location
from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check
from benchmarks.support import (
    WalSampler,
    daemon,
    drain,
    loop_round,
    process_states,
    rss_mib,
    submit_small,
    w6_round,
)


def _wal(db: Path | str) -> Any:
    """A WAL sampler on sqlite; on PostgreSQL (no such file) a block that samples nothing."""
    return WalSampler(db) if isinstance(db, Path) else contextlib.nullcontext()


def measure(params: Params) -> Measurement:
    db = db_location()
    n = params["n"]
    # the client alone: nothing claims the tasks meanwhile
    queued, submit_s = submit_small(n, offset=0)
    details: dict[str, Any] = {"n": n, "submit_only_s": submit_s}
    metrics: dict[str, float] = {"submits_per_s": n / submit_s}
    offset = n
    with _wal(db) as wal:
        for workers in (1, 2):
            with daemon(db, workers=workers) as running:
                if queued:  # the submit-only batch is drained here, untimed (warms the worker)
                    details["drain_queued_s"] = drain(db, queued)
                    queued = []
                round_ = w6_round(db, n, offset=offset)
                offset += n
                rss = [rss_mib(pid) for pid in running.workers]
                if workers == 2:
                    with _wal(db) as loop_wal:
                        loop = loop_round(db, params["loop_n"], params["loop_steps"])
                    details["loop_2w"] = {
                        **loop,
                        "wal_peak_mib": loop_wal.peak_mib if loop_wal else None,
                    }
            metrics[f"wc_per_s_{workers}w"] = round_["per_s"]
            details[f"{workers}w"] = {
                **round_,
                "daemon_start_s": running.start_s,
                "worker_rss_mib_after": rss,
            }
    metrics["loop_wc_per_s_2w"] = details["loop_2w"]["per_s"]
    if isinstance(db, Path):
        metrics["wal_peak_mib"] = wal.peak_mib
        wal_file = db.with_name(db.name + "-wal")
        details["wal_after_stop_bytes"] = wal_file.stat().st_size if wal_file.exists() else 0
    states = process_states(db)
    check(
        set(states) == {"finished"},
        f"every process should have finished, the database has {states}",
    )
    details["process_states"] = states
    return Measurement(metrics=metrics, details=details)


WORKLOAD = Workload(
    id="W6",
    title="200 small workchains on a daemon, 1 and 2 workers",
    metrics=(
        Metric(
            "wc_per_s_1w",
            "W6 200 small workchains, 1 worker",
            "wc/s",
            Target(">=", 500),
            aiida="1.58/s",
        ),
        Metric("wc_per_s_2w", "  W6 with 2 workers", "wc/s", aiida="2.21/s"),
        Metric(
            "loop_wc_per_s_2w",
            "  W6 20-step workchains, 2 workers",
            "wc/s",
        ),
        Metric(
            "wal_peak_mib",
            "  W6 peak WAL size (all rounds; sqlite)",
            "MiB",
            Target("<=", 64),
        ),
        Metric(
            "submits_per_s",
            "  W6 client submit rate (no daemon)",
            "submits/s",
            Target(">=", 3000),
            aiida="4.4/s",
        ),
    ),
    measure=measure,
    params={"n": 200, "loop_n": 600, "loop_steps": 20},
    quick_params={"n": 200, "loop_n": 150, "loop_steps": 20},
    backends=("sqlite", "postgresql"),
)
