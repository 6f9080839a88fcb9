"""The awaitable reads of the web view (``backend.async_reads``): a page of processes, the
changes since a cursor, a process's detail, its call tree and reports, and the daemon's
overview, each checked against the answer computed in Python from the sync reads, on sqlite and
on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from miniengine import FolderData, Group, Int, Str, asubmit, calcfunction, workfunction
from miniengine.control import kill_processes, pause_processes, play_processes
from miniengine.core.checkpoint import Checkpoint
from miniengine.core.ids import new_uuid
from miniengine.exceptions import NotExistent, ValidationError
from miniengine.runtime.context import store_for
from miniengine.storage import process_changes
from miniengine.storage.interfaces.provenance import FinishProcess, NewProcess, NodeRow
from miniengine.storage.interfaces.reads import ProcessSummary
from miniengine.storage.process_changes import ACTIVE
from miniengine.storage.process_detail import checkpoint_step
from miniengine.testing import WaitingProcess

pytestmark = pytest.mark.backends


@calcfunction
def add(x, y):
    return Int(x + y)


@calcfunction
def fail(x):
    raise ValueError("<script>alert(1)</script> is text")


@workfunction
def add_twice(x, y):
    return add(add(x, y), y)


def reads() -> Any:
    return store_for(None).async_reads


def all_processes() -> list[NodeRow]:
    """Every process, newest first, from the sync read."""
    return list(store_for(None).provenance.process_rows(None, None, None))


def callers() -> dict[int, int]:
    queries = store_for(None).queries
    return {row.pk: row.caller for row in queries.list_processes(None, None, None) if row.caller}


async def build_processes() -> None:
    """Processes of several labels and states: 3 workfunctions (3 processes each), calls that
    failed, and a few created ones waiting for a daemon."""
    for x in range(3):
        await add_twice.arun(x, 1)
    for x in range(2):
        with pytest.raises(ValueError):
            await fail.arun(x)
    for name in ("a", "b"):
        await asubmit(WaitingProcess, gate=Str(name))


# -- a page of processes ---------------------------------------------------------------------


async def test_process_page_filters_and_pages_as_computed_in_python() -> None:
    await build_processes()
    every = all_processes()
    middle = every[len(every) // 2].ctime
    group = Group(label="chosen").store()
    group.add_nodes([_node(row.pk) for row in every[1::3]])
    members = {row.pk for row in every[1::3]}
    # two groups of one label (different types): the members of both
    store = store_for(None)
    twin, _ = store.groups.create_group("twins", "core", "", False)
    other, _ = store.groups.create_group("twins", "tests.other", "", False)
    store.groups.add_group_nodes(twin.pk, [row.pk for row in every[::4]])
    store.groups.add_group_nodes(other.pk, [row.pk for row in every[::5]])
    twins = {row.pk for row in every[::4]} | {row.pk for row in every[::5]}
    caller_of = callers()
    cases: list[tuple[dict[str, Any], Any]] = [
        ({}, lambda r: True),
        ({"states": ["finished"]}, lambda r: r.process_state == "finished"),
        ({"states": ["created", "excepted"]}, lambda r: r.process_state in ("created", "excepted")),
        ({"label": "ADD"}, lambda r: "add" in (r.process_label or "").lower()),
        ({"label": "twice"}, lambda r: "twice" in (r.process_label or "")),
        ({"label": "%"}, lambda r: "%" in (r.process_label or "")),  # matches itself only
        ({"group": "chosen"}, lambda r: r.pk in members),
        ({"group": "no such group"}, lambda r: False),
        ({"group": "twins"}, lambda r: r.pk in twins),
        ({"group": "twins", "states": ["finished"]},
         lambda r: r.pk in twins and r.process_state == "finished"),
        ({"since": middle}, lambda r: r.ctime >= middle),
        ({"until": middle}, lambda r: r.ctime < middle),
        ({"states": ["finished"], "label": "add", "group": "chosen"},
         lambda r: r.process_state == "finished" and "add" in r.process_label and r.pk in members),
    ]  # fmt: skip
    for filters, keep in cases:
        expected = [row.pk for row in every if keep(row)]
        for limit in (1, 4, 100):
            pages: list[list[ProcessSummary]] = []
            before = None
            while True:
                page = await reads().process_page(**filters, before_pk=before, limit=limit)
                assert len(page) <= limit
                if not page:
                    break
                pages.append(page)
                before = page[-1].pk
            got = [summary for page in pages for summary in page]
            assert [s.pk for s in got] == expected, (filters, limit)
    newest = await reads().process_page(limit=len(every))
    by_pk = {row.pk: row for row in every}
    for summary in newest:
        row = by_pk[summary.pk]
        assert summary == ProcessSummary(
            row.pk, row.uuid, row.process_label, row.process_state, row.exit_status,
            bool(row.paused), row.ctime, row.mtime, caller_of.get(row.pk), row.process_status,
        )  # fmt: skip
    assert any(summary.parent is not None for summary in newest)


def _node(pk: int) -> Any:
    from miniengine import load_node

    return load_node(pk)


async def test_process_page_refuses_bad_arguments_before_reading() -> None:
    for bad in (
        {"states": ["finishd"]},
        {"states": "finished"},
        {"limit": 0},
        {"limit": "10"},
        {"before_pk": "7"},
        {"label": 7},
        {"group": ["a"]},
        {"since": "yesterday"},
        {"until": float("nan")},
    ):
        with pytest.raises(ValidationError):
            await reads().process_page(**bad)
    assert await reads().process_page(before_pk=1) == []
    assert await reads().process_page(before_pk=2**70) == []  # no process yet, no overflow


# -- changes since a cursor ------------------------------------------------------------------


async def test_changes_after_reports_created_changed_paused_and_ended_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(process_changes, "NEW_ROWS", 2)  # new nodes read two at a time
    await add.arun(1, 2)  # before the cursor: never reported
    cursor = await reads().current_cursor()
    cursor, changes = await reads().changes_after(cursor)
    assert changes == []

    waiting = await asubmit(WaitingProcess, gate=Str("never"))
    _, work = await add_twice.arun_get_node(1, 2)
    cursor, changes = await reads().changes_after(cursor)
    expected = {row.pk for row in all_processes() if row.pk >= waiting.pk}
    assert [c.pk for c in changes] == sorted(expected)
    states = {c.pk: c.process_state for c in changes}
    assert states[waiting.pk] == "created" and states[work.pk] == "finished"
    assert {c.parent for c in changes if c.pk not in (waiting.pk, work.pk)} == {work.pk}

    cursor, changes = await reads().changes_after(cursor)
    assert changes == []  # nothing changed: nothing reported

    await asyncio.to_thread(pause_processes, [waiting])
    cursor, changes = await reads().changes_after(cursor)
    assert [(c.pk, c.paused) for c in changes] == [(waiting.pk, True)]
    await asyncio.to_thread(play_processes, [waiting])
    cursor, changes = await reads().changes_after(cursor)
    assert [(c.pk, c.paused) for c in changes] == [(waiting.pk, False)]
    await asyncio.to_thread(kill_processes, [waiting])
    cursor, changes = await reads().changes_after(cursor)
    assert [(c.pk, c.process_state) for c in changes] == [(waiting.pk, "killed")]
    assert cursor.active == {}


async def test_changes_after_finds_each_change_among_many_active_processes() -> None:
    """Many active processes in small buckets: the changed ones are found through their
    buckets' fingerprints, and only they are reported."""
    processes = [await asubmit(WaitingProcess, gate=Str(f"gate {i}")) for i in range(30)]
    cursor = dataclasses.replace(await reads().current_cursor(), bucket_size=4)
    cursor, changes = await reads().changes_after(cursor)
    assert changes == [] and len(cursor.buckets) > 5
    cursor, changes = await reads().changes_after(cursor)
    assert changes == []

    def fields(row: NodeRow) -> tuple[Any, ...]:
        return (row.process_state, row.exit_status, bool(row.paused), row.mtime, row.process_status)

    before = {row.pk: fields(row) for row in all_processes()}
    await asyncio.to_thread(pause_processes, processes[3::7])
    await asyncio.to_thread(kill_processes, processes[5::9])
    await asubmit(WaitingProcess, gate=Str("late"))
    await add.arun(1, 2)
    cursor, changes = await reads().changes_after(cursor)
    after = {row.pk: row for row in all_processes()}
    expected = [pk for pk in sorted(after) if before.get(pk) != fields(after[pk])]
    assert len(expected) == len(processes[3::7]) + len(processes[5::9]) + 2
    assert [c.pk for c in changes] == expected
    assert {c.pk: c.paused for c in changes} == {pk: bool(after[pk].paused) for pk in expected}
    assert set(cursor.active) == {pk for pk, row in after.items() if row.process_state in ACTIVE}
    cursor, changes = await reads().changes_after(cursor)
    assert changes == []


