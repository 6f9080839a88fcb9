"""Q1: the QueryBuilder on a large database: count, and read the first page of, the calcfunction
nodes whose extra ``batch`` has one value, among 1,000,000 nodes (100,000 with ``--quick``); and
the same for the ``Int`` nodes whose attribute ``value`` has one value.

A quarter of the nodes are calcfunctions, and every calcfunction and the three nodes before it
have ``batch`` = its number mod 1000, so one value selects 1,000 nodes of which 250 are
calcfunctions. The other three quarters are ``Int`` nodes whose value is their ``batch``, so one
value selects 750 of them. The extra and the attribute are indexed first (what ``miniengine db
index extras.batch attributes.value`` does), and the plans are checked to read those indexes.
The nodes are bulk-inserted by SQL (set-up, not measured; the attributes as msgpack, and on
PostgreSQL their JSON copy too, as the engine writes them).
Each figure is the median over 30 values of ``batch``.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import msgpack

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check

ROUNDS = 30
PAGE = 20

_SQLITE_FILL = """
WITH RECURSIVE series(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM series WHERE i < ?)
INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, exit_status,
                   ctime, mtime, extras, attributes)
SELECT printf('q1-%012d', i),
       CASE WHEN i % 4 = 0 THEN 'process.calcfunction' ELSE 'core.int' END,
       CASE WHEN i % 4 = 0 THEN 'benchmarks.procs.add' END,
       CASE WHEN i % 4 = 0 THEN 'add' END,
       CASE WHEN i % 4 = 0 THEN 'finished' END,
       CASE WHEN i % 4 = 0 THEN 0 END,
       ? + i * 0.001, ? + i * 0.001, json_object('batch', (i / 4) % 1000),
       CASE WHEN i % 4 != 0 THEN q1_pack((i / 4) % 1000) END
FROM series
"""

_POSTGRES_FILL = """
INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, exit_status,
                   ctime, mtime, extras, attributes, attributes_json)
SELECT 'q1-' || lpad(i::text, 12, '0'),
       CASE WHEN i %% 4 = 0 THEN 'process.calcfunction' ELSE 'core.int' END,
       CASE WHEN i %% 4 = 0 THEN 'benchmarks.procs.add' END,
       CASE WHEN i %% 4 = 0 THEN 'add' END,
       CASE WHEN i %% 4 = 0 THEN 'finished' END,
       CASE WHEN i %% 4 = 0 THEN 0 END,
       %s + i * 0.001, %s + i * 0.001, jsonb_build_object('batch', (i / 4) %% 1000),
       CASE WHEN i %% 4 != 0 THEN '\\xcd'::bytea || int2send(((i / 4) %% 1000)::int2) END,
       CASE WHEN i %% 4 != 0 THEN jsonb_build_object('value', (i / 4) %% 1000) END
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
        # an Int's attributes: its value as msgpack, as the engine stores it
        connection.create_function("q1_pack", 1, msgpack.packb, deterministic=True)
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
    from miniengine import Int, QueryBuilder
    from miniengine.orm import CalcFunctionNode
    from miniengine.runtime.context import store_for

    db = db_location()
    store: Any = store_for(None)  # the schema, made by miniengine
    fill_s = _fill(db, params["nodes"])
    start = time.perf_counter()
    index = store.query_builder.index_extra("batch")
    index_s = time.perf_counter() - start
    start = time.perf_counter()
    attribute_index = store.query_builder.index_field("attributes", ("value",))
    attribute_index_s = time.perf_counter() - start

    def query(batch: int) -> QueryBuilder:
        qb = QueryBuilder().append(CalcFunctionNode, tag="calc", filters={"extras.batch": batch})
        return qb.order_by({"calc": {"ctime": "desc"}})

    def ints(value: int) -> QueryBuilder:
        qb = QueryBuilder().append(Int, tag="int", filters={"attributes.value": value})
        return qb.order_by({"int": {"ctime": "desc"}})

    plan = "\n".join(store.query_builder.explain(query(1).spec()))
    check(index in plan, f"the query does not read the index {index}:\n{plan}")
    attribute_plan = "\n".join(store.query_builder.explain(ints(1).spec()))
    check(
        attribute_index in attribute_plan,
        f"the query does not read the index {attribute_index}:\n{attribute_plan}",
    )
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
    ints(0).count()
    attribute_count_ms, attribute_page_ms = [], []
    for batch in range(1, ROUNDS + 1):
        start = time.perf_counter()
        count = ints(batch * 7).count()
        attribute_count_ms.append(1e3 * (time.perf_counter() - start))
        start = time.perf_counter()
        page = ints(batch * 7).limit(PAGE).all(flat=True)
        attribute_page_ms.append(1e3 * (time.perf_counter() - start))
        check(
            abs(count - 3 * expected) <= 3, f"value {batch * 7}: {count} Ints, not {3 * expected}"
        )
        check(
            len(page) == PAGE and all(node.value == batch * 7 for node in page),
            f"a first page of {len(page)} Ints of other values",
        )
    return Measurement(
        metrics={
            "count_ms": statistics.median(count_ms),
            "page_ms": statistics.median(page_ms),
            "attribute_count_ms": statistics.median(attribute_count_ms),
            "attribute_page_ms": statistics.median(attribute_page_ms),
        },
        details={
            "nodes": params["nodes"],
            "fill_s": fill_s,
            "index_s": index_s,
            "attribute_index_s": attribute_index_s,
            "plan": plan,
            "attribute_plan": attribute_plan,
        },
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
        Metric(
            "attribute_count_ms",
            "Q1 count of Ints by an indexed attribute",
            "ms",
            Target("<=", 20),
            digits=2,
        ),
        Metric(
            "attribute_page_ms",
            "Q1 first page (20 Ints) by an indexed attribute",
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
