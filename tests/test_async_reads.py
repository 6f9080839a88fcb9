"""Awaitable reads (``aload_node``, ``afind_processes``): the same nodes as the sync reads, read
on aiosqlite's thread (psycopg's async connection on PostgreSQL) so that the application's event
loop never waits for the database."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import miniengine
from miniengine import (
    CalcFunctionNode,
    Dict,
    Int,
    ProcessState,
    Str,
    WorkChain,
    WorkChainNode,
    WorkFunctionNode,
    afind_processes,
    aload_node,
    calcfunction,
    find_processes,
    load_node,
    run,
    workfunction,
)
from miniengine.core.ids import new_uuid
from miniengine.exceptions import MultipleObjectsError, NotExistent, StoreError
from miniengine.runtime.context import store_for
from miniengine.runtime.nodes import CalcJobNode, LoadNodeArgumentError, LoadNodeTypeError
from miniengine.storage.interfaces.provenance import NewProcess
from miniengine.storage.postgres import async_reads as postgres_async_reads
from miniengine.storage.sqlite import async_reads as sqlite_async_reads
from miniengine.storage.store import Store

REPO = Path(__file__).resolve().parents[1]


@calcfunction
def add(x, y):
    return Int(x + y)


@calcfunction
def divide(x, y):
    return Int(x // y)


@workfunction
def add_twice(x, y):
    return add(add(x, y), y)


class Doubler(WorkChain):
    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("doubled", valid_type=Int)
        spec.outline(cls.double)

    def double(self):
        self.out("doubled", add(self.inputs.x, self.inputs.x))


def aiosqlite_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


def all_ended(threads: set[threading.Thread]) -> bool:
    """Whether these threads end within a few seconds (a stopped connection's thread ends
    just after its last reply)."""
    for thread in threads:
        thread.join(timeout=5)
    return not any(thread.is_alive() for thread in threads)


def store_calcjob_node() -> int:
    """A CalcJob's node as stored (running a real CalcJob needs a computer and a code)."""
    store = store_for(None)
    new = NewProcess(
        uuid=new_uuid(),
        node_type="process.calcjob",
        process_type="tests.test_async_reads:SomeJob",
        process_label="SomeJob",
        process_state="created",
        label="a job",
        description="",
        inputs=[("x", Int(4))],
        input_link_type="input_calc",
        owner=None,
        lease_expires=None,
        attributes={"job_id": "42"},
    )
    pk, _ = store.provenance.begin_process(new)
    return pk


def assert_same_node(loaded: Any, expected: Any) -> None:
    assert type(loaded) is type(expected)
    assert (loaded.pk, loaded.uuid) == (expected.pk, expected.uuid)
    if isinstance(expected, miniengine.ProcessNode):
        assert loaded._row == expected._row
        assert loaded.inputs._as_dict().keys() == expected.inputs._as_dict().keys()
        assert loaded.outputs._as_dict().keys() == expected.outputs._as_dict().keys()
    else:
        assert loaded == expected
        assert loaded.label == expected.label


# -- the same nodes as load_node and find_processes -----------------------------------------------


async def test_aload_node_gives_what_load_node_gives_for_every_node_type(backend_db: Any) -> None:
    _, calc = await add.arun_get_node(1, 2)
    _, work = await add_twice.arun_get_node(1, 2)
    _, chain = await miniengine.arun_get_node(Doubler, x=Int(3))
    job_pk = store_calcjob_node()
    data = [Int(7).store(), Str("seven").store(), Dict({"a": [1, 2]}).store()]
    nodes = [calc, work, chain, load_node(job_pk), *data]
    assert [type(node) for node in nodes[:4]] == [
        CalcFunctionNode,
        WorkFunctionNode,
        WorkChainNode,
        CalcJobNode,
    ]
    for node in nodes:
        expected = load_node(node.pk)
        assert_same_node(await aload_node(node.pk), expected)
        assert_same_node(await aload_node(pk=node.pk), expected)
        assert_same_node(await aload_node(str(node.pk)), expected)
        assert_same_node(await aload_node(node.uuid), expected)
        assert_same_node(await aload_node(uuid=node.uuid.upper()), expected)
        assert_same_node(await aload_node(node.uuid[14:]), expected)  # the random part
    job = await aload_node(job_pk)
    assert job.get_job_id() == "42" and job.process_state is ProcessState.CREATED
    chain_again = await aload_node(chain.pk)
    assert chain_again.outputs.doubled == 6 and chain_again.is_finished_ok


