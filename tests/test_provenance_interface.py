"""The provenance concern of a backend (``store.provenance``): typed records in, typed records out.

The runtime reads nodes, links and logs and writes processes through this interface only, so a
second database implements the same methods; these tests pin what the records hold, on sqlite and
on PostgreSQL alike.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from miniengine import Int
from miniengine.exceptions import MultipleObjectsError, NotExistent
from miniengine.storage.interfaces import Backend
from miniengine.storage.interfaces.provenance import (
    CallMemo,
    FinishProcess,
    LinkRow,
    LogRow,
    NewProcess,
    NodeRow,
    unpack_attributes,
)
from miniengine.storage.open import open_backend


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        location = str(tmp_path / "provenance.sqlite")
    else:
        pytest.importorskip("psycopg")
        location = request.getfixturevalue("postgres_url")
    opened = open_backend(location)
    try:
        yield opened
    finally:
        opened.close()


def new_process(
    store: Backend, label: str = "p", parent: tuple[int, str, int] | None = None
) -> NewProcess:
    return NewProcess(
        uuid=f"{time.monotonic_ns():032x}",
        node_type="process.calcfunction",
        process_type="tests.p",
        process_label=label,
        process_state="running",
        label="",
        description="",
        inputs=[("x", Int(1))],
        input_link_type="input_calc",
        owner=store.owner,
        lease_expires=store.lease_expiry(),
        parent=parent,
        call_link_type="call_calc",
    )


def test_a_process_begins_and_finishes_with_named_records(store: Backend) -> None:
    pk, [input_pk] = store.provenance.begin_process(new_process(store, "first"))
    running = store.provenance.node(pk)
    assert isinstance(running, NodeRow)
    assert (running.pk, running.process_label, running.process_state) == (pk, "first", "running")
    assert (running.owner, running.lease_epoch) == (store.owner, 1)
    assert running[5] == running.process_state == "running"  # positions still work

    [output_pk] = store.provenance.finish_process(
        FinishProcess(
            pk=pk,
            owner=store.owner,
            epoch=1,
            process_state="finished",
            exit_status=0,
            outputs=[("result", Int(2), "create")],
            logs=[("REPORT", "early", 1.0)],
            log=("REPORT", "done"),
            resumable=False,
        )
    )
    finished = store.provenance.node(pk)
    assert (finished.process_state, finished.exit_status, finished.owner) == ("finished", 0, None)

    assert store.provenance.links(pk, incoming=True) == [LinkRow(input_pk, "input_calc", "x")]
    assert store.provenance.links(pk, incoming=False) == [LinkRow(output_pk, "create", "result")]
    assert store.provenance.links(pk, False, ["return"]) == []
    [early, done] = store.provenance.logs(pk)
    assert isinstance(done, LogRow)
    assert (early.time, early.message, done.levelname, done.message) == (
        1.0,
        "early",
        "REPORT",
        "done",
    )

    output = store.provenance.nodes([output_pk, input_pk, 10**6])
    assert sorted(output) == [input_pk, output_pk]
    assert unpack_attributes(output[output_pk].attributes) == 2
    assert [row.pk for row in store.provenance.process_rows(["finished"], None, None)] == [pk]
    assert store.provenance.process_rows(["running"], None, None) == []


def test_logs_and_labels_are_written_from_a_thread_and_a_loop(store: Backend) -> None:
    pk = store.provenance.store_data(Int(5))
    store.provenance.add_log(pk, "WARNING", "one")

    async def from_a_loop() -> None:
        await store.provenance.add_logs.aio(pk, [("REPORT", "two"), ("ERROR", "three", 2.0)])

    asyncio.run(from_a_loop())
    assert [(log.levelname, log.message) for log in store.provenance.logs(pk)] == [
        ("WARNING", "one"),
        ("REPORT", "two"),
        ("ERROR", "three"),
    ]
    store.provenance.update_label(pk, "five", "an Int")
    row = store.provenance.node(pk)
    assert (row.label, row.description, row.node_type) == ("five", "an Int", Int(0).type_name)


def test_nodes_are_found_by_uuid_and_prefix(store: Backend) -> None:
    first, second = Int(1), Int(2)
    first_pk = store.provenance.store_data(first)
    second_pk = store.provenance.store_data(second)
    assert store.provenance.node(first.uuid.upper()).pk == first_pk
    assert store.provenance.node(second.uuid[14:].replace("-", "")).pk == second_pk
    assert first_pk in store.provenance.uuid_matches(first.uuid[:8])
    assert store.provenance.uuid_matches("not hex") == []
    with pytest.raises(NotExistent, match="no node with the pk 999"):
        store.provenance.node(999)
    if first.uuid[:4] == second.uuid[:4]:
        with pytest.raises(MultipleObjectsError, match="matches more than one node"):
            store.provenance.node(first.uuid[:4])


def test_a_memoised_call_is_created_once(store: Backend) -> None:
    parent_pk, _ = store.provenance.begin_process(new_process(store, "parent"))
    fence = (parent_pk, store.owner, 1)
    memo = CallMemo(parent_pk, seq=3, call_index=0, fingerprint="f")
    new = new_process(store, "child", parent=fence)
    pk, _, outcome = store.provenance.begin_memoised(new, memo)
    assert outcome == "new"
    store.provenance.finish_process(
        FinishProcess(pk=pk, owner=store.owner, epoch=1, process_state="finished", exit_status=0)
    )
    again = new_process(store, "child", parent=fence)
    assert store.provenance.begin_memoised(again, memo) == (pk, [], "finished")
    assert store.provenance.links(parent_pk, False, ["call_calc"]) == [
        LinkRow(pk, "call_calc", "CALL")
    ]


def test_the_repository_of_a_database_file_is_beside_it(store: Backend, tmp_path: Path) -> None:
    if not store.location.endswith(".sqlite"):
        pytest.skip("a PostgreSQL database records its repository folder instead")
    repository = store.provenance.repository()
    assert repository.root == tmp_path / "provenance.repository"
    key = repository.put_object_from_filelike(io.BytesIO(b"content"))
    with repository.open(key) as stream:
        assert stream.read() == b"content"