async def test_the_first_read_after_a_fresh_cursor_reports_the_end_of_a_lone_process() -> None:
    """The only active process of its bucket ends right after ``current_cursor``: no bucket
    fingerprint holds it any more, and the cursor had none yet; it is still reported."""
    lone = await asubmit(WaitingProcess, gate=Str("lone"))
    cursor = await reads().current_cursor()
    assert lone.pk in cursor.active
    await asyncio.to_thread(kill_processes, [lone])
    cursor, changes = await reads().changes_after(cursor)
    assert [(c.pk, c.process_state) for c in changes] == [(lone.pk, "killed")]
    assert cursor.active == {}


@pytest.mark.parametrize("seed", [1, 2])
async def test_every_final_state_is_reported_whatever_the_order_of_changes_and_reads(
    seed: int,
) -> None:
    """Random creates, pauses, plays, kills and finished calls, interleaved with reads and with
    fresh cursors in tiny buckets: after a last read, the latest summary reported of every
    process that changed since its cursor was taken is the process as it is now."""
    import random

    rng = random.Random(seed)

    def now() -> dict[int, tuple[Any, ...]]:
        return {
            row.pk: (row.process_state, row.exit_status, bool(row.paused), row.process_status)
            for row in all_processes()
        }

    async def fresh() -> Any:
        cursor = await reads().current_cursor()
        return dataclasses.replace(cursor, bucket_size=rng.choice([1, 2, 3, 64]))

    active: list[Any] = [await asubmit(WaitingProcess, gate=Str("start"))]
    cursor, baseline, reported = await fresh(), now(), {}
    for step in range(40):
        action = rng.choice(["create", "create", "pause", "play", "kill", "call", "read", "fresh"])
        if action == "create":
            active.append(await asubmit(WaitingProcess, gate=Str(f"g{step}")))
        elif action == "call":
            await add.arun(step, 1)
        elif action in ("pause", "play", "kill") and active:
            chosen = rng.sample(active, rng.randint(1, min(3, len(active))))
            control = {"pause": pause_processes, "play": play_processes, "kill": kill_processes}
            await asyncio.to_thread(control[action], chosen)
            if action == "kill":
                active = [node for node in active if node not in chosen]
        elif action == "read":
            cursor, changes = await reads().changes_after(cursor)
            reported.update({c.pk: c for c in changes})
        elif action == "fresh":
            cursor, baseline, reported = await fresh(), now(), {}
    cursor, changes = await reads().changes_after(cursor)
    reported.update({c.pk: c for c in changes})
    final = now()
    changed = {pk for pk, fields in final.items() if baseline.get(pk) != fields}
    assert changed <= reported.keys()
    for pk in changed:
        c = reported[pk]
        assert (c.process_state, c.exit_status, c.paused, c.process_status) == final[pk]
    assert set(cursor.active) == {pk for pk, f in final.items() if f[0] in ACTIVE}


