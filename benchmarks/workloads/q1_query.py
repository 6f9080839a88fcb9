"""Q1: the QueryBuilder on a large database: count, and read the first page of, the calcfunction
nodes whose extra ``batch`` has one value, among 1,000,000 nodes (100,000 with ``--quick``).

A quarter of the nodes are calcfunctions, and every calcfunction and the three nodes before it
have ``batch`` = its number mod 1000, so one value selects 1,000 nodes of which 250 are
calcfunctions. The extra is indexed first (``store.query_builder.index_extra``, what
``miniengine db index extras.batch`` does), and the plan is checked to read that index. The
nodes are bulk-inserted by SQL (set-up, not measured).
Each figure is the median over 30 values of ``batch``.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check

ROUNDS = 30
PAGE = 20

_SQLITE_FILL = """
WITH RECURSIVE series(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM series WHERE i < ?)
INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, exit_status,
                   ctime, mtime, extras)
SELECT printf('q1-%012d', i),
       CASE WHEN i % 4 = 0 THEN 'process.calcfunction' ELSE 'core.int' END,
       CASE WHEN i % 4 = 0 THEN 'benchmarks.procs.add' END,
       CASE WHEN i % 4 = 0 THEN 'add' END,
       CASE WHEN i % 4 = 0 THEN 'finished' END,
       CASE WHEN i % 4 = 0 THEN 0 END,
       ? + i * 0.001, ? + i * 0.001, json_object('batch', (i / 4) % 1000)
FROM series
"""

_POSTGRES_FILL = """
INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, exit_status,
                   ctime, mtime, extras)
SELECT 'q1-' || lpad(i::text, 12, '0'),
       CASE WHEN i %% 4 = 0 THEN 'process.calcfunction' ELSE 'core.int' END,
       CASE WHEN i %% 4 = 0 THEN 'benchmarks.procs.add' END,
       CASE WHEN i %% 4 = 0 THEN 'add' END,
       CASE WHEN i %% 4 = 0 THEN 'finished' END,
       CASE WHEN i %% 4 = 0 THEN 0 END,
       %s + i * 0.001, %s + i * 0.001, jsonb_build_object('batch', (i / 4) %% 1000)
FROM generate_series(1, %s) AS i
"""


def _fill(db: Path | str, nodes: int) -> float:
    start = time.perf_counter()
    base = time.time() - nodes * 0.001
    if isinstance(db, str):
        import psycopg

        with psycopg.connect(db, autocommit=True) as connection:
            connection.execute(_POSTGRES_FILL, (base, base, nodes))
            connection.execute("VACUUM ANALYZE nodes")
    else:
        connection = sqlite3.connect(db, isolation_level=None, timeout=30)
        try:
            connection.execute("PRAGMA synchronous = OFF")
            connection.execute("BEGIN")
            connection.execute(_SQLITE_FILL, (nodes, base, base))
            connection.execute("COMMIT")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()
    return time.perf_counter() - start


def measure(params: Params) -> Measurement:
    from benchmarks.backends import db_location
    from miniengine import QueryBuilder
    from miniengine.orm import CalcFunctionNode
    from miniengine.runtime.context import store_for

    db = db_location()
    store: Any = store_for(None)  # the schema, made by miniengine
    fill_s = _fill(db, params["nodes"])
    start = time.perf_counter()
    index = store.query_builder.index_extra("batch")
    index_s = time.perf_counter() - start

    def query(batch: int) -> QueryBuilder:
        qb = QueryBuilder().append(CalcFunctionNode, tag="calc", filters={"extras.batch": batch})
        return qb.order_by({"calc": {"ctime": "desc"}})

    plan = "\n".join(store.query_builder.explain(query(1).spec()))
    check(index in plan, f"the query does not read the index {index}:\n{plan}")
    expected = params["nodes"] // 4000
    query(0).count()  # warm-up: the connection, the pages of the index
    count_ms, page_ms = [], []
    for batch in range(1, ROUNDS + 1):
        start = time.perf_counter()
        count = query(batch * 7).count()
        count_ms.append(1e3 * (time.perf_counter() - start))
        start = time.perf_counter()
        page = query(batch * 7).limit(PAGE).all(flat=True)
        page_ms.append(1e3 * (time.perf_counter() - start))
        check(abs(count - expected) <= 1, f"batch {batch * 7}: {count} nodes, not {expected}")
        check(len(page) == PAGE, f"a first page of {len(page)} nodes, not {PAGE}")
        check(
            all(node.process_label == "add" for node in page),
            "the page holds nodes other than the calcfunctions",
        )
    return Measurement(
        metrics={
            "count_ms": statistics.median(count_ms),
            "page_ms": statistics.median(page_ms),
        },
        details={"nodes": params["nodes"], "fill_s": fill_s, "index_s": index_s, "plan": plan},
    )


WORKLOAD = Workload(
    id="Q1",
    title="QueryBuilder: calcfunctions by an extra among 1M nodes",
    metrics=(
        Metric("count_ms", "Q1 count by an indexed extra", "ms", Target("<=", 20), digits=2),
        Metric(
            "page_ms",
            "Q1 first page (20 nodes) by an indexed extra",
            "ms",
            Target("<=", 20),
            digits=2,
        ),
    ),
    measure=measure,
    params={"nodes": 1_000_000},
    quick_params={"nodes": 100_000},
    repeat=1,
    backends=("sqlite", "postgresql"),
)
