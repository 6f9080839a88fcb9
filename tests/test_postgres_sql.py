"""The PostgreSQL SQL (``miniengine.storage.postgres``): the schema and the ports of the sqlite
row functions, on psycopg connections to the tests' private cluster.

The schema is created once however many processes create it at once, later migration steps
apply in order, and a newer or foreign schema is refused untouched.  The broker's claims never
hand one task to two connections, and a stale lease epoch is fenced off.  A scripted lifecycle
run through the sqlite functions and through their ports gives the same answers.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

from miniengine import Int  # noqa: E402
from miniengine.exceptions import IncompatibleDatabaseError, LeaseLostError  # noqa: E402
from miniengine.storage import (  # noqa: E402
    broker_rows,
    calcjob_rows,
    checkpoint_rows,
    computer_rows,
    control_rows,
    query_rows,
    repair_rows,
    rows,
)
from miniengine.storage import schema as sqlite_schema  # noqa: E402
from miniengine.storage.interfaces.calcjobs import CalcJobCommit  # noqa: E402
from miniengine.storage.interfaces.checkpoints import StepCommit  # noqa: E402
from miniengine.storage.interfaces.provenance import FinishProcess, NewProcess  # noqa: E402
from miniengine.storage.postgres import broker_rows as pg_broker  # noqa: E402
from miniengine.storage.postgres import calcjob_rows as pg_calcjob  # noqa: E402
from miniengine.storage.postgres import checkpoint_rows as pg_checkpoint  # noqa: E402
from miniengine.storage.postgres import computer_rows as pg_computer  # noqa: E402
from miniengine.storage.postgres import control_rows as pg_control  # noqa: E402
from miniengine.storage.postgres import event_rows as pg_events  # noqa: E402
from miniengine.storage.postgres import query_rows as pg_query  # noqa: E402
from miniengine.storage.postgres import repair_rows as pg_repair  # noqa: E402
from miniengine.storage.postgres import rows as pg_rows  # noqa: E402
from miniengine.storage.postgres import schema  # noqa: E402


def _connect(url: str) -> Any:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Any]:
    """An autocommit connection to a fresh database with the schema created."""
    with _connect(postgres_url) as connection:
        schema.ensure_schema(connection, "test")
        yield connection


def _tables(connection: Any) -> set[str]:
    return {
        row[0]
        for row in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    }


def _version(connection: Any) -> int | None:
    with connection.transaction():
        return schema.read_schema_version(connection)


# the schema ------------------------------------------------------------------------------------


def test_schema_is_created_once_and_then_left_alone(postgres_url: str) -> None:
    with _connect(postgres_url) as connection:
        assert _version(connection) is None
        schema.ensure_schema(connection, "test")
        assert _version(connection) == schema.SCHEMA_VERSION == sqlite_schema.SCHEMA_VERSION
        assert _tables(connection) == {*schema.TABLES, "miniengine_meta"}
        schema.ensure_schema(connection, "test")  # nothing to do: no error, no change
        assert _version(connection) == schema.SCHEMA_VERSION


_CREATOR = """
import sys, time
import psycopg
from miniengine.storage.postgres import schema
url, start = sys.argv[1], float(sys.argv[2])
with psycopg.connect(url, autocommit=True) as connection:
    connection.execute("SELECT 1")
    time.sleep(max(start - time.time(), 0))
    schema.ensure_schema(connection, "test")