async def test_a_lower_pk_committed_after_a_higher_one_is_still_reported(
    miniengine_db: Path | str,
) -> None:
    """On PostgreSQL a transaction that took pk n may commit after one that took n + 1."""
    if isinstance(miniengine_db, Path):
        pytest.skip("sqlite serialises writers: pks become visible in increasing order")
    import psycopg

    cursor = await reads().current_cursor()
    insert = (
        "INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, "
        "exit_status, ctime, mtime) VALUES (%s, 'process.calcfunction', 'x:y', %s, "
        "'finished', 0, %s, %s) RETURNING pk"
    )
    with psycopg.connect(miniengine_db) as slow, psycopg.connect(miniengine_db) as fast:
        now = time.time()
        row = slow.execute(insert, (new_uuid(), "slow", now, now)).fetchone()  # not committed
        assert row is not None
        slow_pk = row[0]
        fast_row = fast.execute(insert, (new_uuid(), "fast", now, now)).fetchone()
        assert fast_row is not None and fast_row[0] > slow_pk
        fast.commit()
        cursor, changes = await reads().changes_after(cursor)
        assert [c.process_label for c in changes] == ["fast"]
        assert slow_pk in cursor.gaps  # still expected
        cursor, changes = await reads().changes_after(cursor)
        assert changes == [] and slow_pk in cursor.gaps  # its transaction still runs
        slow.commit()
    cursor, changes = await reads().changes_after(cursor)
    assert [(c.pk, c.process_label) for c in changes] == [(slow_pk, "slow")]
    assert cursor.gaps == {}

    # a transaction in flight when the cursor is made: its pk is below the highest one
    with psycopg.connect(miniengine_db) as slow, psycopg.connect(miniengine_db) as fast:
        row = slow.execute(insert, (new_uuid(), "slower", now, now)).fetchone()
        assert row is not None
        fast.execute(insert, (new_uuid(), "faster", now, now))
        fast.commit()
        cursor = await reads().current_cursor()
        assert row[0] in cursor.gaps
        slow.commit()
    cursor, changes = await reads().changes_after(cursor)
    assert [(c.pk, c.process_label) for c in changes] == [(row[0], "slower")]


