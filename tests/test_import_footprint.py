"""What a script that runs process functions on a sqlite file imports.

Every script and command line pays for each module it imports (their classes, named tuples and
dataclasses are built at import), so the parts of the storage layer a calcfunction does not use
-- PostgreSQL, the awaitable reads, archives, queries, computers, groups, traversal and the
backend protocols themselves -- are imported on first use only.  Each check runs in a fresh
interpreter, so that what this test process has imported cannot hide an import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Imported by none of: ``import miniengine``, ``from miniengine import ...``, opening a sqlite
#: file, and calling a calcfunction and a workfunction on it.
NOT_FOR_A_SQLITE_SCRIPT = (
    "aiosqlite",
    "psycopg",
    "miniengine.storage.postgres",
    "miniengine.web",
    "miniengine.tools",
    "miniengine.storage.interfaces.backend",
    "miniengine.storage.interfaces.archive",
    "miniengine.storage.interfaces.reads",
    "miniengine.storage.interfaces.query_builder",
    "miniengine.storage.interfaces.queries",
    "miniengine.storage.query_rows",
    "miniengine.storage.sqlite.archive",
    "miniengine.storage.sqlite.async_reads",
    "miniengine.storage.sqlite.query_builder",
    "miniengine.storage.sqlite.queries",
    "miniengine.storage.sqlite.computers",
    "miniengine.storage.sqlite.calcjobs",
    "miniengine.storage.sqlite.groups",
    "miniengine.storage.sqlite.traversal",
    "miniengine.storage.sqlite.events",
    "miniengine.storage.computer_rows",
    "miniengine.storage.traversal_rows",
    "miniengine.core.graph_rules",
)

SCRIPT = """
import json, sys
from miniengine import Int, calcfunction, workfunction

@calcfunction
def add(x, y):
    return Int(x + y)

@workfunction
def add_twice(x, y):
    return add(add(x, y), y)

assert add(Int(1), Int(2)) == 3
assert add_twice(Int(1), Int(2)) == 5
print(json.dumps(sorted(sys.modules)))
"""


@pytest.fixture(scope="module")
def footprint_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("footprint") / "engine.sqlite"


@pytest.fixture(scope="module")
def modules(footprint_db: Path) -> set[str]:
    """The modules loaded after a script ran process functions on a new sqlite file."""
    return _run_script(footprint_db)


def _run_script(db: Path) -> set[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["MINIENGINE_DB"] = str(db)
    env.pop("MINIENGINE_CACHING", None)
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    import json

    loaded: list[str] = json.loads(completed.stdout.strip().splitlines()[-1])
    return set(loaded)


def test_the_script_ran_on_the_sqlite_store(modules: set[str]) -> None:
    assert {"miniengine.storage.store", "miniengine.runtime.functions"} <= modules


@pytest.mark.parametrize("unused", NOT_FOR_A_SQLITE_SCRIPT)
def test_a_sqlite_script_does_not_import(modules: set[str], unused: str) -> None:
    assert sorted(m for m in modules if m == unused or m.startswith(unused + ".")) == []


def test_the_migrations_are_imported_only_to_create_or_migrate_a_database(
    modules: set[str], footprint_db: Path
) -> None:
    from miniengine.storage import schema

    assert "miniengine.storage.schema_v13" in modules  # the script created the database
    again = _run_script(footprint_db)  # a script on a database at the current schema
    assert "miniengine.storage.store" in again
    assert sorted(m for m in again if m.startswith("miniengine.storage.schema_v")) == []
    # the version is written out, not counted from the migrations: it must match them
    assert sorted(schema.MIGRATIONS) == list(range(schema.SCHEMA_VERSION))
    folder = REPO / "miniengine" / "storage"
    assert not (folder / f"schema_v{schema.SCHEMA_VERSION + 1}.py").exists()


def test_the_lazy_concerns_are_built_on_first_use(tmp_path: Path) -> None:
    from miniengine.storage.sqlite.computers import SqliteComputers
    from miniengine.storage.sqlite.groups import SqliteGroups
    from miniengine.storage.store import Store

    store = Store(tmp_path / "engine.sqlite")
    try:
        assert "groups" not in vars(store)
        groups = store.groups
        assert isinstance(groups, SqliteGroups)
        assert store.groups is groups  # built once, then kept
        assert isinstance(store.computers, SqliteComputers)
        assert store.queries.counts().nodes == 0
    finally:
        store.close()


def test_opening_a_database_at_the_current_schema_runs_no_ddl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from miniengine.storage import schema
    from miniengine.storage.store import Store

    path = tmp_path / "engine.sqlite"
    Store(path).close()  # created: the schema's DDL runs here
    statements: list[str] = []
    connect = schema.connect

    def traced(*args: object, **kwargs: object) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)  # type: ignore[arg-type]
        connection.set_trace_callback(statements.append)
        return connection

    monkeypatch.setattr(schema, "connect", traced)
    store = Store(path)
    try:
        assert store.provenance is not None
    finally:
        store.close()
    assert statements, "the trace saw no statement: the store did not open through it"
    ddl = [s for s in statements if s.split(None, 1)[0].upper() in ("CREATE", "ALTER", "DROP")]
    assert ddl == []