print("created")
"""


def test_processes_creating_the_schema_at_once_all_succeed(postgres_url: str) -> None:
    start = time.time() + 2.0  # every process connected and waiting by then
    creators = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATOR, postgres_url, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [creator.communicate(timeout=120) for creator in creators]
    for creator, (out, err) in zip(creators, results, strict=True):
        assert creator.returncode == 0, err
        assert out.strip() == "created"
    with _connect(postgres_url) as connection:
        assert _version(connection) == schema.SCHEMA_VERSION
        assert _tables(connection) == {*schema.TABLES, "miniengine_meta"}


def test_a_newer_schema_is_refused_untouched(postgres_url: str) -> None:
    newer = schema.SCHEMA_VERSION + 1
    with _connect(postgres_url) as connection:
        connection.execute("CREATE TABLE miniengine_meta (key text PRIMARY KEY, value text)")
        connection.execute(
            "INSERT INTO miniengine_meta VALUES ('schema_version', %s)", (str(newer),)
        )
        with pytest.raises(IncompatibleDatabaseError) as refused:
            schema.ensure_schema(connection, "postgresql://host/db")
        assert str(refused.value) == (
            f"postgresql://host/db was written by a newer miniengine (schema version {newer}, "
            f"this version understands up to {schema.SCHEMA_VERSION}); upgrade miniengine to "
            "open it"
        )
        assert _tables(connection) == {"miniengine_meta"}
        assert _version(connection) == newer


def test_tables_of_another_program_are_refused_untouched(postgres_url: str) -> None:
    with _connect(postgres_url) as connection:
        connection.execute("CREATE TABLE nodes (id integer)")
        with pytest.raises(IncompatibleDatabaseError, match=r"another program's .* untouched"):
            schema.ensure_schema(connection, "test")
        assert _tables(connection) == {"nodes"}


def test_later_migration_steps_apply_in_order(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _connect(postgres_url) as connection:
        schema.ensure_schema(connection, "test")
        steps = [
            *schema.MIGRATIONS,
            schema.Migration(7, 8, "CREATE TABLE step_8 (a integer);"),
            schema.Migration(8, 9, "ALTER TABLE step_8 ADD COLUMN b integer;"),
        ]
        monkeypatch.setattr(schema, "MIGRATIONS", steps)
        monkeypatch.setattr(schema, "SCHEMA_VERSION", 9)
        schema.ensure_schema(connection, "test")
        assert _version(connection) == 9
        columns = connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'step_8' "
            "ORDER BY ordinal_position"
        ).fetchall()
        assert columns == [("a",), ("b",)]


# the broker and the fence ----------------------------------------------------------------------


def _new_process(owner: str | None = None, expires: float | None = None, **more: Any) -> NewProcess:
    fields: dict[str, Any] = {"inputs": [], **more}
    return NewProcess(
        uuid=str(__import__("uuid").uuid4()),
        node_type="process.workflow.workchain",
        process_type="tests:Chain",
        process_label="Chain",
        process_state="created",
        label="",
        description="",
        input_link_type="input_work",
        owner=owner,
        lease_expires=expires,
        **fields,
    )


def _enqueue_processes(connection: Any, count: int) -> list[int]:
    now = time.time()
    with connection.transaction():
        pks = [pg_rows.begin_process_tx(connection, _new_process())[0] for _ in range(count)]
        for pk in pks:
            assert pg_broker.enqueue(connection, pk, f"start:{pk}", now)
            assert not pg_broker.enqueue(connection, pk, f"start:{pk}", now)  # deduplicated
    return pks


def test_two_connections_claiming_at_once_never_share_a_task(pg: Any, postgres_url: str) -> None:
    _enqueue_processes(pg, 6)
    now = time.time()
    with _connect(postgres_url) as other:
        with pg.transaction(), other.transaction():
            first = pg_broker.claim_tasks_tx(pg, "w1", 3, now + 60, now)
            # the first claim has not committed: its rows are skipped, not waited for
            second = pg_broker.claim_tasks_tx(other, "w2", 10, now + 60, now)
        # (a deduplicated enqueue uses up an identity value: task pks have gaps, unlike sqlite's)
        tasks = [row[0] for row in pg.execute("SELECT pk FROM tasks ORDER BY pk")]
        assert [claim.task_pk for claim in first] == tasks[:3]  # oldest first
        assert [claim.task_pk for claim in second] == tasks[3:]
        assert {claim.attempts for claim in first + second} == {1}


def test_claiming_workers_take_every_task_exactly_once(pg: Any, postgres_url: str) -> None:
    tasks = _enqueue_processes(pg, 60)
    claimed: dict[str, list[int]] = {}

    def work(name: str) -> None:
        mine = claimed.setdefault(name, [])
        with _connect(postgres_url) as connection:
            while True:
                now = time.time()
                with connection.transaction():
                    got = pg_checkpoint.claim_work_tx(connection, name, 2, now + 60, now)
                if not got:
                    return
                mine.extend(claim.process_pk for claim in got)
                assert all(claim.epoch == 1 for claim in got)

    threads = [threading.Thread(target=work, args=(f"w{index}",)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    everything = [pk for pks in claimed.values() for pk in pks]
    assert sorted(everything) == tasks


def test_a_stale_epoch_is_fenced_off(pg: Any) -> None:
    with pg.transaction():
        pk, _ = pg_rows.begin_process_tx(pg, _new_process("old", time.time() - 1))
    with pg.transaction():  # the old owner's lease expired: another takes it over
        assert pg_checkpoint.claim_process_tx(pg, pk, "new", time.time() + 60, "running") == 2
    commit = StepCommit(pk, "old", 1, "running", "stale step", 1, b"stale", logs=[("REPORT", "x")])
    with pytest.raises(LeaseLostError, match="no longer owned by old at epoch 1"), pg.transaction():
        pg_checkpoint.step_commit_tx(pg, commit)
    finish = FinishProcess(
        pk, "old", 1, "finished", exit_status=0, outputs=[("r", Int(1), "return")]
    )
    with pytest.raises(LeaseLostError, match=r"owner now new, epoch 2"), pg.transaction():
        pg_rows.finish_process_tx(pg, finish)
    child = _new_process(parent=(pk, "old", 1), call_link_type="call_calc")
    with pytest.raises(LeaseLostError, match="no longer owned"), pg.transaction():
        pg_rows.begin_process_tx(pg, child)
    row = pg_rows.read_node_row(pg, pk)
    assert (row.owner, row.lease_epoch, row.process_state, row.process_status) == (
        "new",
        2,
        "running",
        None,
    )
    assert pg_checkpoint.read_checkpoint(pg, pk) is None
    assert pg_rows.read_logs(pg, pk) == []
    assert pg.execute("SELECT count(*) FROM nodes").fetchone() == (1,)  # no output stored
    with pg.transaction():  # the new owner's writes go through
        assert pg_checkpoint.step_commit_tx(
            pg, StepCommit(pk, "new", 2, "running", None, 1, b"fresh")
        ) == ([], False)


def test_a_child_ending_while_its_parent_starts_waiting_still_wakes_it(
    pg: Any, postgres_url: str
) -> None:
    """On sqlite the two commits are serialised; here the parent's commit locks the rows of
    the children it counts, so a child's terminal write waits for it and then finds the parent
    waiting (were the child not held, each would miss the other and the parent never wake)."""
    now = time.time()
    with pg.transaction():
        parent, _ = pg_rows.begin_process_tx(pg, _new_process("w1", now + 60, submitted=True))
        child, _ = pg_rows.begin_process_tx(pg, _new_process("w2", now + 60, submitted=True))
    finished = threading.Event()

    def finish_child() -> None:
        with _connect(postgres_url) as other, other.transaction():
            pg_rows.finish_process_tx(other, FinishProcess(child, "w2", 1, "finished"))
        finished.set()

    ender = threading.Thread(target=finish_child)
    with pg.transaction():
        step = StepCommit(parent, "w1", 1, "waiting", None, 3, b"cp", wait_for=[child])
        pg_checkpoint.step_commit_tx(pg, step)
        ender.start()
        assert not finished.wait(0.5)  # the child's write waits for the parent's commit
    ender.join(timeout=60)
    assert finished.is_set()
    tasks = pg.execute("SELECT process_pk, dedup_key, status FROM tasks").fetchall()
    assert tasks == [(parent, f"wake:{parent}:3", "ready")]
    assert pg.execute("SELECT count(*) FROM waits").fetchone() == (0,)


def test_a_job_seen_done_while_its_process_is_evicted_still_wakes_it(
    pg: Any, postgres_url: str
) -> None:
    """The watcher's ``job_done_tx`` locks the node before it decides whether the process is
    held; the stage commit that evicts it holds that row, so one of the two enqueues."""
    now = time.time()
    with pg.transaction():
        pk, _ = pg_rows.begin_process_tx(pg, _new_process("w1", now + 60, submitted=True))
        pg.execute(
            "INSERT INTO calcjob_jobs (process_pk, computer_uuid, job_id, owner, "
            "lease_expires, created) VALUES (%s, 'c', '7', 'watcher', %s, %s)",
            (pk, now + 60, now),
        )
    seen = threading.Event()

    def job_done() -> None:
        with _connect(postgres_url) as other, other.transaction():
            assert pg_calcjob.job_done_tx(other, pk, "7", "watcher", "done", None)
        seen.set()

    watcher = threading.Thread(target=job_done)
    with pg.transaction():
        stage = CalcJobCommit(pk, "w1", 1, "waiting", "with the scheduler", 2, b"cp", evict=True)
        pg_calcjob.calcjob_commit_tx(pg, stage)
        watcher.start()
        assert not seen.wait(0.5)
    watcher.join(timeout=60)
    assert seen.is_set()
    tasks = pg.execute("SELECT dedup_key FROM tasks").fetchall()
    assert tasks == [(f"job:{pk}:7",)]


def test_a_state_change_reaches_a_subscriber_as_an_event(pg: Any) -> None:
    with pg.transaction():
        pk, _ = pg_rows.begin_process_tx(pg, _new_process("me", time.time() + 60))
    with pg.transaction():
        watcher = pg_events.add_watcher_tx(pg, time.time() + 60)
    with pg.transaction():
        pg_rows.finish_process_tx(pg, FinishProcess(pk, "me", 1, "finished", exit_status=0))
        pg_rows.begin_process_tx(pg, _new_process())
    changes = pg_events.read_events(pg, watcher.last_event)
    assert [(c.pk, c.from_state, c.to_state) for c in changes] == [
        (pk, "created", "finished"),
        (pk + 1, None, "created"),
    ]
    with pg.transaction():
        pg_events.remove_watcher_tx(pg, watcher.id)
        pg_rows.begin_process_tx(pg, _new_process())  # nobody listens: no event
    assert pg_events.read_events(pg, changes[-1].id) == []


# the same lifecycle through both ---------------------------------------------------------------


class _Sqlite:
    """The sqlite functions on an in-memory database of the current schema."""

    def __init__(self) -> None:
        self.connection = sqlite3.connect(":memory:", isolation_level=None)
        for step in range(sqlite_schema.SCHEMA_VERSION):
            for statement in sqlite_schema.split_statements(sqlite_schema.MIGRATIONS[step]):
                self.connection.execute(statement)
        self.connection.execute(f"PRAGMA user_version = {sqlite_schema.SCHEMA_VERSION}")
        self.rows, self.broker, self.checkpoint = rows, broker_rows, checkpoint_rows
        self.control, self.calcjob, self.computer = control_rows, calcjob_rows, computer_rows
        self.repair, self.query = repair_rows, query_rows

    @contextmanager
    def tx(self) -> Iterator[Any]:
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")


class _Postgres:
    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.rows, self.broker, self.checkpoint = pg_rows, pg_broker, pg_checkpoint
        self.control, self.calcjob, self.computer = pg_control, pg_calcjob, pg_computer
        self.repair, self.query = pg_repair, pg_query

    @contextmanager
    def tx(self) -> Iterator[Any]:
        with self.connection.transaction():
            yield self.connection


def _lifecycle(db: Any) -> list[Any]:
    """A WorkChain that submits two children, waits for them, is woken, paused, played and
    killed, a CalcJob's stages and its job, computers, and a repair: every answer, in order."""
    answers: list[Any] = []
    say: Callable[[Any], None] = answers.append
    rows_m: ModuleType = db.rows
    now = time.time()
    with db.tx() as c:
        parent, inputs = rows_m.begin_process_tx(
            c, _new_process("w1", now + 60, submitted=True, inputs=[("x", Int(2))])
        )
        say((parent, inputs))
    with db.tx() as c:
        say(db.computer.insert_computer_tx(c, "c0ffee00-0000-7000-8000-000000000001", "local",
                                           "localhost", "", "core.local", "core.direct", {"a": 1},
                                           None)[0])  # fmt: skip
    with db.tx() as c:
        children = [
            db.checkpoint.begin_memoised_tx(
                c,
                _new_process(parent=(parent, "w1", 1), call_link_type="call_work"),
                (parent, 1, index, "f"),
            )
            for index in range(2)
        ]
        say(children)
    kids = [child.pk for child in children]
    with db.tx() as c:
        say(
            db.checkpoint.step_commit_tx(
                c,
                StepCommit(
                    parent,
                    "w1",
                    1,
                    "waiting",
                    "waiting for children",
                    1,
                    b"cp1",
                    outputs=[("out", Int(5))],
                    logs=[("REPORT", "step 1", 1.0)],
                    start_children=kids,
                    wait_for=kids,
                ),
            )
        )
    say(db.checkpoint.read_checkpoint(db.connection, parent))
    with db.tx() as c:
        claims = db.checkpoint.claim_work_tx(c, "w2", 5, now + 60, now)
        say([(claim.process_pk, claim.epoch, claim.alone) for claim in claims])
    for claim in claims:
        with db.tx() as c:
            say(db.rows.finish_process_tx(
                c, FinishProcess(claim.process_pk, "w2", claim.epoch, "finished", exit_status=0,
                                 outputs=[("result", Int(claim.process_pk), "return")],
                                 task_pk=claim.task_pk)))  # fmt: skip
    with db.tx() as c:
        say(db.broker.queue_depth(c))
        wake = db.checkpoint.claim_work_tx(c, "w3", 5, now + 60, now)
        say([(claim.process_pk, claim.epoch) for claim in wake])
    with db.tx() as c:
        say(db.control.pause_tx(c, parent))
        say(db.control.pending_controls(c, "w3"))
    with db.tx() as c:
        say(db.checkpoint.release_process_tx(c, parent, "w3", 2, wake[0].task_pk))
        say(db.control.play_tx(c, parent))
    with db.tx() as c:
        say(db.control.kill_tx(c, parent, None))
    node = db.rows.read_node_row(db.connection, parent)
    say(node[2:13] + node[14:16])  # all but the uuid and the times
    say(db.rows.read_links(db.connection, parent, False))
    say([log[3:] for log in db.rows.read_logs(db.connection, parent)])
    say(db.rows.read_process_rows(db.connection, ["killed", "finished"], None, 2)[0].pk)
    say(len(db.rows.uuid_matches(db.connection, "c0ffee")))
    # a CalcJob: a job recorded with eviction, seen done by a watcher, woken, finished
    with db.tx() as c:
        job_pk, _ = db.rows.begin_process_tx(c, _new_process("w1", now + 60, submitted=True))
        stage = CalcJobCommit(
            job_pk, "w1", 1, "waiting", "submitted", 2, b"job",
            attributes={"state": "withscheduler", "job_id": "42"},
            job=("c0ffee00-0000-7000-8000-000000000001", "42"), evict=True,
        )  # fmt: skip
        say(db.calcjob.calcjob_commit_tx(c, stage))
    with db.tx() as c:
        say(db.calcjob.claim_jobs_tx(c, "watcher", now + 60, now))
        say(db.calcjob.read_watched_jobs(c, "watcher"))
        say(db.calcjob.job_done_tx(c, job_pk, "42", "watcher", "done", {"exit": 0}))
        say(db.calcjob.read_job(c, job_pk))
        say(db.broker.queue_depth(c))
    say(db.calcjob.active_stages(db.connection, [job_pk, parent]))
    say(db.computer.read_computer(db.connection, "c0ffee").label)
    with db.tx() as c:
        say(db.repair.repair_tx(c, dry_run=True))
    # the operator's reads
    c = db.connection
    say([row[:1] + row[3:] for row in db.query.list_processes(c, None, None, None)])
    say([row.pk for row in db.query.list_processes(c, ["killed", "waiting"], now - 60, 1)])
    say(db.query.node(c, 10**30))
    say(db.query.linked_nodes(c, parent, incoming=False, link_types=["call_work", "return"]))
    say(db.query.log_count(c, parent))
    say(db.query.subtree(c, parent, None))
    say(db.query.subtree(c, parent, 0))
    say([line[1:] for line in db.query.subtree_logs(c, parent, None)])
    say(db.query.count_nodes(c))
    say(db.query.schema_version(c))
    say(db.query.integrity_check(c))
    return answers


def test_the_ports_answer_as_the_sqlite_functions_do(pg: Any) -> None:
    on_sqlite = _lifecycle(_Sqlite())
    on_postgres = _lifecycle(_Postgres(pg))
    assert on_postgres == on_sqlite