async def test_a_read_cancelled_mid_query_leaves_the_next_reads_working(
    miniengine_db: Path | str,
) -> None:
    """A client that goes away cancels its read in the middle of a query (an anyio cancel
    scope cancels again each time the task awaits); psycopg then closes the loop's
    connection.  The next read opens a new one instead of failing for good."""
    if isinstance(miniengine_db, Path):
        pytest.skip("an aiosqlite query runs on its own thread: cancelling it closes nothing")
    node = Int(5).store()
    async_reads = reads()
    assert (await async_reads.node(node.pk)).pk == node.pk  # the loop's connection is open
    connection = await async_reads._connection()
    with anyio.move_on_after(0.3) as scope:  # as Starlette cancels a request's task
        await async_reads.fetch("SELECT pg_sleep(30)", ())
    assert scope.cancelled_caught
    assert connection.closed  # what the cancellation did to it
    assert (await async_reads.node(node.pk)).pk == node.pk
    assert [c.pk for c in (await async_reads.process_page(limit=5))] == [
        row.pk for row in all_processes()[:5]
    ]
    other = await async_reads._connection()
    assert other is not connection and not other.closed


async def test_a_gap_is_given_up_once_every_transaction_that_may_hold_it_ended() -> None:
    """The comparison alone: a pk skipped below the highest one waits for the transactions
    running at the read after it was missed (a rolled-back insert never shows)."""
    row = (5, "u5", "p", "finished", 0, 0, 1.0, 1.0, None)
    start = process_changes.first_cursor([], 3)

    async def read(cursor: Any, nodes: list[Any], snapshot: Any) -> Any:
        changes = process_changes.Diff(cursor, set())
        await changes.add(nodes, {}, True)
        return changes.finish({}, snapshot)

    def horizon(xmin: int, xmax: int) -> Any:
        return process_changes.Snapshot(xmin, xmax)

    cursor, changes = await read(start, [row], horizon(100, 110))
    assert [c.pk for c in changes] == [5] and cursor.gaps == {4: None}
    cursor, _ = await read(cursor, [], horizon(105, 120))
    assert cursor.gaps == {4: 120}  # the horizon: transactions below 120 may hold it
    cursor, _ = await read(cursor, [], horizon(119, 130))
    assert cursor.gaps == {4: 120}
    cursor, _ = await read(cursor, [], horizon(120, 130))
    assert cursor.gaps == {}  # all of them ended: it was rolled back
    cursor, _ = await read(start, [row], None)
    assert cursor.gaps == {}  # sqlite: nothing can fill a gap later


