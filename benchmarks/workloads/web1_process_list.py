"""WEB1: the web view's process list on a large database: the first byte of the page (status
line and headers, sent once the page is rendered) from ``miniengine web``, a real uvicorn
subprocess, among 1,000,000 nodes (100,000 with ``--quick``), a quarter of them processes.

Four pages, each the median of 30 requests on one kept-alive httpx connection after 3 warm-ups:
the newest page (``/``), a page in the middle (``/?before=<pk>``, keyset paging), a rare state
(``/?state=excepted``: one process in 1,000) and a label (``/?label=NestedWorkChain``).  The
nodes are bulk-inserted by SQL (set-up, not measured); each page is checked against the
database (its newest row, and through the JSON twin that every row passes the filter).
"""

from __future__ import annotations

import re
import statistics
import time
from typing import Any

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check

ROUNDS = 30
WARM_UP = 3

_ROW = re.compile(r'<tr[^>]*\bdata-pk="(\d+)"')


def _timed_get(client: Any, path: str) -> tuple[float, float, str]:
    """Seconds to the first byte (status and headers), to the whole page, and the page."""
    start = time.perf_counter()
    with client.stream("GET", path) as response:
        first = time.perf_counter()
        body = response.read()
        end = time.perf_counter()
        check(response.status_code == 200, f"GET {path} answered {response.status_code}")
    return first - start, end - start, body.decode()


def _newest(db: Any, where: str = "", args: tuple[Any, ...] = ()) -> int:
    from benchmarks.backends import probe

    with probe(db) as connection:
        (pk,) = connection.one(
            f"SELECT max(pk) FROM nodes WHERE process_type IS NOT NULL {where}", args
        )
    return int(pk)


def measure(params: Params) -> Measurement:
    import httpx

    from benchmarks.backends import db_location
    from benchmarks.web_support import auth, fill_processes, web_server
    from miniengine.runtime.context import store_for

    db = db_location()
    store_for(None)  # the schema, made by miniengine
    fill_s = fill_processes(db, params["nodes"])
    middle = _newest(db) // 2
    pages = {
        "first": ("/", _newest(db)),
        "deep": (f"/?before={middle}", _newest(db, "AND pk < ?", (middle,))),
        "state": ("/?state=excepted", _newest(db, "AND process_state = 'excepted'")),
        "label": (
            "/?label=NestedWorkChain",
            _newest(db, "AND process_label = 'NestedWorkChain'"),
        ),
    }
    first_ms: dict[str, float] = {}
    whole_ms: dict[str, float] = {}
    rows: dict[str, int] = {}
    sizes: dict[str, int] = {}
    with (
        web_server() as server,
        httpx.Client(base_url=server.base, headers=auth(server), timeout=60) as client,
    ):
        start = time.perf_counter()
        _timed_get(client, "/")
        first_request_s = time.perf_counter() - start
        for name, (path, newest) in pages.items():
            for _ in range(WARM_UP):
                _timed_get(client, path)
            firsts, wholes = [], []
            for _ in range(ROUNDS):
                first, whole, body = _timed_get(client, path)
                firsts.append(first)
                wholes.append(whole)
            shown = [int(pk) for pk in _ROW.findall(body)]
            check(shown, f"{path}: no rows in the page")
            check(shown[0] == newest, f"{path}: the first row is {shown[0]}, not {newest}")
            check(shown == sorted(shown, reverse=True), f"{path}: rows not newest first")
            first_ms[name] = 1e3 * statistics.median(firsts)
            whole_ms[name] = 1e3 * statistics.median(wholes)
            rows[name] = len(shown)
            sizes[name] = len(body)
        listed = client.get("/api/processes", params={"state": "excepted"}).json()
        items = listed["processes"] if isinstance(listed, dict) else listed
        check(items, "the JSON twin lists no excepted process")
        check(
            all(item["process_state"] == "excepted" for item in items),
            "the JSON twin lists processes that are not excepted",
        )
    return Measurement(
        metrics={f"{name}_first_byte_ms": value for name, value in first_ms.items()},
        details={
            "nodes": params["nodes"],
            "fill_s": fill_s,
            "first_request_s": first_request_s,
            "whole_page_ms": whole_ms,
            "rows_per_page": rows,
            "page_bytes": sizes,
            "paths": {name: path for name, (path, _) in pages.items()},
        },
    )


WORKLOAD = Workload(
    id="WEB1",
    title="web view: first byte of the process list among 1M nodes",
    metrics=(
        Metric(
            "first_first_byte_ms",
            "WEB1 process list, newest page: first byte",
            "ms",
            Target("<=", 100),
            digits=1,
        ),
        Metric(
            "deep_first_byte_ms",
            "WEB1 process list, a page in the middle (?before=)",
            "ms",
            Target("<=", 100),
            digits=1,
        ),
        Metric(
            "state_first_byte_ms",
            "WEB1 process list, a rare state (?state=excepted)",
            "ms",
            Target("<=", 100),
            digits=1,
        ),
        Metric(
            "label_first_byte_ms",
            "WEB1 process list, by label",
            "ms",
            Target("<=", 100),
            digits=1,
        ),
    ),
    measure=measure,
    params={"nodes": 1_000_000},
    quick_params={"nodes": 100_000},
    repeat=1,
    backends=("sqlite", "postgresql"),
)
