"""``miniengine db copy``: a whole database into an empty one, sqlite and PostgreSQL both ways.

Every row of every table survives a round trip; processes in flight (paused mid-way, submitted
and never claimed) finish on the target under a worker of the target; a target that holds rows
is refused untouched; a copy that fails half-way leaves the target empty; the table and column
lists of the copy are those of both schemas.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import pytest

from miniengine import (
    Computer,
    Int,
    SinglefileData,
    Str,
    arun_get_node,
    asubmit,
    await_node,
    control,
    load_node,
    run_get_node,
    submit,
)
from miniengine.daemon import Worker
from miniengine.storage.copy import (
    NOT_COPIED,
    TABLES,
    CopyProgress,
    CopyRefused,
    copy_database,
    open_dump,
    open_load,
)
from miniengine.storage.open import close_all_backends, open_backend
from miniengine.storage.paths import url_without_password
from miniengine.storage.repository import Repository
from miniengine.storage.schema import SCHEMA_VERSION
from miniengine.testing import open_gate
from tests.test_cli import cli
from tests.workchains.control_chains import NappingChain, ParentOfWaiting
from tests.workchains.daemon_chains import AddWorkChain, NestedWorkChain, python_env

LEASE = 2.0


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty target of each backend: a new file's path, or a new PostgreSQL database's URL
    (its repository folder comes from ``$MINIENGINE_REPOSITORY``, set by the test)."""
    if request.param == "sqlite":
        return str(tmp_path / "target" / "copy.sqlite")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(autouse=True)
def _closed_afterwards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "target").mkdir()
    monkeypatch.setenv("MINIENGINE_REPOSITORY", str(tmp_path / "pg-repository"))
    yield
    close_all_backends()