# -- one process -----------------------------------------------------------------------------


async def test_process_detail_of_finished_excepted_created_and_calcjob_processes() -> None:
    _, work = await add_twice.arun_get_node(1, 2)
    detail = await reads().process_detail(work.pk)
    assert detail.node.pk == work.pk and detail.node.process_state == "finished"
    assert detail.node.exit_status == 0 and detail.caller is None and detail.owner is None
    assert [(i.link_label, i.link_type, i.node_type) for i in detail.inputs] == [
        ("x", "input_work", "core.int"),
        ("y", "input_work", "core.int"),
    ]
    assert [(o.link_label, o.link_type, o.pk) for o in detail.outputs] == [
        ("result", "return", work.outputs.result.pk)
    ]
    child = work.called[0]
    assert (await reads().process_detail(child.pk)).caller == work.pk

    with pytest.raises(ValueError):
        await fail.arun(1)
    failed = all_processes()[0]
    detail = await reads().process_detail(failed.pk)
    assert detail.node.process_state == "excepted"
    assert "Traceback" in detail.node.exception and "<script>alert(1)</script>" in (
        detail.node.exception
    )
    assert detail.checkpoint is None and detail.calcjob is None

    waiting = await asubmit(WaitingProcess, gate=Str("never"))
    detail = await reads().process_detail(waiting.pk)
    assert detail.node.process_state == "created" and detail.inputs[0].link_label == "gate"
    assert detail.checkpoint is not None
    assert detail.checkpoint.kind == "workchain"
    assert detail.checkpoint.class_path == "miniengine.testing.gates:WaitingProcess"
    assert (detail.checkpoint.seq, detail.checkpoint.cursor) == (0, None)

    job = store_calcjob(retrieved={"aiida.out": b"1", "sub/data.txt": b"2"})
    detail = await reads().process_detail(job)
    assert detail.calcjob is not None
    assert (detail.calcjob.job_id, detail.calcjob.stage) == ("42", "retrieving")
    assert detail.calcjob.scheduler_state == "done"
    assert detail.calcjob.remote_workdir == "/scratch/42"
    assert detail.calcjob.retrieved == ["aiida.out", "sub/data.txt"]

    # a running process: who holds its lease, and on which host when a worker does
    store = store_for(None)
    running, _ = store.provenance.begin_process(
        NewProcess(uuid=new_uuid(), node_type="process.workflow.workchain",
                   process_type="tests:Chain", process_label="Chain", process_state="running",
                   label="", description="", inputs=[], input_link_type="input_work",
                   owner=store.owner, lease_expires=time.time() + 60)
    )  # fmt: skip
    owner = (await reads().process_detail(running)).owner
    assert owner is not None and (owner.owner, owner.host) == (store.owner, None)
    store.broker.register_worker(store.owner, 1, 2, time.time(), "host-of-the-worker")
    owner = (await reads().process_detail(running)).owner
    assert owner is not None and owner.host == "host-of-the-worker"

    data = Int(3).store()
    for missing in (data.pk, 10**9, 2**70):
        with pytest.raises(NotExistent):
            await reads().process_detail(missing)


