"""CHAOS: the chaos suite's run as a benchmark (``tests/test_chaos.py``): a mixed workload of
WorkChains on a 2-worker daemon while worker SIGKILLs, SIGSTOP/SIGCONT and supervisor SIGKILLs
hit it.  The full run is the long variant (about 3,000 processes, 150 events, 3 supervisor
SIGKILLs); ``--quick`` is the CI size.  Not in ``.ci/run``'s quick list: the test suite already
runs the CI size there.

Reported: kills survived, processes, lost, orphans, duplicates and the wall time; any lost,
orphaned or duplicated process or inconsistent row is a wrong result.
"""

from __future__ import annotations

import os
import random

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check
from benchmarks.support import db_path


def measure(params: Params) -> Measurement:
    from tests.test_chaos import CI, LONG, run_chaos

    size = LONG if params["size"] == "long" else CI
    value = os.environ.get("MINIENGINE_CHAOS_RANDOM")
    result = run_chaos(
        db_path(), size, int(value) if value else random.SystemRandom().randrange(10**9)
    )
    found, tally = result.found, result.tally
    print(result.summary, flush=True)
    details = {
        "summary": result.summary,
        "lost": found.lost[:20],
        "orphans": found.orphans[:20],
        "duplicates": found.duplicates[:20],
        "inconsistent": found.inconsistent[:20],
        "events": tally.events,
        "cut_off": found.cut_off,
    }
    problems = len(found.lost) + len(found.orphans) + len(found.duplicates)
    check(problems + len(found.inconsistent) == 0, f"chaos broke an invariant: {details}")
    return Measurement(
        metrics={
            "kills_survived": float(tally.kills),
            "processes": float(found.processes),
            "lost": float(len(found.lost)),
            "orphans": float(len(found.orphans)),
            "duplicates": float(len(found.duplicates)),
            "wall_s": result.elapsed_s,
        },
        details=details,
    )


WORKLOAD = Workload(
    id="CHAOS",
    title="chaos: mixed workload through worker and supervisor kills",
    metrics=(
        Metric("kills_survived", "CHAOS kills survived", ""),
        Metric("processes", "  CHAOS processes", ""),
        Metric("lost", "  CHAOS lost", "", Target("<=", 0)),
        Metric("orphans", "  CHAOS orphans", "", Target("<=", 0)),
        Metric("duplicates", "  CHAOS duplicates", "", Target("<=", 0)),
        Metric("wall_s", "  CHAOS wall time", "s", digits=1),
    ),
    measure=measure,
    params={"size": "long"},
    quick_params={"size": "ci"},
    repeat=1,
    quick_repeat=1,
)
