"""The partial index of the processes that ended badly (``nodes_ended_badly``, schema 13): every
read of a list filtered by ``excepted`` or ``killed`` walks it instead of the primary key (its
plan, read with EXPLAIN on both backends), answers what a filter in Python answers, and a
database of schema 12 gains the index when it is opened."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from miniengine import ProcessNode
from miniengine.core.states import ProcessState
from miniengine.runtime.context import store_for
from miniengine.runtime.querybuilder import QueryBuilder
from miniengine.storage import query_rows, rows
from miniengine.storage.open import open_backend
from miniengine.storage.postgres import query_rows as postgres_query_rows
from miniengine.storage.postgres import rows as postgres_rows
from miniengine.storage.query_builder_sql import compile_query
from tests.services import old_schema

pytestmark = pytest.mark.backends

#: Nodes filled by SQL: every 4th a process, among those one in 1,000 excepted and one in
#: 1,000 killed (10 of each), the rest finished.
NODES = 40_000

_FILL = """
INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, exit_status,
                   ctime, mtime)
SELECT 'rare-' || i,
       CASE WHEN i % 4 = 0 THEN 'process.workchain' ELSE 'core.int' END,
       CASE WHEN i % 4 = 0 THEN 'tests.rare' END,
       CASE WHEN i % 4 = 0 THEN 'Rare' END,
       CASE WHEN i % 4 != 0 THEN NULL WHEN i % 4000 = 0 THEN 'excepted'
            WHEN i % 4000 = 2000 THEN 'killed' ELSE 'finished' END,
       CASE WHEN i % 4 = 0 AND i % 4000 NOT IN (0, 2000) THEN 0 END,
       {now} + i * 0.001, {now} + i * 0.001