def store_calcjob(retrieved: dict[str, bytes]) -> int:
    """A CalcJob's node as stored, finished with a ``retrieved`` folder (running a real CalcJob
    needs a computer and a code; the page reads only what is stored)."""
    store = store_for(None)
    new = NewProcess(
        uuid=new_uuid(),
        node_type="process.calcjob",
        process_type="tests.test_async_reads_web:SomeJob",
        process_label="SomeJob",
        process_state="running",
        label="",
        description="",
        inputs=[("x", Int(4))],
        input_link_type="input_calc",
        owner=store.owner,
        lease_expires=time.time() + 60,
        attributes={
            "job_id": "42",
            "state": "retrieving",
            "scheduler_state": "done",
            "remote_workdir": "/scratch/42",
        },
    )
    pk, _ = store.provenance.begin_process(new)
    folder = FolderData()
    for path, content in retrieved.items():
        folder.base.repository.put_object_from_bytes(content, path)
    store.provenance.finish_process(
        FinishProcess(pk=pk, owner=store.owner, epoch=1, process_state="finished", exit_status=0,
                      outputs=[("retrieved", folder, "create")], resumable=False)
    )  # fmt: skip
    return pk


def test_checkpoint_step_decodes_a_position_without_importing_the_class() -> None:
    blob = Checkpoint(
        class_path="no_such_module_anywhere:Chain", inputs={}, cursor=(1, 0), step_name="b", seq=3
    ).encode()
    step = checkpoint_step(blob)
    assert step is not None
    assert (step.kind, step.class_path, step.seq, step.cursor, step.step_name) == (
        "workchain",
        "no_such_module_anywhere:Chain",
        3,
        (1, 0),
        "b",
    )
    assert checkpoint_step(b"not a checkpoint") is None


async def test_call_tree_and_reports_are_the_sync_reads() -> None:
    _, work = await add_twice.arun_get_node(1, 2)
    queries, provenance = store_for(None).queries, store_for(None).provenance
    for depth in (None, 0, 1):
        assert await reads().call_tree(work.pk, depth) == queries.subtree(work.pk, depth)
    with pytest.raises(ValueError):
        await fail.arun(1)
    failed = all_processes()[0].pk
    store_for(None).provenance.add_logs(failed, [("REPORT", "<b>one</b>"), ("WARNING", "two")])
    logs = provenance.logs(failed)
    assert len(logs) == 3
    assert await reads().reports(failed) == logs
    assert await reads().reports(failed, after_id=logs[0].pk) == logs[1:]
    assert await reads().reports(failed, after_id=logs[-1].pk) == []
    assert await reads().reports(2**70) == [] and await reads().call_tree(2**70) == []


# -- the daemon ------------------------------------------------------------------------------


