"""A database written by the previous release opens, migrates, and its processes finish.

``tests/fixtures/previous_release.sqlite`` was written by miniengine 0.1.0.dev0 at commit 3c04b33
(schema version 5) with ``tests/fixtures/make_previous_release.py``: finished processes with
links and reports, ``WaitingParent`` WorkChains WAITING on children with checkpoints, their
``HeldChild`` children RUNNING from a checkpoint with a ready task (their worker stopped mid-step),
and ``WaitingParent`` processes CREATED with a ready task.  The classes are in
``tests/workchains/upgrade_chains.py``.  Here a real daemon (worker OS processes) runs them to the
end, and what the old release wrote reads back unchanged.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from miniengine import ProcessState, load_node
from miniengine.storage.schema import SCHEMA_VERSION
from miniengine.storage.store import Store
from tests.workchains.daemon_chains import DaemonGuard, wait_until
from tests.workchains.upgrade_chains import expected_total

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and ps")

FIXTURE = Path(__file__).parent / "fixtures" / "previous_release.sqlite"

#: the schema version the previous release wrote
PREVIOUS_SCHEMA = 5

ACTIVE = ("created", "running", "waiting")


def node_columns(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        columns = [str(row[1]) for row in connection.execute("PRAGMA table_info(nodes)")]
    connection.close()
    return columns


def snapshot(db: Path, columns: list[str], finished: list[int]) -> dict[str, Any]:
    """What the old release wrote and nothing may change: its finished processes, its data
    nodes, links and reports, by the columns that release had."""
    with sqlite3.connect(db) as connection:
        marks = ",".join("?" * len(finished))
        nodes = connection.execute(
            f"SELECT {', '.join(columns)} FROM nodes WHERE pk IN ({marks}) ORDER BY pk", finished
        ).fetchall()
        data = connection.execute(
            "SELECT pk, uuid, node_type, attributes, ctime FROM nodes"
            " WHERE process_type IS NULL AND pk <= ? ORDER BY pk",
            (max(finished),),
        ).fetchall()
        links = connection.execute(
            "SELECT pk, in_pk, out_pk, link_type, label FROM links ORDER BY pk"
        ).fetchall()
        logs = connection.execute(
            "SELECT pk, node_pk, time, levelname, message FROM logs ORDER BY pk"
        ).fetchall()
    connection.close()
    return {"nodes": nodes, "data": data, "links": links, "logs": logs}


def processes(db: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(db) as connection:
        found = connection.execute(
            "SELECT pk, process_label, process_state FROM nodes"
            " WHERE process_state IS NOT NULL ORDER BY pk"
        ).fetchall()
    connection.close()
    return [(int(pk), str(label), str(state)) for pk, label, state in found]


def test_fixture_is_from_the_previous_schema_with_work_in_flight() -> None:
    """Guards the fixture: a regenerated one must still hold every case the upgrade covers."""
    with sqlite3.connect(FIXTURE) as connection:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        checkpointed = {
            state: count
            for state, count in connection.execute(
                "SELECT n.process_state, COUNT(*) FROM checkpoints c JOIN nodes n"
                " ON n.pk = c.node_pk GROUP BY n.process_state"
            )
        }
        ready = connection.execute("SELECT COUNT(*) FROM tasks WHERE status = 'ready'").fetchone()
    connection.close()
    assert version == PREVIOUS_SCHEMA
    assert checkpointed.get("waiting", 0) >= 3
    assert checkpointed.get("running", 0) >= 3
    assert checkpointed.get("created", 0) >= 2
    assert ready[0] >= 8
    assert FIXTURE.stat().st_size < 1024 * 1024


def test_previous_release_database_migrates_and_its_processes_finish(
    miniengine_db: Path,
) -> None:
    shutil.copyfile(FIXTURE, miniengine_db)
    miniengine_db.chmod(0o600)
    old_columns = node_columns(miniengine_db)
    found = processes(miniengine_db)
    finished = [pk for pk, _, state in found if state == "finished"]
    assert len(finished) == 18 and len([row for row in found if row[2] in ACTIVE]) == 11
    before = snapshot(miniengine_db, old_columns, finished)

    Store(miniengine_db).close()  # opening migrates
    with sqlite3.connect(miniengine_db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    connection.close()

    with DaemonGuard(miniengine_db) as daemon:
        daemon.start("--workers", "2")
        wait_until(
            lambda: all(state not in ACTIVE for _, _, state in processes(miniengine_db)),
            timeout=120,
            what="every process of the old database to terminate",
        )
        assert daemon.cli("stop").returncode == 0

    found = processes(miniengine_db)
    assert [row for row in found if row[2] != "finished"] == []
    parents = 0
    for pk, label, _ in found:
        node = load_node(pk)
        assert node.process_state is ProcessState.FINISHED and node.exit_status == 0, pk
        if label == "WaitingParent":
            parents += 1
            x, n = node.inputs.x.value, node.inputs.n.value
            assert node.outputs.first.value == x + n
            assert node.outputs.total.value == expected_total(x, n)
            children = [child for child in node.called if child.process_label == "HeldChild"]
            assert sorted(child.inputs.x.value for child in children) == [x + i for i in range(n)]
        elif label == "HeldChild":
            assert node.outputs.tripled.value == 3 * node.inputs.x.value
    assert parents == 6

    for pk in finished:  # the old rows read back through the current API as well
        node = load_node(pk)
        assert node.is_finished_ok
        old_reports = [row[4] for row in before["logs"] if row[1] == pk]
        assert [entry.message for entry in node.logs] == old_reports
        old_outputs = {
            row[4]: row[2]
            for row in before["links"]
            if row[1] == pk and row[3] in ("create", "return")
        }
        assert {label: node.outputs[label].pk for label in old_outputs} == old_outputs

    after = snapshot(miniengine_db, old_columns, finished)
    assert after["nodes"] == before["nodes"]
    assert after["data"] == before["data"]
    assert after["links"][: len(before["links"])] == before["links"]
    assert after["logs"][: len(before["logs"])] == before["logs"]
    with sqlite3.connect(miniengine_db) as connection:
        checkpoints = connection.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
        open_tasks = connection.execute(
            "SELECT COUNT(*) FROM tasks WHERE status != 'done'"
        ).fetchone()[0]
    connection.close()
    assert (checkpoints, open_tasks) == (0, 0)