async def test_aload_node_raises_what_load_node_raises(backend_db: Any) -> None:
    _, first = await add.arun_get_node(1, 2)
    _, second = await add.arun_get_node(1, 2)
    with pytest.raises(NotExistent, match="no node with the pk 999"):
        await aload_node(999)
    with pytest.raises(NotExistent, match="no node with the pk"):
        await aload_node(2**70)
    with pytest.raises(NotExistent, match="uuid prefix"):
        await aload_node("not-a-uuid")
    with pytest.raises(NotExistent, match=r"no node with the pk 999999 \(nor a uuid starting"):
        await aload_node("999999")  # no such pk, and no uuid starts with it
    common = os.path.commonprefix([first.uuid, second.uuid])  # noqa: RUF071
    if common:  # version 7 uuids made in the same millisecond share their first digits
        with pytest.raises(MultipleObjectsError, match="matches more than one node"):
            await aload_node(common)
    with pytest.raises(LoadNodeArgumentError):
        await aload_node()
    with pytest.raises(LoadNodeArgumentError):
        await aload_node(1, pk=1)
    with pytest.raises(LoadNodeTypeError):
        await aload_node(pk="1")  # type: ignore[arg-type]
    with pytest.raises(LoadNodeTypeError):
        await aload_node(True)
    with pytest.raises(LoadNodeTypeError):
        await aload_node(uuid=1)  # type: ignore[arg-type]


async def listed(**filters: Any) -> list[int]:
    return [node.pk async for node in afind_processes(**filters)]


FILTERS: list[dict[str, Any]] = [
    {},
    {"limit": 2},
    {"limit": 0},
    {"limit": 100},
    {"state": ProcessState.EXCEPTED},
    {"state": "excepted"},
    {"state": ["finished", ProcessState.EXCEPTED]},
    {"state": ProcessState.RUNNING},
    {"process_label": "add"},
    {"process_label": "nothing"},
    {"state": "finished", "process_label": "add", "limit": 1},
    {"state": "finished", "process_label": "add", "limit": 3},
]


async def test_afind_processes_filters_as_find_processes_across_pages(
    monkeypatch: pytest.MonkeyPatch, backend_db: Any
) -> None:
    for x in range(4):
        await add.arun(x, 1)
    with pytest.raises(ZeroDivisionError):
        await divide.arun(1, 0)
    await add_twice.arun(1, 2)
    Int(5).store()  # data nodes are never listed
    expected = {repr(f): [node.pk for node in find_processes(**f)] for f in FILTERS}
    assert len(expected["{}"]) == 8
    for page_rows in (256, 3, 1):  # one page, several pages (limits across pages), row by row
        monkeypatch.setattr(sqlite_async_reads, "PAGE_ROWS", page_rows)
        monkeypatch.setattr(postgres_async_reads, "PAGE_ROWS", page_rows)
        for f in FILTERS:
            assert await listed(**f) == expected[repr(f)], (page_rows, f)
    nodes = [node async for node in afind_processes(state="excepted")]
    assert [type(node) for node in nodes] == [CalcFunctionNode]
    assert nodes[0].process_label == "divide" and nodes[0].process_state is ProcessState.EXCEPTED


def test_the_awaitable_reads_are_public_names() -> None:
    import miniengine.orm

    assert miniengine.orm.aload_node is aload_node
    assert {"aload_node", "afind_processes"} <= set(miniengine.__all__)


async def test_afind_processes_checks_its_arguments_at_once() -> None:
    with pytest.raises(ValueError):
        afind_processes(state="asleep")
    with pytest.raises(ValueError):
        afind_processes(limit=-1)


