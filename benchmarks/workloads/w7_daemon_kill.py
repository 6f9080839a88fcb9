"""W7: W6 with ``kill -9`` of the daemon's only worker once 25% of the 200 SmallWorkChains have
terminated (AiiDA's ``daemon_workloads.py w7``).  The supervisor reaps the worker, releases its
leases and starts a new one, which resumes every unfinished workchain from its checkpoint.

Reported: workchains lost (not finished OK at the end: a wrong result), orphans (process nodes
of the database still created/running/waiting when the 200 have terminated), workchains with
more than one *finished* ``add`` child (duplicate provenance), and the time from the kill until
all 200 are seen terminated.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check
from benchmarks.support import ACTIVE, Watcher, daemon, db_path, submit_small, w6_round


def crash_counts(db: Path, parents: list[int]) -> dict[str, int]:
    """Orphans in the whole database, and the ``add`` children of ``parents`` by outcome."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(parents))
        orphans = connection.execute(
            f"SELECT count(*) FROM nodes WHERE process_state IN ({','.join('?' * len(ACTIVE))})",
            ACTIVE,
        ).fetchone()[0]
        per_parent = connection.execute(
            "SELECT l.in_pk, sum(n.process_state = 'finished'), sum(n.process_state = 'excepted'), "
            "count(*) FROM links l JOIN nodes n ON n.pk = l.out_pk "
            f"WHERE l.link_type = 'call_calc' AND l.in_pk IN ({marks}) GROUP BY l.in_pk",
            parents,
        ).fetchall()
    finally:
        connection.close()
    return {
        "orphans": orphans,
        "duplicates": sum(1 for _, finished, _, _ in per_parent if finished > 1),
        "adds_excepted_owner_lost": sum(excepted for _, _, excepted, _ in per_parent),
        "parents_without_finished_add": len(parents)
        - sum(1 for _, finished, _, _ in per_parent if finished >= 1),
    }


def measure(params: Params) -> Measurement:
    db = db_path()
    n = params["n"]
    with daemon(db, workers=1) as running:
        w6_round(db, 1, offset=-1)  # warm-up: the worker has imported the workchain
        (victim,) = running.worker_pids()
        mark: dict[str, Any] = {}

        def on_poll(done: int) -> None:
            now = time.perf_counter()
            if "kill" not in mark:
                if done >= n // 4:
                    os.kill(victim, signal.SIGKILL)
                    mark.update(kill=now, done_at_kill=done)
                return
            if "first_after" not in mark and done > mark["done_at_kill"]:
                mark["first_after"] = now
            if "respawn" not in mark and any(p != victim for p in running.worker_pids()):
                mark["respawn"] = now

        start = time.perf_counter()
        nodes, submit_s = submit_small(n, offset=0)
        parents = [node.pk for node in nodes]
        watcher = Watcher(db, parents)
        try:
            end = watcher.wait(120, on_poll=on_poll)
        finally:
            watcher.close()
        counts = crash_counts(db, parents)
        time.sleep(1.0)
        later = crash_counts(db, parents)
    check("kill" in mark, f"the worker was never killed (25% of {n} never done?)")
    finished_ok = sum(
        1 for i, node in enumerate(nodes) if node.is_finished_ok and node.outputs.sum == i + 1
    )
    lost = n - finished_ok
    metrics = {
        "lost": float(lost),
        "orphans": float(counts["orphans"]),
        "duplicates": float(counts["duplicates"]),
        "kill_to_done_s": end - mark["kill"],
    }
    details = {
        "n": n,
        "victim_pid": victim,
        "done_at_kill": mark["done_at_kill"],
        "submit_s": submit_s,
        "wall_s": end - start,
        "respawn_s": mark["respawn"] - mark["kill"] if "respawn" in mark else None,
        "first_completion_after_kill_s": mark["first_after"] - mark["kill"]
        if "first_after" in mark
        else None,
        "at_end": counts,
        "one_second_later": later,
    }
    check(lost == 0, f"{lost} of {n} workchains did not finish OK after the kill: {details}")
    return Measurement(metrics=metrics, details=details)


WORKLOAD = Workload(
    id="W7",
    title="W6 + kill -9 of the worker at 25%",
    metrics=(
        Metric(
            "kill_to_done_s",
            "W7 W6 + kill -9 at 25%: kill to all done",
            "s",
            Target("<=", 3),
            aiida="100 s",
            digits=2,
        ),
        Metric("lost", "  W7 workchains lost", "", Target("<=", 0), aiida="0"),
        Metric("orphans", "  W7 orphaned process nodes", "", Target("<=", 0), aiida="21"),
        Metric("duplicates", "  W7 duplicate finished add", "", Target("<=", 0), aiida="21"),
    ),
    measure=measure,
    params={"n": 200},
    quick_params={"n": 200},
)
