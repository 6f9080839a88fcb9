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
    repository_rows,
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
from miniengine.storage.postgres import repository_rows as pg_repository  # noqa: E402
from miniengine.storage.postgres import rows as pg_rows  # noqa: E402
from miniengine.storage.postgres import schema  # noqa: E402
from miniengine.storage.postgres.read import OneQuery  # noqa: E402


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


#: Pure Python helpers of the sqlite modules that the ports import rather than copy.
_SHARED = {"end_values", "log_rows", "fingerprint"}


@pytest.mark.parametrize(
    "module",
    ["rows", "broker_rows", "checkpoint_rows", "control_rows", "calcjob_rows", "computer_rows",
     "repair_rows", "repository_rows", "query_rows"],
)  # fmt: skip
def test_every_sqlite_row_function_has_a_port_with_its_parameters(module: str) -> None:
    import importlib
    import inspect

    sqlite_module = importlib.import_module(f"miniengine.storage.{module}")
    port = importlib.import_module(f"miniengine.storage.postgres.{module}")
    for name, function in vars(sqlite_module).items():
        if name.startswith("_") or name in _SHARED or not inspect.isfunction(function):
            continue
        if function.__module__ != sqlite_module.__name__:
            continue
        ported = getattr(port, name, None)
        assert ported is not None, f"{module}.{name} has no PostgreSQL port"
        theirs = list(inspect.signature(function).parameters.values())
        if isinstance(ported, OneQuery):
            # one statement: its placeholders take the arguments in order, or ``params`` does
            wanted = [p.name for p in theirs[1:]]
            if ported.params is not None:
                assert list(inspect.signature(ported.params).parameters) == wanted, name
            else:
                assert ported.sql.count("%s") == len(wanted), name
            continue
        ours = list(inspect.signature(ported).parameters.values())
        # the first parameter is the connection (where there is one), of another type
        assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in theirs], name


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


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
def test_processes_creating_the_schema_at_once_all_succeed(
    postgres_url: str, isolation: str
) -> None:
    with _connect(postgres_url) as connection:  # the server's default for new sessions
        name = connection.info.dbname
        connection.execute(
            f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = '{isolation}'"
        )
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
        now = schema.SCHEMA_VERSION
        steps = [
            *schema.MIGRATIONS,
            schema.Migration(now, now + 1, "CREATE TABLE next_step (a integer);"),
            schema.Migration(now + 1, now + 2, "ALTER TABLE next_step ADD COLUMN b integer;"),
        ]
        monkeypatch.setattr(schema, "MIGRATIONS", steps)
        monkeypatch.setattr(schema, "SCHEMA_VERSION", now + 2)
        schema.ensure_schema(connection, "test")
        assert _version(connection) == now + 2
        columns = connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'next_step' "
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


def _retrying(connection: Any, function: Callable[..., Any], *args: Any) -> Any:
    """One transaction, run again when PostgreSQL picks it as a deadlock victim (as the
    store's writer does)."""
    while True:
        try:
            with connection.transaction():
                return function(connection, *args)
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            continue