# -- cancellation, loops, and closing -------------------------------------------------------------


def snapshot_held(db: Path | str) -> bool:
    """Whether a reader holds a snapshot open: on sqlite a TRUNCATE checkpoint then reports
    busy; on PostgreSQL a session sits idle in a transaction."""
    if isinstance(db, str):
        import psycopg

        with psycopg.connect(db, autocommit=True) as connection:
            held = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'"
            ).fetchone()
        return bool(held and held[0])
    connection = sqlite3.connect(db, isolation_level=None, timeout=0)
    try:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return bool(busy)
    finally:
        connection.close()


async def test_a_listing_cancelled_or_left_half_way_holds_nothing_open(
    monkeypatch: pytest.MonkeyPatch, backend_db: Path | str
) -> None:
    monkeypatch.setattr(sqlite_async_reads, "PAGE_ROWS", 4)
    monkeypatch.setattr(postgres_async_reads, "PAGE_ROWS", 4)
    for x in range(30):
        await add.arun(x, 1)
    started = asyncio.Event()
    seen: list[int] = []

    async def slow_listing() -> None:
        async for node in afind_processes():
            seen.append(node.pk)
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(slow_listing())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(seen) == 1
    assert not snapshot_held(backend_db)

    async for node in afind_processes():  # and break off half-way
        if node.pk < 20:
            break
    assert not snapshot_held(backend_db)

    # the loop's connection still serves reads
    assert len(await listed()) == 30
    assert (await aload_node(seen[0])).pk == seen[0]

    # a timeout in the middle of a page's query
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await listed()
    assert len(await listed(limit=5)) == 5


@pytest.mark.parametrize("runner", ["asyncio", "anyio"])
def test_works_in_plain_asyncio_run_and_closes_with_the_loop(runner: str, backend_db: Any) -> None:
    import anyio

    _, node = run.get_node(add, 2, 3)

    async def main() -> tuple[Any, list[int]]:
        loaded = await aload_node(node.pk)
        return loaded, await listed()

    before = aiosqlite_threads()
    loaded, pks = asyncio.run(main()) if runner == "asyncio" else anyio.run(main)
    assert_same_node(loaded, load_node(node.pk))
    assert pks == [node.pk]
    assert all_ended(aiosqlite_threads() - before)  # closed when the run shut the loop down


def test_works_under_uvloop(backend_db: Any) -> None:
    uvloop = pytest.importorskip("uvloop")
    _, node = run.get_node(add, 2, 3)

    async def main() -> tuple[Any, list[int]]:
        return await aload_node(node.pk), await listed(state="finished")

    before = aiosqlite_threads()
    loaded, pks = uvloop.run(main())
    assert_same_node(loaded, load_node(node.pk))
    assert pks == [node.pk]
    assert all_ended(aiosqlite_threads() - before)


@calcfunction
async def increment_loaded(x):
    """An async body that reads its own input back through the awaitable reads."""
    loaded = await aload_node(x.pk)
    listed_pks = [node.pk async for node in afind_processes(process_label="add")]
    return Int(loaded.value + len(listed_pks))


def test_works_inside_bodies_that_miniengine_runs(backend_db: Any) -> None:
    add(1, 1)
    assert run(increment_loaded, Int(10).store()) == 11  # the engine's own loop thread

    async def main() -> Any:
        return await miniengine.arun(increment_loaded, Int(20).store())

    assert asyncio.run(main()) == 21


async def test_each_loop_has_its_own_connection_and_the_store_closes_them_all(
    miniengine_db: Path,
) -> None:
    store = Store(miniengine_db)
    await add.arun(1, 2)
    pks = [node.pk async for node in afind_processes(db=store)]
    other_loop = asyncio.new_event_loop()
    try:
        # another thread's loop, left running, and a loop closed without shutting down
        ready = threading.Event()
        thread = threading.Thread(target=lambda: (ready.set(), other_loop.run_forever()))
        thread.start()
        ready.wait()
        future = asyncio.run_coroutine_threadsafe(aload_node(pks[0], db=store), other_loop)
        assert (await asyncio.wrap_future(future)).pk == pks[0]
        threads = aiosqlite_threads()
        assert len(threads) >= 2 and all(t.daemon for t in threads)
        store.close()
        assert all_ended(threads)
        with pytest.raises(StoreError, match="closed"):
            await aload_node(pks[0], db=store)
    finally:
        other_loop.call_soon_threadsafe(other_loop.stop)
        thread.join()
        other_loop.close()


