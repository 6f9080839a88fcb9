"""The price of durability: W1 (run mode) and W6 (1-worker daemon) at ``synchronous=NORMAL``
(the default: survives a crash of the process, not a power cut) and at ``FULL`` (every commit
waits for the disk).

Each mode has its own database file.  No public launch function takes a store, so for run mode
the child puts ``Store(path, synchronous="FULL")`` into the table of shared stores
(``miniengine.storage.store._shared``) before the first launch; ``submit`` uses it too.  The
daemon has no option for the mode either: its processes get it from ``benchmarks/_sync_shim``
(a ``sitecustomize`` on their ``PYTHONPATH`` that makes every ``Store`` default to ``FULL``),
and the workload checks in the daemon's log that each of them loaded it.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.registry import Measurement, Metric, Params, Workload, check
from benchmarks.support import daemon, db_path, w1_round, w6_round

MODES = ("NORMAL", "FULL")


def _use(db: Path, synchronous: str) -> None:
    """Make ``db`` the database of the next launches, its shared store at ``synchronous``."""
    from miniengine.storage import store as store_module
    from miniengine.storage.paths import resolve_db_path

    os.environ["MINIENGINE_DB"] = str(db)
    path = resolve_db_path(None)
    if synchronous != "NORMAL":
        store_module._shared[path] = store_module.Store(path, synchronous=synchronous)
    store = store_module.shared_store(path)
    check(store.synchronous == synchronous, f"the store of {db} is at {store.synchronous}")


def measure(params: Params) -> Measurement:
    folder = db_path().parent
    metrics: dict[str, float] = {}
    details: dict[str, object] = {}
    for mode in MODES:
        db = folder / f"{mode.lower()}.sqlite"
        _use(db, mode)
        w1_round(10)  # warm-up
        stats = w1_round(params["w1"])
        metrics[f"w1_{mode.lower()}"] = stats["per_s"]
        details[f"w1_{mode.lower()}"] = stats
    for mode in MODES:
        db = folder / f"{mode.lower()}.sqlite"
        _use(db, mode)
        shim = mode if mode != "NORMAL" else None
        with daemon(db, workers=1, synchronous=shim) as running:
            w6_round(db, 20, offset=-1000)  # warm-up
            round_ = w6_round(db, params["w6"])
        if shim is not None:
            log = Path(str(db) + ".daemon.log").read_text(errors="replace")
            for pid in [running.pid, *running.workers]:
                check(
                    f"pid {pid} opens its stores at synchronous={mode}" in log,
                    f"daemon process {pid} did not load the synchronous={mode} shim",
                )
        metrics[f"w6_{mode.lower()}"] = round_["per_s"]
        details[f"w6_{mode.lower()}"] = round_
    details["full_over_normal"] = {
        "w1": metrics["w1_full"] / metrics["w1_normal"],
        "w6": metrics["w6_full"] / metrics["w6_normal"],
    }
    return Measurement(metrics=metrics, details=details)


WORKLOAD = Workload(
    id="durability",
    title="W1 and W6 at synchronous=NORMAL and FULL",
    metrics=(
        Metric("w1_normal", "W1 at synchronous=NORMAL", "calls/s"),
        Metric("w1_full", "W1 at synchronous=FULL", "calls/s"),
        Metric("w6_normal", "W6 (1 worker) at synchronous=NORMAL", "wc/s"),
        Metric("w6_full", "W6 (1 worker) at synchronous=FULL", "wc/s"),
    ),
    measure=measure,
    params={"w1": 1000, "w6": 200},
    quick_params={"w1": 300, "w6": 200},
)