def test_workers_on_several_connections_run_fan_outs_to_the_end(pg: Any, postgres_url: str) -> None:
    """Parents start their children and wait for them, the children end, the parents are
    woken and end, all claimed by workers racing on connections of their own: every process
    ends once, every wake-up arrives, and no task is left behind."""
    parents, fan_out = 6, 5
    now = time.time()
    children: dict[int, list[int]] = {}
    with pg.transaction():
        for _ in range(parents):
            parent, _ = pg_rows.begin_process_tx(pg, _new_process(submitted=True))
            children[parent] = [
                pg_rows.begin_process_tx(
                    pg, _new_process(parent=None, submitted=True, call_link_type="call_work")
                )[0]
                for _ in range(fan_out)
            ]
            pg_broker.enqueue(pg, parent, f"start:{parent}", now)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            with _connect(postgres_url) as connection:
                deadline = time.time() + 60
                while time.time() < deadline:
                    now = time.time()
                    claims = _retrying(
                        connection, pg_checkpoint.claim_work_tx, name, 3, now + 60, now
                    )
                    if not claims:
                        done = connection.execute(
                            "SELECT count(*) FROM nodes WHERE process_state = 'finished'"
                        ).fetchone()[0]
                        if done == parents * (fan_out + 1):
                            return
                        time.sleep(0.01)
                        continue
                    for claim in claims:
                        assert claim.epoch not in (None, -1), claim
                        pk = claim.process_pk
                        started = pg_checkpoint.read_checkpoint(connection, pk) is not None
                        if pk in children and not started:
                            kids = children[pk]
                            step = StepCommit(pk, name, claim.epoch, "waiting", None, 1, b"cp",
                                              start_children=kids, wait_for=kids,
                                              task_pk=claim.task_pk)  # fmt: skip
                            _retrying(connection, pg_checkpoint.step_commit_tx, step)
                        else:
                            end = FinishProcess(pk, name, claim.epoch, "finished", exit_status=0,
                                                task_pk=claim.task_pk)  # fmt: skip
                            _retrying(connection, pg_rows.finish_process_tx, end)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(f"w{index}",)) for index in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert errors == []
    states = pg.execute("SELECT process_state, count(*) FROM nodes GROUP BY 1").fetchall()
    assert states == [("finished", parents * (fan_out + 1))]
    assert pg.execute("SELECT count(*) FROM tasks WHERE status <> 'done'").fetchone() == (0,)
    wakes = pg.execute("SELECT count(*) FROM tasks WHERE dedup_key LIKE 'wake:%%'").fetchone()
    assert wakes == (parents,)
    assert pg.execute("SELECT count(*) FROM waits").fetchone() == (0,)
    assert pg.execute("SELECT count(*) FROM awaited").fetchone() == (0,)


def test_watchers_and_recoverers_at_once_split_the_work(pg: Any, postgres_url: str) -> None:
    """Two job watchers claim unwatched jobs at once, and two recoverers repair expired leases
    at once: each row goes to one of them, and neither waits for the other."""
    now = time.time()
    with pg.transaction():
        jobs = [pg_rows.begin_process_tx(pg, _new_process())[0] for _ in range(4)]
        for pk in jobs:
            pg.execute(
                "INSERT INTO calcjob_jobs (process_pk, computer_uuid, job_id, created) "
                "VALUES (%s, 'c', %s, %s)",
                (pk, str(pk), now),
            )
        # run-mode and submitted processes whose owner died
        expired = [_new_process("dead", now - 1, submitted=index % 2 == 0) for index in range(6)]
        dead = [pg_rows.begin_process_tx(pg, new)[0] for new in expired]
    with _connect(postgres_url) as other:
        with pg.transaction(), other.transaction():
            mine = pg_calcjob.claim_jobs_tx(pg, "one", now + 60, now)
            theirs = pg_calcjob.claim_jobs_tx(other, "two", now + 60, now)
        assert (mine, theirs) == (4, 0)  # all taken by the first; the second skipped, not waited
        with pg.transaction(), other.transaction():
            first = pg_broker.recover_expired_tx(pg, now)
            second = pg_broker.recover_expired_tx(other, now)
    assert (first.recovered + second.recovered, first.excepted + second.excepted) == (3, 3)
    assert second == (0, 0, 0)  # the rows the first one holds are skipped
    states = pg.execute(
        "SELECT process_state, count(*) FROM nodes WHERE pk = ANY(%s) GROUP BY 1 ORDER BY 1",
        (dead,),
    ).fetchall()
    assert states == [("created", 3), ("excepted", 3)]
    recover = pg.execute("SELECT count(*) FROM tasks WHERE dedup_key LIKE 'recover:%%'")
    assert recover.fetchone() == (3,)


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