def test_a_loop_closed_without_shutdown_leaves_no_thread_behind(miniengine_db: Path) -> None:
    _, node = run.get_node(add, 2, 3)
    before = aiosqlite_threads()
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(aload_node(node.pk)).pk == node.pk
    loop.close()  # no shutdown_asyncgens: its connection is stopped by the next loop's first read
    (stale,) = aiosqlite_threads() - before
    assert stale.daemon  # and could not keep the interpreter alive meanwhile
    assert asyncio.run(aload_node(node.pk)).pk == node.pk
    assert all_ended({stale})


SCRIPT = """
import asyncio, sys
from miniengine import Int, aload_node, calcfunction, run

@calcfunction
def add(x, y):
    return Int(x + y)

_, node = run.get_node(add, 1, 2)
print("aiosqlite" in sys.modules)
{finish}
print("read", flush=True)
"""


@pytest.mark.parametrize(
    "finish",
    [
        "asyncio.run(aload_node(node.pk))",
        # a loop closed without shutting down its generators, and one never closed
        "loop = asyncio.new_event_loop(); loop.run_until_complete(aload_node(node.pk)); "
        "loop.close()",
        "loop = asyncio.new_event_loop(); loop.run_until_complete(aload_node(node.pk))",
    ],
)
def test_a_script_that_awaited_reads_exits_promptly(finish: str, miniengine_db: Path) -> None:
    script = textwrap.dedent(SCRIPT).format(finish=finish)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MINIENGINE_DB": str(miniengine_db)}
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["False", "read"]  # aiosqlite loaded on first use only
    assert "Traceback" not in completed.stderr and "Exception" not in completed.stderr
    assert time.monotonic() - started < 30


# -- the loop keeps answering while a million rows are read ---------------------------------------

MILLION = 1_000_000
#: The longest the test app's loop may be kept from answering by a query (its pings every 1 ms).
STALL_LIMIT = 0.005
#: States no row has and no one index holds together (``nodes_active`` holds the first,
#: ``nodes_ended_badly`` the second): a filter on them reads the whole table and finds nothing.
#: a state no process of the million has: with the index of processes that ended badly dropped
#: (below), the query reads all 1,000,000 rows and finds nothing
SCAN_STATES = ["killed"]


