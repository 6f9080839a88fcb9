"""W7: W6 with ``kill -9`` of the daemon's only worker once 25% of the 200 SmallWorkChains have
terminated (AiiDA's ``daemon_workloads.py w7``).  The supervisor reaps the worker, releases its
leases and starts a new one, which resumes every unfinished workchain from its checkpoint.

Reported: workchains lost (not finished OK at the end: a wrong result), orphans (process nodes
of the database still created/running/waiting when the 200 have terminated), workchains with
more than one *finished* ``add`` child (duplicate provenance), and the time from the kill until
all 200 are seen terminated.

The kill must cut into work: the workchains still in flight and those the victim held (a lease)
are counted from the database at the moment of the kill, and the tasks claimed a second time at
the end.  A kill that landed after everything was done proves nothing, so the workload fails then.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from benchmarks.backends import db_location, probe
from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check
from benchmarks.support import ACTIVE, Watcher, daemon, submit_small, w6_round


def crash_counts(db: Path | str, parents: list[int]) -> dict[str, int]:
    """Orphans in the whole database, and the ``add`` children of ``parents`` by outcome."""
    with probe(db) as connection:
        marks = ",".join("?" * len(parents))
        (orphans,) = connection.one(
            f"SELECT count(*) FROM nodes WHERE process_state IN ({','.join('?' * len(ACTIVE))})",
            ACTIVE,
        )
        per_parent = connection.all(
            "SELECT l.in_pk, "
            "sum(CASE WHEN n.process_state = 'finished' THEN 1 ELSE 0 END), "
            "sum(CASE WHEN n.process_state = 'excepted' THEN 1 ELSE 0 END), "
            "count(*) FROM links l JOIN nodes n ON n.pk = l.out_pk "
            f"WHERE l.link_type = 'call_calc' AND l.in_pk IN ({marks}) GROUP BY l.in_pk",
            parents,
        )
    return {
        "orphans": orphans,
        "duplicates": sum(1 for _, finished, _, _ in per_parent if finished > 1),
        "adds_excepted_owner_lost": sum(excepted for _, _, excepted, _ in per_parent),
        "parents_without_finished_add": len(parents)
        - sum(1 for _, finished, _, _ in per_parent if finished >= 1),
    }


def at_kill(db: Path | str, parents: list[int]) -> dict[str, int]:
    """Read right after the SIGKILL: the workchains not yet terminated, and those of them that a
    worker held (running with a lease, so the victim: the only worker)."""
    with probe(db) as connection:
        in_flight, held = connection.one(
            "SELECT count(*), count(owner) FROM nodes WHERE pk IN "
            f"({','.join('?' * len(parents))}) AND process_state IN "
            f"({','.join('?' * len(ACTIVE))})",
            (*parents, *ACTIVE),
        )
    return {"in_flight_at_kill": int(in_flight), "held_at_kill": int(held)}


def taken_over(db: Path | str) -> int:
    """Tasks claimed more than once: what the killed worker held and another worker took."""
    with probe(db) as connection:
        (count,) = connection.one("SELECT count(*) FROM tasks WHERE attempts > 1")
    return int(count)


def measure(params: Params) -> Measurement:
    db = db_location()
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
                    mark.update(kill=now, done_at_kill=done, **at_kill(db, parents))
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
        retried = taken_over(db)
    check("kill" in mark, f"the worker was never killed (25% of {n} never done?)")
    check(
        mark["in_flight_at_kill"] > 0,
        f"the kill landed after all {n} workchains had terminated: it cut into no work",
    )
    finished_ok = sum(
        1 for i, node in enumerate(nodes) if node.is_finished_ok and node.outputs.sum == i + 1
    )
    lost = n - finished_ok
    metrics = {
        "lost": float(lost),
        "orphans": float(counts["orphans"]),
        "duplicates": float(counts["duplicates"]),
        "kill_to_done_s": end - mark["kill"],
        "in_flight_at_kill": float(mark["in_flight_at_kill"]),
        "held_at_kill": float(mark["held_at_kill"]),
        "taken_over": float(retried),
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
        Metric("in_flight_at_kill", "  W7 workchains in flight at the kill", "", Target(">=", 1)),
        Metric("held_at_kill", "  W7 of them held by the killed worker", ""),
        Metric("taken_over", "  W7 tasks claimed again after the kill", ""),
    ),
    measure=measure,
    params={"n": 200},
    quick_params={"n": 200},
    backends=("sqlite", "postgresql"),
)
