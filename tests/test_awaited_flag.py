"""The ``awaited`` flag of a process's row (schema 14): a parent that starts waiting sets it on
the children it waits for, and an end looks for waiting parents only when it is set.  A database
of schema 13 with a parent waiting at that moment gains the flag on its children when it is
opened, so their ends still wake it."""

from __future__ import annotations

import time
from pathlib import Path

from miniengine.storage.interfaces.provenance import FinishProcess
from miniengine.storage.open import open_backend
from tests.services import old_schema, sql

OWNER = "worker:old-host:1:1"

#: A parent (1) waiting for a running child (2), and a running process (3) that nobody awaits.
_ROWS = [
    "INSERT INTO nodes (pk, uuid, node_type, process_state, owner, lease_epoch, lease_expires, "
    "ctime, mtime, submitted) VALUES "
    "(1, '01a247ea-2376-735a-99b1-34dea7761901', 'process.workchain', 'waiting', NULL, 1, "
    "NULL, 0, 0, 1), "
    "(2, '01a247ea-2376-735a-99b1-34dea7761902', 'process.workchain', 'running', '{owner}', 1, "
    "{expires}, 0, 0, 1), "
    "(3, '01a247ea-2376-735a-99b1-34dea7761903', 'process.workchain', 'running', '{owner}', 1, "
    "{expires}, 0, 0, 1)",
    "INSERT INTO awaited (child_pk, parent_pk) VALUES (2, 1)",
    "INSERT INTO waits (parent_pk, seq, outstanding) VALUES (1, 4, 1)",
]


def _make_version_13(db: Path | str) -> None:
    rows = [row.format(owner=OWNER, expires=time.time() + 600) for row in _ROWS]
    if sql.is_postgres(db):
        nodes, *others = rows  # (pks as given: the rows refer to them)
        nodes = nodes.replace(") VALUES", ") OVERRIDING SYSTEM VALUE VALUES", 1)
        sequence = "SELECT setval(pg_get_serial_sequence('nodes', 'pk'), 3)"
        old_schema.make_postgresql(str(db), 13, [nodes, *others, sequence])
    else:
        old_schema.make_sqlite(Path(db), 13, rows)


def _woken(db: Path | str) -> list[int]:
    return [
        pk
        for (pk,) in sql.query(
            db, "SELECT process_pk FROM tasks WHERE dedup_key LIKE ? ORDER BY pk", "wake:%"
        )
    ]


def _migrate_and_end_the_children(db: Path | str) -> None:
    _make_version_13(db)
    store = open_backend(db)  # migrates to the current schema
    try:
        finish = store.provenance.finish_process
        finish(FinishProcess(3, OWNER, 1, "finished"))  # nobody waits for it
        assert _woken(db) == []
        finish(FinishProcess(2, OWNER, 1, "finished"))
        assert _woken(db) == [1]
        assert sql.count(db, "SELECT count(*) FROM waits") == 0
    finally:
        store.close()


def test_a_child_awaited_before_the_migration_still_wakes_its_parent_sqlite(
    tmp_path: Path,
) -> None:
    _migrate_and_end_the_children(tmp_path / "v13.sqlite")


def test_a_child_awaited_before_the_migration_still_wakes_its_parent_postgresql(
    postgres_url: str,
) -> None:
    _migrate_and_end_the_children(postgres_url)