@pytest.fixture(scope="module")
def million_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A database of 1,000,000 process nodes (every tenth excepted), made in about two seconds:
    one statement generating the rows inside sqlite, in one transaction, without a journal."""
    path = tmp_path_factory.mktemp("million") / "million.sqlite"
    Store(path).close()  # the schema
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = OFF")
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("BEGIN")
        connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO nodes (pk, uuid, node_type, process_type, process_label, "
            "process_state, ctime, mtime) "
            "SELECT i, printf('%08x-0000-7000-8000-%012x', i, i), 'process.calcfunction', "
            "'tests.test_async_reads:add', 'add', "
            "CASE WHEN i % 10 = 0 THEN 'excepted' ELSE 'finished' END, i, i FROM n",
            (MILLION,),
        )
        connection.execute("COMMIT")
        # the test needs one query that reads every row: without this index, "killed" is one
        connection.execute("DROP INDEX nodes_ended_badly")
        connection.execute("PRAGMA journal_mode = WAL")
    finally:
        connection.close()
    yield path
    path.unlink()


class Pinger:
    """The application's other work: a task that wakes every millisecond and records how late it
    woke (the loop's stall at that moment)."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.001)
            self.lateness.append(loop.time() - start - 0.001)

    async def __aenter__(self) -> Pinger:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task

    async def longest_stall(self, work: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
        """The longest stall while ``work`` runs, and during as long a time without it."""
        self.lateness.clear()
        started = time.perf_counter()
        result = await work()
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.002)  # a ping held up until the end records its lateness now
        with_work = max(self.lateness, default=0.0)
        self.lateness.clear()
        await asyncio.sleep(elapsed)
        return with_work, max(self.lateness, default=0.0), result


async def assert_never_stalls(work: Callable[[], Awaitable[Any]]) -> None:
    """Run ``work`` while the loop answers pings, and check the loop's longest stall.

    On a quiet machine the longest stall stays under :data:`STALL_LIMIT`, and one round shows
    it.  On a busy one (two cores shared with other test runs) the scheduler alone delays a
    ping by 5-40 ms now and then, with or without a query, so a single longest stall says
    little.  Then each round also measures the longest stall during as long a time without the
    query, and what is checked is the query's own part: the typical (median) longest stall with
    the query beyond the typical one without.  A query that held the loop (the same scan run on
    it takes ~200 ms) raises every round's stall, and fails.
    """
    with_work: list[float] = []
    without: list[float] = []
    async with Pinger() as pinger:
        for _ in range(5):
            stalled, idle, _ = await pinger.longest_stall(work)
            if stalled <= STALL_LIMIT:
                return
            with_work.append(stalled)
            without.append(idle)
    contribution = statistics.median(with_work) - statistics.median(without)
    shown = ", ".join(
        f"{a * 1e3:.1f}/{b * 1e3:.1f}" for a, b in zip(with_work, without, strict=True)
    )
    assert contribution <= STALL_LIMIT, f"longest stalls with/without the query (ms): {shown}"


async def test_reading_a_million_rows_never_stalls_the_loop(million_nodes: Path) -> None:
    store = Store(million_nodes)
    try:

        async def queries() -> None:
            # a page of nodes per hop: 25,000 nodes (and 250,000 rows scanned)
            # (node.process_state is not asked here: it is a fresh read, on the loop, each time)
            pks = [node.pk async for node in afind_processes("excepted", limit=25_000, db=store)]
            assert pks == list(range(MILLION, MILLION - 250_000, -10))
            # one query over the whole table, which finds nothing (it reads all 1,000,000 rows)
            assert [node async for node in afind_processes(state=SCAN_STATES, db=store)] == []
            assert (await aload_node(MILLION // 2, db=store)).pk == MILLION // 2

        await assert_never_stalls(queries)
        tenth = [node.pk async for node in afind_processes(state="excepted", db=store)]
        assert tenth == list(range(MILLION, 0, -10))

        # the measurement sees a read that blocks the loop: the same scan, run on it
        async with Pinger() as pinger:
            stalled, _, found = await pinger.longest_stall(
                lambda: _blocking(lambda: find_processes(state=SCAN_STATES, db=store))
            )
        assert found == [] and stalled > 0.05
    finally:
        store.close()


async def _blocking(read: Callable[[], Any]) -> Any:
    return read()


async def test_postgres_store_closes_the_connections_of_every_loop(postgres_url: str) -> None:
    from miniengine.storage.postgres.store import PostgresStore

    store = PostgresStore(postgres_url)
    try:
        assert [node async for node in afind_processes(db=postgres_url)] == []
        reads = store.async_reads
        assert [row async for row in reads.process_rows(None, None, None)] == []
        other_loop = asyncio.new_event_loop()
        thread = threading.Thread(target=other_loop.run_forever)
        thread.start()
        try:
            future = asyncio.run_coroutine_threadsafe(reads.nodes([1, 2]), other_loop)
            assert await asyncio.wrap_future(future) == {}
            connections = [reader.connection for reader in reads._readers.values()]
            assert len(connections) == 2
            store.close()
            await asyncio.sleep(0.05)  # the other loop closes its own at its next turn
            assert all(connection is None or connection.closed for connection in connections)
            with pytest.raises(StoreError, match="closed"):
                await reads.node(1)
        finally:
            other_loop.call_soon_threadsafe(other_loop.stop)
            thread.join()
            other_loop.close()
    finally:
        store.close()