async def test_daemon_overview_counts_workers_queue_and_finished_per_minute() -> None:
    store = store_for(None)
    now = time.time()
    store.broker.register_worker("worker:a:1", 1, 4, now, "host-a")
    store.broker.register_worker("worker:b:2", 2, 2, now - 3600, "host-b")  # silent for an hour
    for x in range(3):
        await add.arun(x, 1)
    for name in ("a", "b"):
        await asubmit(WaitingProcess, gate=Str(name))
    overview = await reads().daemon_overview()
    assert [(w.id, w.host, w.pid, w.slots_total, w.slots_used) for w in overview.workers] == [
        ("worker:b:2", "host-b", 2, 2, 0),
        ("worker:a:1", "host-a", 1, 4, 0),
    ]
    assert [w.alive for w in overview.workers] == [False, True]
    assert (overview.queue_depth, overview.running_tasks) == (2, 0)
    assert len(overview.finished_per_minute) == 60
    ended = [r for r in all_processes() if r.process_state in ("finished", "excepted", "killed")]
    expected = [0] * 60
    for row in ended:
        index = int((row.mtime - overview.first_minute) // 60)
        if 0 <= index < 60:
            expected[index] += 1
    assert overview.finished_per_minute == expected and sum(expected) == 3


@pytest.mark.sqlite_only(reason="reads the plans of sqlite's statements on the file itself")
def test_each_filter_of_a_page_and_the_changes_read_walk_an_index(miniengine_db: Path) -> None:
    """No read of the list scans the nodes: a page walks the primary key below ``before_pk``
    (or the index of the active processes, or a group's members), the changes walk the index
    of the active processes and pk ranges."""
    import sqlite3

    from miniengine.storage import query_rows

    store_for(None)  # creates the schema
    connection = sqlite3.connect(miniengine_db)

    def plan(query: str, params: Any) -> list[str]:
        return [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + query, params)]

    now = time.time()
    for states, label, group, since, until in [
        (None, None, None, None, None),
        (["finished", "excepted"], "add", None, now - 86400, now),
        (["running", "waiting"], None, None, None, None),
        (None, None, "chosen", None, None),
    ]:
        query = query_rows.process_page_query(
            query_rows.SQLITE, states, label, group, since, until, 1000, 50
        )
        steps = plan(*query)
        assert not [step for step in steps if step.startswith("SCAN")], (states, group, steps)
    for states in (None, ["finished"]):  # the members of one group, walked down its index
        query = query_rows.process_page_query(
            query_rows.SQLITE, states, None, "chosen", None, None, 1000, 50, group_pk=1
        )
        steps = plan(*query)
        assert "SEARCH gn USING PRIMARY KEY (group_pk=? AND node_pk<?)" in steps, steps
        assert not [step for step in steps if "TEMP B-TREE" in step], steps
    steps = plan(query_rows.changes_query(query_rows.SQLITE), (64, 1, 2000, "[]"))
    assert "SEARCH nodes USING INDEX nodes_active (process_state=?)" in steps, steps
    assert not [step for step in steps if step.startswith("SCAN nodes")], steps
    connection.close()


async def test_linked_nodes_and_extras_are_the_sync_reads() -> None:
    _, work = await add_twice.arun_get_node(1, 2)
    store = store_for(None)
    result = work.outputs.result
    result.base.extras.set_many({"note": "<i>x</i>", "n": [1, 2]})
    for pk in (work.pk, result.pk):
        for incoming in (True, False):
            types = ["input_work", "return", "create", "call_calc", "input_calc"]
            expected = store.queries.linked_nodes(pk, incoming=incoming, link_types=types)
            got = await reads().linked_nodes(pk, incoming=incoming, link_types=types)
            assert got == expected
    assert await reads().extras(result.pk) == {"note": "<i>x</i>", "n": [1, 2]}
    assert await reads().extras(work.pk) == store.groups.extras(work.pk)
    for missing in (10**9, 2**70):
        with pytest.raises(NotExistent):
            await reads().extras(missing)
    assert await reads().linked_nodes(2**70, incoming=True, link_types=["create"]) == []


async def test_process_detail_of_a_real_calcjob_names_its_computer_job_and_files(
    tmp_path: Path,
) -> None:
    from miniengine import InstalledCode, arun_get_node
    from miniengine.runtime.computers import localhost_computer
    from tests.workchains.calcjob_plugins import ArithmeticAddCalculation

    (tmp_path / "work").mkdir()
    computer = localhost_computer(tmp_path / "work")
    code = InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash").store()
    options = {"options": {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}}}
    _, node = await arun_get_node(
        ArithmeticAddCalculation, code=code, x=Int(4), y=Int(5), metadata=options
    )
    detail = await reads().process_detail(node.pk)
    assert detail.calcjob is not None
    assert detail.calcjob.computer_label == "localhost"
    assert detail.calcjob.job_id == node.get_job_id()
    assert detail.calcjob.scheduler_state == node.get_scheduler_state().value == "done"
    assert detail.calcjob.stage == node.get_state().value
    assert detail.calcjob.remote_workdir == node.get_remote_workdir()
    retrieved = node.outputs.retrieved
    assert "aiida.out" in detail.calcjob.retrieved
    assert detail.calcjob.retrieved == sorted(retrieved.list_object_names())
    assert {o.link_label for o in detail.outputs} == {"sum", "remote_folder", "retrieved"}
    assert {i.link_label for i in detail.inputs} >= {"code", "x", "y"}
