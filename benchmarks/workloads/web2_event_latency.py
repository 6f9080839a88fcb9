"""WEB2: from a commit that changes a process's state to the event reaching a client of the web
view's live process list (``/events``, server-sent events from ``miniengine web``, a real uvicorn
subprocess), and to a client of that process's page (``/events?pk=<pk>``).

No daemon runs: the benchmark submits processes (they stay ``created``), opens the streams, then
kills the processes one at a time; a kill of a process nobody runs is one commit that makes it
``killed``.  The clock starts before the call that commits and stops when the client's thread has
read the event that names the process as killed; the next kill waits for it.  The server learns of
the commit through the backend's commit signal (no timer), reads the changes once, and fans them
out to every stream.  Median and 95th percentile over 50 changes (20 with ``--quick``), after 5
warm-ups.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check

WARM_UP = 5


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _killed(pk: int) -> Any:
    def match(name: str, data: Any) -> bool:
        return (
            name == "process"
            and isinstance(data, dict)
            and data.get("pk") == pk
            and data.get("process_state") == "killed"
        )

    return match


def measure(params: Params) -> Measurement:
    import time

    from benchmarks.support import submit_small
    from benchmarks.web_support import EventStream, web_server
    from miniengine.control import kill

    changes = params["changes"]
    nodes, _ = submit_small(changes + WARM_UP + 1)
    pks = [int(node.pk) for node in nodes]
    watched = pks[-1]  # its page's stream sees one change: its own kill, at the end
    latencies: list[float] = []
    after_commit: list[float] = []
    with web_server() as server:
        listing = EventStream(server, "/events")
        page = EventStream(server, f"/events?pk={watched}")
        try:
            listing.wait_hello()
            page.wait_hello()
            for index, pk in enumerate(pks[:-1]):
                start = time.perf_counter()
                kill(pk)
                committed = time.perf_counter()
                arrived, _, _ = listing.wait_for(_killed(pk))
                if index >= WARM_UP:
                    latencies.append(arrived - start)
                    after_commit.append(arrived - committed)
            start = time.perf_counter()
            kill(watched)
            page_arrived, _, _ = page.wait_for(_killed(watched))
            list_arrived, _, _ = listing.wait_for(_killed(watched))
        finally:
            listing.close()
            page.close()
    check(len(latencies) == changes, f"{len(latencies)} changes measured, not {changes}")
    return Measurement(
        metrics={
            "median_ms": 1e3 * statistics.median(latencies),
            "p95_ms": 1e3 * _p95(latencies),
        },
        details={
            "changes": changes,
            "latencies_ms": [round(1e3 * value, 3) for value in latencies],
            "median_after_commit_ms": 1e3 * statistics.median(after_commit),
            "process_page_stream_ms": 1e3 * (page_arrived - start),
            "list_stream_same_change_ms": 1e3 * (list_arrived - start),
        },
    )


WORKLOAD = Workload(
    id="WEB2",
    title="web view: a state change's commit to the event at a stream client",
    metrics=(
        Metric("median_ms", "WEB2 commit to event (median)", "ms", Target("<=", 100), digits=1),
        Metric("p95_ms", "WEB2 commit to event (p95)", "ms", Target("<=", 100), digits=1),
    ),
    measure=measure,
    params={"changes": 50},
    quick_params={"changes": 20},
    repeat=1,
    backends=("sqlite", "postgresql"),
)
