"""A1: archives of a large database: ``create_archive(all=True)`` of 100,000 nodes (10,000 with
``--quick``), then ``import_archive`` of that file into a new, empty database; nodes per second
each way.  The import is the default one, as AiiDA's: it also puts every node into a new import
group (100,000 memberships more).

The nodes are bulk-inserted by SQL (set-up, not measured) as 25,000 finished calcfunctions with
two inputs and one output each (75,000 links), every node with a small msgpack attribute blob
and an extra.  Each figure is a whole call (the zip, deflate level 6, and the checksums
included).  The memory the process gained during each call (its peak RSS) is recorded too: both
ways stream in batches, so it should not grow with the size of the database.
"""

from __future__ import annotations

import resource
import sqlite3
import time
from pathlib import Path
from typing import Any

from benchmarks.registry import Measurement, Metric, Params, Target, Workload, check

_SQLITE_NODES = """
WITH RECURSIVE series(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM series WHERE i < ?)
INSERT INTO nodes (pk, uuid, node_type, process_type, process_label, process_state,
                   exit_status, attributes, ctime, mtime, extras)
SELECT i, printf('a1-%012d', i),
       CASE WHEN i % 4 = 3 THEN 'process.calcfunction' ELSE 'core.int' END,
       CASE WHEN i % 4 = 3 THEN 'benchmarks.procs.add' END,
       CASE WHEN i % 4 = 3 THEN 'add' END,
       CASE WHEN i % 4 = 3 THEN 'finished' END,
       CASE WHEN i % 4 = 3 THEN 0 END,
       X'81A576616C7565CD04D2', ? + i * 0.001, ? + i * 0.001,
       json_object('batch', i / 4)
FROM series
"""

_SQLITE_LINKS = """
INSERT INTO links (in_pk, out_pk, link_type, label)
SELECT pk - 2, pk, 'input_calc', 'x' FROM nodes WHERE pk % 4 = 3
UNION ALL SELECT pk - 1, pk, 'input_calc', 'y' FROM nodes WHERE pk % 4 = 3
UNION ALL SELECT pk, pk + 1, 'create', 'result' FROM nodes WHERE pk % 4 = 3
ORDER BY 2, 1
"""

_POSTGRES_NODES = """
INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, exit_status,
                   attributes, ctime, mtime, extras)
SELECT 'a1-' || lpad(i::text, 12, '0'),
       CASE WHEN i %% 4 = 3 THEN 'process.calcfunction' ELSE 'core.int' END,
       CASE WHEN i %% 4 = 3 THEN 'benchmarks.procs.add' END,
       CASE WHEN i %% 4 = 3 THEN 'add' END,
       CASE WHEN i %% 4 = 3 THEN 'finished' END,
       CASE WHEN i %% 4 = 3 THEN 0 END,
       '\\x81a576616c7565cd04d2'::bytea, %s + i * 0.001, %s + i * 0.001,
       jsonb_build_object('batch', i / 4)
FROM generate_series(1, %s) AS i
"""

_POSTGRES_LINKS = """
INSERT INTO links (in_pk, out_pk, link_type, label)
SELECT pk - 2, pk, 'input_calc', 'x' FROM nodes WHERE pk % 4 = 3
UNION ALL SELECT pk - 1, pk, 'input_calc', 'y' FROM nodes WHERE pk % 4 = 3
UNION ALL SELECT pk, pk + 1, 'create', 'result' FROM nodes WHERE pk % 4 = 3
"""  # run without parameters: a plain % (psycopg substitutes nothing)


def _fill(db: Path | str, nodes: int) -> float:
    start = time.perf_counter()
    base = time.time() - nodes * 0.001
    if isinstance(db, str):
        import psycopg

        with psycopg.connect(db, autocommit=True) as connection:
            connection.execute(_POSTGRES_NODES, (base, base, nodes))
            connection.execute(_POSTGRES_LINKS)
            connection.execute("VACUUM ANALYZE")
    else:
        connection = sqlite3.connect(db, isolation_level=None, timeout=30)
        try:
            connection.execute("PRAGMA synchronous = OFF")
            connection.execute("BEGIN")
            connection.execute(_SQLITE_NODES, (nodes, base, base))
            connection.execute(_SQLITE_LINKS)
            connection.execute("COMMIT")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()
    return time.perf_counter() - start


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _new_target(db: Path | str) -> Path | str:
    """An empty database of the same backend as ``db``: a new file beside it, or (PostgreSQL,
    where the suite's user may not create databases) ``db`` itself, emptied."""
    if isinstance(db, Path):
        return db.with_name("imported.sqlite")
    import psycopg

    with psycopg.connect(db, autocommit=True) as connection:
        connection.execute(
            "TRUNCATE nodes, links, logs, comments, groups, group_nodes, computers "
            "RESTART IDENTITY CASCADE"
        )
    return db


def measure(params: Params) -> Measurement:
    from benchmarks.backends import db_location
    from miniengine.runtime.context import store_for
    from miniengine.storage.open import close_all_backends
    from miniengine.tools.archive import create_archive, import_archive

    nodes = params["nodes"]
    db = db_location()
    store: Any = store_for(None)  # the schema, made by miniengine
    fill_s = _fill(db, nodes)
    folder = Path(params.get("folder") or (db.parent if isinstance(db, Path) else "/var/tmp"))
    path = folder / f"a1-{int(time.time() * 1000)}.miniengine"
    try:
        rss = _peak_rss_mib()
        start = time.perf_counter()
        info = create_archive(path, all=True, db=store)
        create_s = time.perf_counter() - start
        create_rss = _peak_rss_mib() - rss
        check(info.counts["nodes"] == nodes, f"{info.counts['nodes']} nodes archived")
        check(info.counts["links"] == nodes // 4 * 3, f"{info.counts['links']} links archived")
        close_all_backends()  # the source's connections: PostgreSQL's is emptied next
        target = _new_target(db)
        rss = _peak_rss_mib()
        start = time.perf_counter()
        report = import_archive(path, db=target)
        import_s = time.perf_counter() - start
        import_rss = _peak_rss_mib() - rss
        check(report.new_nodes == nodes, f"{report.new_nodes} nodes imported")
        check(report.new_links == nodes // 4 * 3, f"{report.new_links} links imported")
        size = path.stat().st_size
    finally:
        path.unlink(missing_ok=True)
        close_all_backends()
    return Measurement(
        metrics={
            "create_nodes_per_s": nodes / create_s,
            "import_nodes_per_s": nodes / import_s,
        },
        details={
            "nodes": nodes,
            "fill_s": fill_s,
            "create_s": create_s,
            "import_s": import_s,
            "archive_mib": size / 2**20,
            "create_peak_rss_growth_mib": create_rss,
            "import_peak_rss_growth_mib": import_rss,
        },
    )


WORKLOAD = Workload(
    id="A1",
    title="archive create and import of 100,000 nodes",
    metrics=(
        Metric(
            "create_nodes_per_s",
            "A1 archive create (--all), 100,000 nodes",
            "nodes/s",
            Target(">=", 20_000),
        ),
        Metric(
            "import_nodes_per_s",
            "A1 archive import into an empty database",
            "nodes/s",
            Target(">=", 20_000),
        ),
    ),
    measure=measure,
    params={"nodes": 100_000},
    quick_params={"nodes": 10_000},
    repeat=1,
    backends=("sqlite", "postgresql"),
)
