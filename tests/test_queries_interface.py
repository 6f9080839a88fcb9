"""The Queries and Control concerns as the code above storage sees them: typed records from a
store and from a database opened to read only, and typed outcomes of kill, pause and play."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from miniengine import Int, calcfunction, find_processes, run, submit
from miniengine.exceptions import IncompatibleDatabaseError, ReadOnlyDatabaseError, StoreError
from miniengine.runtime.context import store_for
from miniengine.storage.interfaces.control import (
    KILL_STATUS,
    ControlRequest,
    KillOutcome,
    PauseOutcome,
    PlayOutcome,
)
from miniengine.storage.interfaces.queries import DatabaseCounts, NodeView, ProcessRow
from miniengine.storage.schema import SCHEMA_VERSION
from miniengine.storage.sqlite.reader import SqliteReader
from tests.workchains.daemon_chains import AddWorkChain


@calcfunction
def add(x, y):  # type: ignore[no-untyped-def]
    return Int(x.value + y.value)


def test_a_reader_and_a_store_answer_the_same_typed_queries(miniengine_db: Path) -> None:
    run(add, 1, 2)
    (node,) = find_processes()
    store = store_for(None)
    with SqliteReader(miniengine_db) as reader:
        for queries in (reader.queries, store.queries):
            (row,) = queries.list_processes(None, None, None)
            assert isinstance(row, ProcessRow)
            assert (row.pk, row.process_label, row.process_state) == (node.pk, "add", "finished")
            shown = queries.node(node.pk)
            assert isinstance(shown, NodeView) and shown.uuid == node.uuid
            assert queries.node(2**70) is None
            assert queries.uuid_matches(node.uuid) == [node.pk]
            assert queries.uuid_matches(node.uuid[14:]) == [node.pk]  # after the timestamp
            assert [link.link_label for link in queries.linked_nodes(
                node.pk, incoming=True, link_types=["input_calc"])] == ["x", "y"]  # fmt: skip
            assert [tree.pk for tree in queries.subtree(node.pk, None)] == [node.pk]
            counts = queries.counts()
            assert isinstance(counts, DatabaseCounts)
            assert counts.processes == {"finished": 1} and counts.nodes == 4
            assert counts.queue is not None and counts.queue.ready == 0
            assert queries.schema_version() == SCHEMA_VERSION
            assert queries.integrity_check() == "ok"
            with pytest.raises(ValueError, match="unknown process state"):
                queries.list_processes(["asleep"], None, None)
        assert reader.check() == SCHEMA_VERSION
        assert reader.calcjobs.calcjob_info(node.pk) is None
        assert reader.provenance.node(node.pk).process_label == "add"


def test_a_reader_never_writes(miniengine_db: Path, tmp_path: Path) -> None:
    run(add, 1, 2)
    (node,) = find_processes()
    with (
        SqliteReader(miniengine_db) as reader,
        pytest.raises(ReadOnlyDatabaseError, match="opened to read only"),
    ):
        reader.provenance.add_log(node.pk, "REPORT", "not stored")
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(StoreError, match="cannot open the database"):
        SqliteReader(missing)
    assert not missing.exists()
    newer = tmp_path / "newer.sqlite"
    newer.write_bytes(miniengine_db.read_bytes())
    with sqlite3.connect(newer) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = newer.read_bytes()
    with pytest.raises(IncompatibleDatabaseError, match="newer miniengine"):
        SqliteReader(newer)
    assert newer.read_bytes() == before


def test_kill_pause_and_play_return_typed_outcomes(miniengine_db: Path) -> None:
    store = store_for(None)
    pk = submit(AddWorkChain, x=Int(1), y=Int(2)).pk  # created, queued, owned by nobody
    paused = store.control.pause(pk)
    assert paused == PauseOutcome("created", True, False)
    assert store.control.control_request(pk) is None  # nobody to ask: changed in place
    assert store.control.play(pk) == PlayOutcome("created", True)
    killed = store.control.kill(pk, None)
    assert isinstance(killed, KillOutcome)
    assert killed == KillOutcome("created", [pk], [])
    assert store.control.process_state(pk) == "killed"
    assert store.provenance.node(pk).process_status == KILL_STATUS
    again = store.control.kill(pk, "twice")
    assert again == KillOutcome("killed", [], [])
    assert store.control.pause(pk).paused is False
    assert store.control.play(pk).played is False
    assert store.control.pending_controls(store.owner) == []
    assert ControlRequest(1, "pause").request == "pause"