FROM {series}
"""
_SQLITE_SERIES = (
    f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {NODES}) "
    "SELECT i FROM s)"
)
_POSTGRES_SERIES = f"generate_series(1, {NODES}) AS i"


class Database:
    """A raw connection to the test's database that reads plans and records statements."""

    def __init__(self, location: Path | str) -> None:
        self.postgres = isinstance(location, str)
        if self.postgres:
            import psycopg

            self.connection: Any = psycopg.connect(str(location), autocommit=True)
        else:
            self.connection = sqlite3.connect(location, isolation_level=None)
        self.seen: list[tuple[str, Sequence[Any]]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run a statement, recording it (the sync reads take this object as a connection)."""
        self.seen.append((sql, params))
        return self.connection.execute(sql, params)

    def plan(self, sql: str, params: Sequence[Any]) -> str:
        prefix = "EXPLAIN " if self.postgres else "EXPLAIN QUERY PLAN "
        found = self.connection.execute(prefix + sql, list(params)).fetchall()
        return "\n".join(str(row[0] if self.postgres else row[3]) for row in found)


@pytest.fixture
def database(miniengine_db: Path | str) -> Iterator[Database]:
    store_for(None)  # the schema, made by miniengine
    db = Database(miniengine_db)
    now = int(time.time()) - NODES
    series = _POSTGRES_SERIES if db.postgres else _SQLITE_SERIES
    db.connection.execute(_FILL.format(now=now, series=series))
    if db.postgres:  # what autovacuum does after a bulk insert: the planner's statistics
        db.connection.execute("ANALYZE nodes")
    yield db
    db.connection.close()


def _uses_the_index(plan: str) -> bool:
    return "nodes_ended_badly" in plan


def _newest(db: Database, states: Sequence[str], below: int | None = None) -> list[int]:
    """The pks of the processes in ``states``, newest first, computed in Python."""
    found = db.connection.execute("SELECT pk, process_state FROM nodes").fetchall()
    return sorted(
        (pk for pk, state in found if state in states and (below is None or pk < below)),
        reverse=True,
    )


@pytest.mark.parametrize("states", [["excepted"], ["killed"], ["excepted", "killed"]])
async def test_a_page_of_a_rare_state_walks_the_index_and_pages_as_computed_in_python(
    database: Database, states: list[str]
) -> None:
    dialect = postgres_query_rows.POSTGRES if database.postgres else query_rows.SQLITE
    for label in (None, "rare"):
        query = query_rows.process_page_query(
            dialect, states, label, None, None, None, 2**63 - 1, 50
        )
        assert _uses_the_index(database.plan(*query)), database.plan(*query)
    reads = store_for(None).async_reads
    page = await reads.process_page(states=states, limit=4)
    assert [row.pk for row in page] == _newest(database, states)[:4]
    assert {row.process_state for row in page} <= set(states)
    after = await reads.process_page(states=states, before_pk=page[-1].pk, limit=100)
    assert [row.pk for row in after] == _newest(database, states, page[-1].pk)


async def test_the_sync_and_awaitable_listings_and_the_querybuilder_walk_the_index(
    database: Database,
) -> None:
    store = store_for(None)
    module = postgres_query_rows if database.postgres else query_rows
    database.seen.clear()
    listed = module.list_processes(database, ["excepted"], None, 5)  # type: ignore[arg-type]
    assert [row.pk for row in listed] == _newest(database, ["excepted"])[:5]
    assert store.queries.list_processes(["excepted"], None, 5) == listed
    ((sql, params),) = database.seen
    assert _uses_the_index(database.plan(sql, params)), database.plan(sql, params)

    build = postgres_rows.process_rows_query if database.postgres else rows.process_rows_query
    for states in (["killed"], ["excepted", "killed"]):
        query = build(states, None, 256, None)
        assert _uses_the_index(database.plan(*query)), database.plan(*query)
        expected = _newest(database, states)
        assert [row.pk for row in store.provenance.process_rows(states, None, None)] == expected
        streamed = [row.pk async for row in store.async_reads.process_rows(states, None, None)]
        assert streamed == expected

    if database.postgres:
        from miniengine.storage.postgres.query_builder import POSTGRES as dialect
    else:
        from miniengine.storage.sqlite.query_builder import SQLITE as dialect
    for filters in (
        {"process_state": "excepted"},
        {"process_state": ProcessState.KILLED},
        {"process_state": {"in": ["excepted", "killed"]}},
    ):
        qb = QueryBuilder().append(ProcessNode, filters=filters, project="id")
        compiled = compile_query(qb.order_by({ProcessNode: {"id": "desc"}}).spec(), dialect)
        plan = database.plan(compiled.sql, compiled.params)
        assert _uses_the_index(plan), (filters, plan)
    qb = QueryBuilder().append(
        ProcessNode, filters={"process_state": {"in": ["excepted", "killed"]}}, project="id"
    )
    assert sorted(qb.all(flat=True), reverse=True) == _newest(database, ["excepted", "killed"])
    negated = QueryBuilder().append(
        ProcessNode, filters={"process_state": {"!==": "excepted"}}, project="id"
    )
    assert negated.count() == NODES // 4 - NODES // 4000


@pytest.mark.sqlite_only(reason="sqlite's planner with and without statistics (ANALYZE)")
def test_sqlite_walks_the_index_with_statistics_too(database: Database) -> None:
    database.connection.execute("ANALYZE")
    query = query_rows.process_page_query(
        query_rows.SQLITE, ["excepted"], None, None, None, None, 2**63 - 1, 50
    )
    plan = database.plan(*query)
    assert "SEARCH n USING INDEX nodes_ended_badly (process_state=? AND pk<?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # one state: the index is in pk order already
    # a common ended state keeps walking the primary key: its pages fill at once
    query = query_rows.process_page_query(
        query_rows.SQLITE, ["finished"], None, None, None, None, 2**63 - 1, 50
    )
    assert not _uses_the_index(database.plan(*query)), database.plan(*query)


# the upgrade from schema version 12 -------------------------------------------------------------


_V12_NODES = (
    "INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, "
    "ctime, mtime) VALUES ('0195c4a1-0000-7000-8000-000000000001', 'process.workchain', 't', "
    "'Old', 'excepted', 0, 0), ('0195c4a1-0000-7000-8000-000000000002', 'process.workchain', "
    "'t', 'Old', 'finished', 0, 0)"
)


@pytest.mark.sqlite_only(reason="builds a sqlite file of schema 12 by hand")
async def test_sqlite_version_12_database_gains_the_index(tmp_path: Path) -> None:
    from miniengine.storage.schema import SCHEMA_VERSION

    path = tmp_path / "v12.sqlite"
    old_schema.make_sqlite(path, 12, [_V12_NODES])
    store = open_backend(path)
    try:
        assert [
            row.process_label for row in store.queries.list_processes(["excepted"], None, None)
        ] == ["Old"]
        page = await store.async_reads.process_page(states=["excepted"])
        assert [row.process_state for row in page] == ["excepted"]
    finally:
        store.close()
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    found = connection.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'nodes_ended_badly'"
    ).fetchone()
    assert found is not None and "('excepted', 'killed')" in found[0]
    assert connection.execute("PRAGMA quick_check").fetchone() == ("ok",)
    connection.close()


@pytest.mark.sqlite_only(reason="once: it makes its PostgreSQL database by hand (postgres_url)")
async def test_postgresql_version_12_database_gains_the_index(postgres_url: str) -> None:
    import psycopg

    from miniengine.storage.postgres import schema

    old_schema.make_postgresql(postgres_url, 12, [_V12_NODES])
    store = open_backend(postgres_url)
    try:
        assert [
            row.process_label for row in store.queries.list_processes(["excepted"], None, None)
        ] == ["Old"]
        page = await store.async_reads.process_page(states=["excepted"])
        assert [row.process_state for row in page] == ["excepted"]
    finally:
        store.close()
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        assert schema.read_schema_version(connection) == schema.SCHEMA_VERSION
        found = connection.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'nodes_ended_badly'"
        ).fetchone()
        assert found is not None and "'excepted'" in found[0] and "'killed'" in found[0]