@pytest.mark.parametrize("output", [None, "new", "stored"])
def test_a_child_ending_while_its_parent_starts_waiting_still_wakes_it(
    pg: Any, postgres_url: str, output: str | None
) -> None:
    """On sqlite the two commits are serialised; here the parent's commit locks the rows of
    the children it counts, so a child's terminal write waits for it and then finds the parent
    waiting (were the child not held, each would miss the other and the parent never wake).
    Whatever the child returns: its end is then one statement, and the parents' counts must
    be read by a later one, which sees the parent's commit."""
    now = time.time()
    with pg.transaction():
        parent, _ = pg_rows.begin_process_tx(pg, _new_process("w1", now + 60, submitted=True))
        child, _ = pg_rows.begin_process_tx(pg, _new_process("w2", now + 60, submitted=True))
    value = Int(7)
    if output == "stored":
        with pg.transaction():
            value._set_stored(pg_rows.store_data_tx(pg, value), value.uuid)
    outputs = [] if output is None else [("result", value, "return")]
    finished = threading.Event()

    def finish_child() -> None:
        with _connect(postgres_url) as other, other.transaction():
            ending = FinishProcess(
                child, "w2", 1, "finished", outputs=outputs, log=("INFO", "done")
            )
            pg_rows.finish_process_tx(other, ending)
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


def test_batches_beyond_one_statement_keep_their_order(pg: Any) -> None:
    """Rows go in multi-row INSERTs of at most a thousand (a statement takes at most 65,535
    parameters), in the order given."""
    values = [(f"in{index}", Int(index)) for index in range(2500)]
    with pg.transaction():
        pk, inputs = pg_rows.begin_process_tx(pg, _new_process(inputs=values))
        pg_rows.add_logs_tx(pg, pk, [("REPORT", f"line {index}") for index in range(2500)])
    assert inputs == sorted(inputs) and len(set(inputs)) == 2500
    links = pg_rows.read_links(pg, pk, incoming=True)
    assert [(link.pk, link.label) for link in links] == [
        (input_pk, label) for input_pk, (label, _) in zip(inputs, values, strict=True)
    ]
    assert [log.message for log in pg_rows.read_logs(pg, pk)] == [
        f"line {index}" for index in range(2500)
    ]


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


def test_event_ids_follow_the_commit_order(pg: Any, postgres_url: str) -> None:
    """A subscriber reads the events after the last id it saw, so an id handed out before a
    later commit must not become visible after it: event writers take turns until they
    commit."""
    now = time.time()
    with pg.transaction():
        first, _ = pg_rows.begin_process_tx(pg, _new_process("a", now + 60))
        second, _ = pg_rows.begin_process_tx(pg, _new_process("b", now + 60))
        watcher = pg_events.add_watcher_tx(pg, now + 60)
    written = threading.Event()

    def change_second() -> None:
        with _connect(postgres_url) as other, other.transaction():
            pg_rows.finish_process_tx(other, FinishProcess(second, "b", 1, "finished"))
        written.set()

    writer = threading.Thread(target=change_second)
    with pg.transaction():
        pg_rows.finish_process_tx(pg, FinishProcess(first, "a", 1, "finished"))
        writer.start()
        assert not written.wait(0.5)  # waits for this transaction's events to commit
    writer.join(timeout=60)
    changes = pg_events.read_events(pg, watcher.last_event)
    assert [change.pk for change in changes] == [first, second]
    assert changes[0].id < changes[1].id


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
        self.repository = repository_rows

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
        self.repository = pg_repository

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
    with db.tx() as c:  # a replayed step finds the child it created (the lease and memo read)
        say(db.checkpoint.begin_memoised_tx(
            c, _new_process(parent=(parent, "w1", 1), call_link_type="call_work"),
            (parent, 1, 0, "f")))  # fmt: skip
    with pytest.raises(LeaseLostError, match="no longer owned by w2 at epoch 1"), db.tx() as c:
        db.checkpoint.begin_memoised_tx(
            c, _new_process(parent=(parent, "w2", 1), call_link_type="call_work"),
            (parent, 1, 0, "f"))  # fmt: skip
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
        say(db.checkpoint.is_paused(c, parent))
        say(db.control.pause_tx(c, parent))
        say(db.control.pending_controls(c, "w3"))
        say(db.checkpoint.is_paused(c, parent))
    with db.tx() as c:
        say(db.checkpoint.release_process_tx(c, parent, "w3", 2, wake[0].task_pk))
        say(db.control.play_tx(c, parent))
        say(db.checkpoint.is_paused(c, parent))
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