def _rows(db: str | Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every copied table's rows, in key order, read through the copy's own dump."""
    dump = open_dump(db)
    try:
        return {
            table.name: [tuple(row) for batch in dump.rows(table, 1000) for row in batch]
            for table in TABLES
        }
    finally:
        dump.close()


def _fill(db: Path, tmp_path: Path) -> dict[str, int]:
    """Finished processes with reports, a computer, a file, a gate, events and a submitted
    WorkChain nobody claimed; the pks of some of them."""
    store = open_backend(db)
    try:
        store.events.add_watcher(time.time() + 60)  # so that state changes are logged as events
    finally:
        store.close()
    run_get_node(NestedWorkChain, inp=Int(2))
    _, added = run_get_node(AddWorkChain, x=Int(1), y=Int(2))
    Computer("copyhost", "localhost", description="for the copy").store()
    text = tmp_path / "input.txt"
    text.write_text("the content of a file\n")
    single = SinglefileData(text).store()
    open_gate("copied-gate")
    unclaimed = submit(AddWorkChain, x=Int(20), y=Int(22))
    assert single.pk is not None and added.pk is not None and unclaimed.pk is not None
    return {"file": single.pk, "added": added.pk, "unclaimed": unclaimed.pk}


# the lists of the copy against both schemas ------------------------------------------------


def test_the_copied_tables_and_columns_are_exactly_those_of_the_schema(backend_db: Any) -> None:
    """A table or a column added to either schema and not to the copy fails here: it would
    be left behind by every copy."""
    load = open_load(backend_db)
    try:
        schema = load.columns()
    finally:
        load.close()
    copied = {table.name: set(table.columns) for table in TABLES}
    assert set(schema) == set(copied) | (set(NOT_COPIED) & set(schema))
    assert set(copied).isdisjoint(NOT_COPIED)
    for name, columns in copied.items():
        assert set(schema[name]) == columns, name
    for table in TABLES:
        assert set(table.order) <= set(table.columns)
        assert table.identity is None or table.identity in table.columns


# round trip ----------------------------------------------------------------------------------


def test_sqlite_to_postgresql_and_back_keeps_every_row_and_file(
    miniengine_db: Path, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pks = _fill(miniengine_db, tmp_path)
    before = _rows(miniengine_db)
    assert all(before[name] for name in ("nodes", "links", "logs", "tasks", "events", "gates"))
    assert before["computers"] and before["checkpoints"]

    there = copy_database(miniengine_db, postgres_url, batch_size=7)
    assert there.rows == {name: len(rows) for name, rows in before.items()}
    assert there.objects == 1
    assert _rows(postgres_url) == before
    back = tmp_path / "back" / "back.sqlite"
    back.parent.mkdir()
    again = copy_database(postgres_url, back)
    assert again.rows == there.rows and again.objects == 1
    assert _rows(back) == before
    # and read without the copy's code: every column of every table of the two files
    with sqlite3.connect(miniengine_db) as source, sqlite3.connect(back) as copy:
        tables = [
            name
            for (name,) in source.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
            if name not in NOT_COPIED
        ]
        assert sorted(tables) == sorted(table.name for table in TABLES)
        for name in tables:
            query = f"SELECT * FROM {name} ORDER BY 1, 2"
            assert copy.execute(query).fetchall() == source.execute(query).fetchall(), name

    # the file is there, and pks printed before the copy name the same nodes after it
    assert load_node(pks["file"], db=back).get_content() == "the content of a file\n"
    assert load_node(pks["added"], db=postgres_url).uuid == load_node(pks["added"]).uuid
    assert load_node(pks["file"], db=postgres_url).get_content() == "the content of a file\n"
    # the events' sequence came along: no event id is handed out twice
    with sqlite3.connect(miniengine_db) as source, sqlite3.connect(back) as copy:
        query = "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
        assert copy.execute(query).fetchone() == source.execute(query).fetchone()
    # new rows on PostgreSQL get pks after the copied ones (the identities were moved on)
    monkeypatch.setenv("MINIENGINE_DB", postgres_url)
    stored = Int(7).store()
    computer = Computer("after", "localhost").store(db=postgres_url)
    assert stored.pk is not None and stored.pk > max(row[0] for row in before["nodes"])
    assert computer.pk is not None and computer.pk > max(row[0] for row in before["computers"])


# processes in flight -----------------------------------------------------------------------


def _naps(pk: int, db: Any) -> int:
    return sum("|nap]: nap " in entry.message for entry in load_node(pk, db=db).logs)


async def test_processes_in_flight_finish_on_the_target(
    miniengine_db: Path, target: str, tmp_path: Path
) -> None:
    gate = "copy-gate"
    _, finished = await arun_get_node(AddWorkChain, x=Int(1), y=Int(2))
    # the worker stops while a child waits at the gate in its step (its parent waiting for it):
    # the child goes back to the queue, as when a daemon is stopped mid-way
    async with Worker(db=miniengine_db, lease_timeout=LEASE, stop_timeout=0.2):
        napping = await asubmit(NappingChain, gate=Str(gate))
        parent = await asubmit(ParentOfWaiting, gate=Str(gate))
        for _ in range(6000):
            if _naps(napping.pk, miniengine_db) >= 2 and load_node(parent.pk).called:
                break
            await anyio.sleep(0.005)
        answer = await anyio.to_thread.run_sync(
            lambda: control.pause(napping.pk, wait=True, timeout=60)
        )
        assert "paused" in str(answer)
    naps = _naps(napping.pk, miniengine_db)
    assert naps >= 2 and load_node(napping.pk).paused
    (child,) = load_node(parent.pk).called
    assert not child.is_terminated
    unclaimed = await asubmit(AddWorkChain, x=Int(20), y=Int(22))

    summary = await anyio.to_thread.run_sync(lambda: copy_database(miniengine_db, target))
    assert summary.rows["checkpoints"] >= 3 and summary.rows["tasks"] >= 1
    assert summary.rows["waits"] == 1 and summary.rows["awaited"] == 1

    await anyio.to_thread.run_sync(lambda: control.play(napping.pk, db=target))
    open_gate(gate, db=target)
    async with Worker(db=target, lease_timeout=LEASE):
        chain = await await_node(load_node(napping.pk, db=target), timeout=60)
        added = await await_node(load_node(unclaimed.pk, db=target), timeout=60)
        waited = await await_node(load_node(parent.pk, db=target), timeout=60)
    assert waited.is_finished_ok, waited.exception
    assert waited.outputs.seen.value == child.pk
    assert load_node(child.pk, db=target).outputs.passed.value is True
    assert chain.is_finished_ok, chain.exception
    assert chain.outputs.naps.value >= naps  # it went on from its checkpoint
    assert _naps(napping.pk, target) >= naps
    assert added.is_finished_ok and added.outputs.result.value == 42
    copied = load_node(finished.pk, db=target)
    assert copied.is_finished_ok and copied.outputs.result.value == 3
    # the source is as it was: nothing ran there after the copy
    assert load_node(napping.pk).paused and not load_node(napping.pk).is_terminated
    assert not load_node(unclaimed.pk).is_terminated
    assert not load_node(parent.pk).is_terminated


async def test_the_leases_of_the_sources_owners_are_let_go(
    miniengine_db: Path, target: str
) -> None:
    """A worker of the source that died holding a task and its process (their leases ran
    out, nobody recovered them yet) owns nothing on the target: a worker there runs the process
    at once."""
    node = await asubmit(AddWorkChain, x=Int(5), y=Int(6))
    store = open_backend(miniengine_db)
    try:
        now = time.time()
        # its heartbeat stopped two minutes ago, its leases ran out a second ago
        store.broker.register_worker("dead-worker", 4242, 4, now - 120, "gone")
        (claim,) = store.checkpoints.claim_work("dead-worker", 1, now - 1, now, True, 5)
    finally:
        store.close()
    assert claim.process_pk == node.pk
    await anyio.to_thread.run_sync(lambda: copy_database(miniengine_db, target))
    tasks = TABLES[[table.name for table in TABLES].index("tasks")]
    copied = _rows(target)
    assert all(row[tasks.columns.index("status")] != "leased" for row in copied["tasks"])
    assert all(row[tasks.columns.index("worker")] is None for row in copied["tasks"])
    async with Worker(db=target, lease_timeout=LEASE):
        added = await await_node(load_node(node.pk, db=target), timeout=30)
    assert added.is_finished_ok and added.outputs.result.value == 11
    assert not load_node(node.pk).is_terminated  # the source's owner still holds it there


async def test_a_calcjob_whose_job_runs_finishes_on_the_target(
    miniengine_db: Path, target: str, tmp_path: Path
) -> None:
    """A CalcJob copied while its program runs with the scheduler: a worker of the target
    watches the same job, retrieves and parses it; the program ran once."""
    from tests.test_calcjob_daemon import OPTIONS, local_bash
    from tests.workchains.calcjob_plugins import ArithmeticAddCalculation

    code = local_bash(tmp_path)
    release, counter = tmp_path / "release", tmp_path / "counter"
    async with Worker(db=miniengine_db, lease_timeout=LEASE, stop_timeout=0.2):
        node = await asubmit(
            ArithmeticAddCalculation,
            code=code,
            x=Int(2),
            y=Int(3),
            gate=Str(str(release)),
            counter=Str(str(counter)),
            metadata=OPTIONS,
        )
        for _ in range(6000):
            if counter.exists() and load_node(node.pk).get_state() == "withscheduler":
                break
            await anyio.sleep(0.01)
        assert counter.exists(), "the program did not start"
    summary = await anyio.to_thread.run_sync(lambda: copy_database(miniengine_db, target))
    assert summary.rows["calcjob_jobs"] == 1
    release.touch()
    async with Worker(db=target, lease_timeout=LEASE):
        done = await await_node(load_node(node.pk, db=target), timeout=60)
    assert done.is_finished_ok, (done.process_state, done.exception, done.exit_status)
    assert done.outputs.sum.value == 5
    assert counter.read_text().count("\n") == 1  # the program ran once
    assert not load_node(node.pk).is_terminated  # nothing went on in the source


async def test_a_source_that_a_daemon_serves_is_refused(
    miniengine_db: Path, tmp_path: Path
) -> None:
    await arun_get_node(AddWorkChain, x=Int(1), y=Int(2))
    target_db = tmp_path / "target" / "copy.sqlite"
    async with Worker(db=miniengine_db, lease_timeout=LEASE):
        with pytest.raises(CopyRefused, match=r"a daemon serves .*stop it first"):
            await anyio.to_thread.run_sync(lambda: copy_database(miniengine_db, target_db))
    assert not target_db.exists()


def test_a_source_whose_processes_a_script_runs_is_refused(
    backend_db: Path | str, tmp_path: Path
) -> None:
    """``run()`` in a script holds its processes by leases it renews, with no worker row: a copy
    made meanwhile would run them again in the target while the script goes on; refused, with
    the script's owner named, and allowed once the script's process ended."""
    import threading

    from miniengine import calcfunction

    release = threading.Event()

    @calcfunction
    def held(x: Int) -> Int:
        release.wait(60)
        return Int(x.value + 1)

    result: dict[str, Any] = {}
    script = threading.Thread(target=lambda: result.update(node=run_get_node(held, Int(1))[1]))
    script.start()
    try:
        store = open_backend(backend_db)
        try:
            # (the script's process is begun once a node names it as its owner)
            deadline = time.monotonic() + 60
            while not store.queries.counts().processes.get("running"):
                assert time.monotonic() < deadline, "the script's process did not begin"
                time.sleep(0.01)
        finally:
            store.close()
        target_db = tmp_path / "target" / "copy.sqlite"
        with pytest.raises(CopyRefused, match=r"are running: .* hold\(s\) their leases"):
            copy_database(backend_db, target_db)
        assert not target_db.exists()
    finally:
        release.set()
        script.join(60)
    assert result["node"].is_finished_ok
    summary = copy_database(backend_db, tmp_path / "target" / "after.sqlite")
    assert summary.rows["nodes"] >= 3


async def test_a_source_whose_daemon_heartbeats_seldom_is_refused_by_its_live_leases(
    miniengine_db: Path, tmp_path: Path
) -> None:
    """A worker with a long lease timeout (here 600 s) renews its heartbeat every 150 s: one
    last seen 100 s ago still holds its process, which a copy would run twice; so does one
    whose host's clock is behind the copying host's."""
    node = await asubmit(AddWorkChain, x=Int(5), y=Int(6))
    store = open_backend(miniengine_db)
    try:
        now = time.time()
        store.broker.register_worker("slow-worker", 4242, 4, now - 100, "alpha")
        store.checkpoints.claim_work("slow-worker", 1, now + 500, now, True, 5)
    finally:
        store.close()
    with pytest.raises(CopyRefused, match=r"slow-worker \(1 process\(es\)\) hold"):
        await anyio.to_thread.run_sync(
            lambda: copy_database(miniengine_db, tmp_path / "copy.sqlite")
        )
    assert not load_node(node.pk).is_terminated


def test_a_repository_folder_for_a_sqlite_target_is_refused_before_the_file_is_made(
    miniengine_db: Path, tmp_path: Path
) -> None:
    run_get_node(AddWorkChain, x=Int(1), y=Int(2))
    target_db = tmp_path / "copy.sqlite"
    with pytest.raises(CopyRefused, match="keeps its files beside it"):
        copy_database(miniengine_db, target_db, repository=tmp_path / "elsewhere")
    assert not target_db.exists()


def test_the_command_warns_when_the_variable_overrides_the_folder_it_records(
    miniengine_db: Path, postgres_url: str, tmp_path: Path
) -> None:
    run_get_node(AddWorkChain, x=Int(1), y=Int(2))
    env = {**python_env(), "MINIENGINE_REPOSITORY": str(tmp_path / "from-variable")}
    recorded = tmp_path / "recorded"
    completed = cli(
        "db", "copy", str(miniengine_db), postgres_url, "--repository", str(recorded), env=env
    )
    assert completed.returncode == 0, completed.stderr
    assert "warning: $MINIENGINE_REPOSITORY is" in completed.stderr
    assert str(recorded) in completed.stderr


def test_the_command_refuses_a_source_whose_daemon_runs_here(
    miniengine_db: Path, tmp_path: Path
) -> None:
    """The check of ``db vacuum``: the pid file of a live supervisor beside the database."""
    from miniengine.daemon.files import DaemonFiles

    run_get_node(AddWorkChain, x=Int(1), y=Int(2))
    close_all_backends()
    files = DaemonFiles(miniengine_db)
    files.write(pid=os.getpid(), state="running")  # this process stands in for the supervisor
    target_db = tmp_path / "target" / "copy.sqlite"
    try:
        failed = cli("db", "copy", str(miniengine_db), str(target_db)).failed()
    finally:
        files.remove()
    assert f"a daemon (pid {os.getpid()}) is running for {miniengine_db}; stop it first" in failed
    assert not target_db.exists()


# refusals ------------------------------------------------------------------------------------


def test_a_target_that_holds_rows_is_refused_untouched(
    miniengine_db: Path, target: str, tmp_path: Path
) -> None:
    run_get_node(AddWorkChain, x=Int(1), y=Int(2))
    copy_database(miniengine_db, target)
    held = _rows(target)
    other = tmp_path / "other.sqlite"
    open_backend(other).close()  # an empty database: the refusal is for the target's sake
    shown = url_without_password(target)
    with pytest.raises(CopyRefused, match="is not empty") as refused:
        copy_database(other, target)
    assert shown in str(refused.value)
    assert _rows(target) == held

    # the command says so in one line, without the password of a URL
    failed = cli("db", "copy", str(miniengine_db), target).failed()
    assert "is not empty" in failed and shown in failed
    password = urlsplit(target).password if "://" in target else None
    if password:
        assert password not in failed
    assert _rows(target) == held


def test_a_source_of_another_schema_version_is_refused(miniengine_db: Path, tmp_path: Path) -> None:
    run_get_node(AddWorkChain, x=Int(1), y=Int(2))
    close_all_backends()
    with sqlite3.connect(miniengine_db) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    target_db = tmp_path / "target" / "copy.sqlite"
    with pytest.raises(CopyRefused, match="run `miniengine db migrate` on it first"):
        copy_database(miniengine_db, target_db)
    assert not target_db.exists()
    failed = cli("db", "copy", str(miniengine_db), str(target_db)).failed()
    assert f"schema version {SCHEMA_VERSION - 1}" in failed and "db migrate" in failed


def test_a_copy_onto_itself_is_refused(miniengine_db: Path) -> None:
    open_backend(miniengine_db).close()
    with pytest.raises(CopyRefused, match="onto itself"):
        copy_database(miniengine_db, miniengine_db)


def test_a_postgresql_copy_onto_itself_is_refused_however_its_url_is_spelt(
    postgres_url: str,
) -> None:
    open_backend(postgres_url).close()
    parts = urlsplit(postgres_url)
    other = postgres_url.replace(f"@{parts.hostname}:", "@localhost:") + "?sslmode=prefer"
    with pytest.raises(CopyRefused, match="onto itself"):
        copy_database(postgres_url, other)


# all or nothing ----------------------------------------------------------------------------


def test_a_copy_that_fails_half_way_leaves_the_target_empty(
    miniengine_db: Path, target: str, tmp_path: Path
) -> None:
    _fill(miniengine_db, tmp_path)
    seen: list[CopyProgress] = []

    def fail_in_checkpoints(step: CopyProgress) -> None:
        seen.append(step)
        if step.table == "checkpoints":
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected failure"):
        copy_database(miniengine_db, target, batch_size=3, progress=fail_in_checkpoints)
    assert any(step.table == "nodes" and step.done > 3 for step in seen)  # well under way
    assert all(rows == [] for rows in _rows(target).values())
    repository = (
        Repository.for_database(target)
        if "://" not in target
        else Repository(tmp_path / "pg-repository")
    )
    assert list(repository.list_objects()) == []  # the file it copied is gone again

    # and the target takes a whole copy afterwards
    summary = copy_database(miniengine_db, target)
    assert summary.objects == 1
    assert _rows(target) == _rows(miniengine_db)


def test_the_command_prints_counts_per_table_as_json(miniengine_db: Path, tmp_path: Path) -> None:
    import json

    run_get_node(AddWorkChain, x=Int(1), y=Int(2))
    close_all_backends()
    target_db = tmp_path / "target" / "copy.sqlite"
    out = cli("db", "copy", str(miniengine_db), str(target_db), "--json").ok()
    summary = json.loads(out)
    assert summary["source"] == str(miniengine_db) and summary["target"] == str(target_db)
    assert set(summary["rows"]) == {table.name for table in TABLES}
    assert summary["rows"]["nodes"] == len(_rows(miniengine_db)["nodes"]) > 0
    assert os.path.exists(target_db)