def _attempt(db: Any, function: Callable[..., Any], *args: Any) -> Any:
    """``function(connection, *args)`` in a transaction of its own: its answer, or the type
    and message of what it raised (the transaction rolled back)."""
    try:
        with db.tx() as c:
            return function(c, *args)
    except Exception as exc:
        if isinstance(exc, (sqlite3.IntegrityError, psycopg.errors.UniqueViolation)):
            return "the database's own unique violation"
        # (without what differs between the two runs: a lease's end, the current owner)
        return (type(exc).__name__, str(exc).split(" (owner now")[0].split(" until ")[0])


def _recovery_and_the_rest(db: Any) -> list[Any]:
    """Leases lost and recovered, tasks given back and given up, workers, the refusals (by
    exception and message), computers and codes, CalcJob stages and the watcher's work."""
    answers: list[Any] = []
    say: Callable[[Any], None] = answers.append
    now = time.time()
    past = now - 100
    key = "ab" * 32
    with db.tx() as c:
        run_mode, _ = db.rows.begin_process_tx(c, _new_process("dead", past))
        submitted, _ = db.rows.begin_process_tx(c, _new_process("dead", past, submitted=True))
        inline, _ = db.rows.begin_process_tx(
            c, _new_process(parent=(run_mode, "dead", 1), call_link_type="call_calc")
        )
        say(db.rows.store_data_tx(c, Int(7)))
        db.rows.add_log_tx(c, run_mode, "REPORT", "one")
        db.rows.add_logs_tx(c, run_mode, [("WARNING", "two"), ("ERROR", "three", 5.0)])
        db.rows.update_label_tx(c, run_mode, "label", "description")
        db.checkpoint.write_checkpoint(c, submitted, 1, b"\xd9\x40" + key.encode())
        say(db.broker.enqueue(c, inline, "start:x", now, now + 1000))
        say(db.broker.has_ready_task(c, now))
        db.broker.register_worker_tx(c, "w9", 99, 4, now)
        db.broker.renew_worker(c, "w9", 2, now + 60, now)
    say(db.repository.read_referenced_object_keys(db.connection) == {key})
    say(sorted(db.broker.worker_heartbeats(db.connection)))
    say([row[:4] for row in db.broker.read_workers(db.connection)])
    say(_attempt(db, db.broker.recover_expired_tx, now))
    say([db.control.process_state(db.connection, pk) for pk in (run_mode, submitted, inline)])
    say(_attempt(db, db.control.process_state, 10**6))
    say(_attempt(db, db.control.pause_tx, 10**6))
    say(_attempt(db, db.checkpoint.claim_process_tx, run_mode, "w9", now + 60, "running"))
    say(_attempt(db, db.checkpoint.claim_process_tx, 10**6, "w9", now + 60, "running"))
    # the recovered submitted process: claimed, held by a live owner, handed back, claimed again
    say(_attempt(db, db.checkpoint.claim_work_tx, "w9", 10, now + 60, now))
    say(_attempt(db, db.checkpoint.claim_process_tx, submitted, "w8", now + 60, "running"))
    say(_attempt(db, db.control.pause_unloadable_tx, submitted, "w9", 1, "no module", None))
    say(_attempt(db, db.control.pause_unloadable_tx, submitted, "w9", 3, "no module", None))
    say(db.control.control_request(db.connection, submitted))
    say(_attempt(db, db.control.play_tx, submitted))
    say(_attempt(db, db.control.revive_tx, submitted, 1.0))
    say(db.broker.queue_depth(db.connection))
    say(_attempt(db, db.broker.release_owner_tx, "w9"))
    with db.tx() as c:
        claimed = db.broker.claim_tasks_tx(c, "w7", 10, now + 60, now)
        say(claimed)
        say(db.broker.runs_alone(c, claimed[0].task_pk, "w7"))
        db.broker.give_back_tx(c, claimed[0].task_pk, submitted, "w7", 0.0)
    # a task whose workers kept dying: suspect, run alone, then given up
    with db.tx() as c:
        c.execute("UPDATE tasks SET attempts = 20, status = 'ready', worker = NULL")
    say(_attempt(db, db.checkpoint.claim_work_tx, "w6", 10, now + 60, now, True, 20))
    say([db.control.process_state(db.connection, pk) for pk in (run_mode, submitted, inline)])
    # a WorkChain created with its checkpoint, killed before it ran; another excepted
    made = []
    for enqueue in (True, False):
        new = _new_process()
        made.append(_attempt(db, db.checkpoint.create_workchain_tx, new, "m:C", {}, enqueue))
    say(made)
    say(_attempt(db, db.checkpoint.kill_unstarted_tx, made[0].pk, "killed early"))
    say(_attempt(db, db.checkpoint.except_unless_owned_tx, made[1].pk, "me", "broken"))
    say(_attempt(db, db.checkpoint.take_pause_request_tx, made[1].pk))
    say(_attempt(db, db.checkpoint.end_calls_not_replayed_tx, run_mode, 0))
    say(list(db.rows.read_node_rows(db.connection, [made[0].pk, 10**6])))
    say([row.message for row in db.rows.read_logs(db.connection, run_mode)])
    say(db.rows.read_node_row(db.connection, run_mode)[11:13])
    say(_attempt(db, db.rows.read_node_row, "zz"))
    say(_attempt(db, db.rows.read_node_row, 10**30))
    # computers and codes
    uuid = "0badc0de-0000-7000-8000-000000000002"
    say(_attempt(db, db.computer.insert_computer_tx, uuid, "far", "far.example", "", "core.ssh",
                 "core.slurm", {}, {"user": "me"})[0])  # fmt: skip
    say(_attempt(db, db.computer.insert_computer_tx, uuid[:-1] + "3", "far", "h", "", "t", "s",
                 {}, None))  # fmt: skip
    say(_attempt(db, db.computer.update_computer_tx, 1, {"hostname": "near", "metadata": {"x": 1}}))
    say(_attempt(db, db.computer.update_computer_tx, 1, {"nope": 1}))
    say(_attempt(db, db.computer.update_computer_tx, 99, {"hostname": "x"}))
    say(db.computer.read_computers(db.connection)[0].metadata)
    found = _attempt(db, db.computer.read_computer, "0badc0de")
    say((found.label, found.hostname))
    say(_attempt(db, db.computer.read_computer, "nothing"))
    with db.tx() as c:
        c.execute(
            "INSERT INTO nodes (uuid, node_type, label, description, ctime, mtime, computer_pk) "
            + ("VALUES (%s, %s, %s, '', 0, 0, 1)" if db.rows is pg_rows else
               "VALUES (?, ?, ?, '', 0, 0, 1)"),
            ("0c0de000-0000-7000-8000-000000000000", "core.code.installed", "bash"),
        )  # fmt: skip
    say(db.computer.read_code_pks(db.connection, "bash", "far"))
    say(db.computer.read_code_rows(db.connection))
    say(_attempt(db, db.computer.delete_computer_tx, 1))
    # a CalcJob's stages and its watcher
    with db.tx() as c:
        job, _ = db.calcjob.create_calcjob_tx(
            c, _new_process("w1", now + 60), uuid, lambda pks: b"first", False
        )
        say(db.calcjob.calcjob_info(c, job))
        db.calcjob.stage_status_tx(c, job, "w1", 1, "retrying", [("WARNING", "retry")])
    say(_attempt(db, db.calcjob.pause_stage_tx, job, "w1", 1, "upload failed", True, None))
    with db.tx() as c:
        c.execute(
            "UPDATE nodes SET paused = 0, owner = 'w1', node_type = 'process.calcjob' "
            + ("WHERE pk = %s" if db.rows is pg_rows else "WHERE pk = ?"),
            (job,),
        )
    stage = CalcJobCommit(job, "w1", 1, "waiting", "queued", 2, b"cp", job=(uuid, "9"),
                          outputs=[("remote_folder", Int(3))], evict=True)  # fmt: skip
    say(_attempt(db, db.calcjob.calcjob_commit_tx, stage))
    say(_attempt(db, db.calcjob.claim_jobs_tx, "wa", now + 60, now))
    say(db.calcjob.has_unwatched_jobs(db.connection, now))
    say(_attempt(db, db.calcjob.renew_jobs, "wa", now + 120))
    say(_attempt(db, db.calcjob.job_states_tx, "wa", [(job, "9", "running", "Running")]))
    say(db.calcjob.read_job(db.connection, job))
    say(_attempt(db, db.calcjob.pause_watched_tx, [job], "scheduler unreachable"))
    say(db.calcjob.read_watched_jobs(db.connection, "wa"))
    say(_attempt(db, db.calcjob.release_jobs_tx, "wa"))
    say(db.calcjob.active_stages(db.connection, [job]))
    say(db.calcjob.output_tree(db.connection, job, "remote_folder"))
    say(db.calcjob.cleanable_calcjobs(db.connection, None, None, None, ["far"]))
    say(db.calcjob.cleanable_calcjobs(db.connection, [job], 0.0, now + 10, None))
    say(_attempt(db, db.calcjob.drop_job_tx, job, "nobody"))
    say(db.calcjob.read_job(db.connection, job) is not None)
    with db.tx() as c:
        epoch = db.checkpoint.claim_process_tx(c, job, "w2", now + 60, "running")
    say(_attempt(db, db.calcjob.finish_calcjob_tx, FinishProcess(job, "w2", epoch, "finished")))
    say(db.calcjob.read_job(db.connection, job))
    say(_attempt(db, db.repair.repair_tx, False))
    # several new values in one call, one of them twice; stored again (a replayed step): the
    # same nodes; another value under a stored uuid: refused
    one, two, three = Int(1), Int(2), Int(3)
    values = [("a", one), ("b", two), ("again", one), ("c", three)]
    say(_attempt(db, db.rows.begin_process_tx, _new_process(inputs=values)))
    # (the process's pk differs: PostgreSQL used up identity values on the conflicts)
    say(_attempt(db, db.rows.begin_process_tx, _new_process(inputs=values))[1])
    impostor = Int(4)
    impostor._uuid = two.uuid
    say(
        _attempt(
            db, db.rows.begin_process_tx, _new_process(inputs=[("x", Int(9)), ("y", impostor)])
        )
    )
    say(_attempt(db, db.rows.store_data_tx, impostor))
    return answers


def test_the_ports_answer_as_the_sqlite_functions_do(pg: Any) -> None:
    on_sqlite = _lifecycle(_Sqlite())
    on_postgres = _lifecycle(_Postgres(pg))
    assert on_postgres == on_sqlite


def _claims_with_suspects(db: Any) -> list[Any]:
    """Claims of a queue whose third task is a suspect (claimed twice by workers that died):
    the tasks before it, then nothing for a busy worker, then it alone for an idle one."""
    now = time.time()
    with db.tx() as c:
        pks = [db.rows.begin_process_tx(c, _new_process())[0] for _ in range(4)]
        for pk in pks:
            db.broker.enqueue(c, pk, f"start:{pk}", now)
    tasks = [row[0] for row in db.connection.execute("SELECT pk FROM tasks ORDER BY pk")]
    with db.tx() as c:
        c.execute(f"UPDATE tasks SET attempts = 2 WHERE pk = {tasks[2]}")
        c.execute(f"UPDATE tasks SET attempts = 3 WHERE pk = {tasks[3]}")
    answers: list[Any] = []
    for idle in (True, False, True, True):
        with db.tx() as c:
            claims = db.broker.claim_tasks_tx(c, "w", 10, now + 60, now, idle)
        answers.append([(tasks.index(t), pks.index(p), a) for t, p, a in claims])
    return answers


def test_claims_with_suspects_answer_as_on_sqlite(pg: Any) -> None:
    on_postgres = _claims_with_suspects(_Postgres(pg))
    assert on_postgres == _claims_with_suspects(_Sqlite())
    assert on_postgres == [[(0, 0, 1), (1, 1, 1)], [], [(2, 2, 3)], [(3, 3, 4)]]


def test_recovery_refusals_and_the_rest_answer_as_on_sqlite(postgres_url: str) -> None:
    with _connect(postgres_url) as connection:
        schema.ensure_schema(connection, "test")
        on_postgres = _recovery_and_the_rest(_Postgres(connection))
    on_sqlite = _recovery_and_the_rest(_Sqlite())
    for index, (ours, theirs) in enumerate(zip(on_postgres, on_sqlite, strict=True)):
        assert ours == theirs, index
