"""A database server that stops answering for a while (a restart, a failover, the network).

A PostgreSQL store waits for a server that went away: a write or a read made while it restarts
runs once it answers again, so scripts and daemons ride out a restart.  A server that stays
away beyond every retry fails the write with ``DatabaseUnavailableError``, which says nothing
about the process that made it: a daemon worker hands the process back to run again from its
checkpoint, instead of recording it EXCEPTED.

The restart tests stop and start a private cluster of their own (the session's cluster serves
the other tests meanwhile).
"""

from __future__ import annotations

import getpass
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from miniengine import Int, Str, asubmit, await_node, find_processes, run, submit
from miniengine.exceptions import DatabaseLockedError, DatabaseUnavailableError, StoreError
from tests.services.postgres import PostgresServer, get_meta, put_meta, running_postgres
from tests.workchains.daemon_chains import AddWorkChain, DaemonGuard, wait_until
from tests.workchains.outage_chains import UnavailableOnceWorkChain, double

TIMEOUT = 60

Connection = Any  # psycopg.Connection[Any]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A cluster of this module's own: its tests stop and start it."""
    with running_postgres(tmp_path_factory.mktemp("restarted")) as started:
        yield started


@pytest.fixture
def stopped_later(server: PostgresServer) -> Iterator[PostgresServer]:
    """The module's cluster, running again after the test whatever the test did to it."""
    yield server
    try:
        server.admin("SELECT 1")
    except Exception:
        server.start()


class _ConnectFailures:
    """Counts the store's failed attempts to connect, and says when the first one happened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from miniengine.storage.postgres import store as store_module

        self.count = 0
        self.first = threading.Event()
        real = store_module.connect

        def counting(url: str, **kwargs: Any) -> Any:
            try:
                return real(url, **kwargs)
            except StoreError:
                self.count += 1
                self.first.set()
                raise

        monkeypatch.setattr(store_module, "connect", counting)


# the store -----------------------------------------------------------------------------------


def test_a_write_and_a_read_made_while_the_server_restarts_run_once_it_answers(
    stopped_later: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from miniengine.storage.postgres.store import PostgresStore

    server = stopped_later
    store = PostgresStore(server.create_database())
    try:
        store.write_sync(put_meta, "k", "before")
        assert store.read(get_meta, "k") == "before"
        failures = _ConnectFailures(monkeypatch)
        server.stop()
        results: dict[str, Any] = {}

        def write_then_read() -> None:
            try:
                results["write"] = store.write_sync(put_meta, "k", "during")
                results["read"] = store.read(get_meta, "k")
            except BaseException as exc:
                results["error"] = exc

        thread = threading.Thread(target=write_then_read)
        thread.start()
        # the write found the server gone and is waiting for it (not failed: no result yet)
        assert failures.first.wait(TIMEOUT)
        assert thread.is_alive() and not results
        server.start()
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        assert results == {"write": 1, "read": "during"}, results
        assert failures.count >= 1
        # the readers kept from before the restart were replaced, not failed on
        assert store.read(get_meta, "k") == "during"
    finally:
        store.close()


def test_a_server_that_stays_away_fails_the_write_unavailable_and_nothing_is_written(
    stopped_later: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from miniengine.storage.postgres import store as store_module

    server = stopped_later
    url = server.create_database()
    store = store_module.PostgresStore(url)
    try:
        store.write_sync(put_meta, "k", "kept")
        monkeypatch.setattr(store_module, "RETRY_SECONDS", 0.3)
        server.stop()
        with pytest.raises(
            DatabaseUnavailableError, match=r"could not be reached for 0\.3 s"
        ) as error:
            store.write_sync(put_meta, "k", "lost")
        assert server.password not in str(error.value)
        assert str(server.port) in str(error.value)  # it names the server
        with pytest.raises(DatabaseUnavailableError):
            store.read(get_meta, "k")
        server.start()
        assert store.read(get_meta, "k") == "kept"
        store.write_sync(put_meta, "k", "after")
        assert store.read(get_meta, "k") == "after"
    finally:
        store.close()


def test_once_the_server_stayed_away_for_the_whole_wait_later_writes_fail_at_once(
    stopped_later: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What queued up behind a long outage does not wait as long again, each in turn: the
    wait counts from the first connection the server refused."""
    from miniengine.storage.postgres import store as store_module

    server = stopped_later
    store = store_module.PostgresStore(server.create_database())
    try:
        monkeypatch.setattr(store_module, "RETRY_SECONDS", 0.5)
        store.read_patience = 0.5  # (set from RETRY_SECONDS when the store opened)
        failures = _ConnectFailures(monkeypatch)
        server.stop()
        with pytest.raises(DatabaseUnavailableError):
            store.write_sync(put_meta, "k", "first")
        waited = failures.count
        assert waited > 1  # it tried again while it waited
        with pytest.raises(DatabaseUnavailableError):
            store.write_sync(put_meta, "k", "second")
        with pytest.raises(DatabaseUnavailableError):
            store.read(get_meta, "k")
        assert failures.count == waited + 2  # one attempt each
        server.start()
        store.write_sync(put_meta, "k", "after")  # the next connection ends the outage
        assert store.read(get_meta, "k") == "after"
    finally:
        store.close()


def test_an_outage_that_ended_unnoticed_does_not_cut_the_wait_for_the_next_one(
    stopped_later: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store last saw the server refuse connections long ago, and nothing connected since
    it came back: a new restart is waited for in full, and a connection merely lost (the
    server up) gets a new one at once."""
    import time

    from miniengine.storage.postgres import store as store_module

    server = stopped_later
    store = store_module.PostgresStore(server.create_database())
    try:
        # a refused connection 100 s ago, the last one 50 s ago
        store._unreachable_since = time.monotonic() - 100
        store._last_refused = time.monotonic() - 50
        failures = _ConnectFailures(monkeypatch)
        server.stop()
        results: dict[str, Any] = {}

        def write() -> None:
            try:
                results["write"] = store.write_sync(put_meta, "k", "v")
            except BaseException as exc:
                results["error"] = exc

        thread = threading.Thread(target=write)
        thread.start()
        assert failures.first.wait(TIMEOUT)
        server.start()
        thread.join(TIMEOUT)
        assert results == {"write": 1}, results
        # the writer's session is ended, and the store saw a refusal just now, of an outage
        # that began 100 s ago (say, an async read's): the write connects again, not give up
        store.read(
            lambda connection: connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'miniengine' AND pid <> pg_backend_pid() "
                "AND query NOT LIKE 'LISTEN%%'"
            )
        )
        store._unreachable_since = time.monotonic() - 100
        store._last_refused = time.monotonic()
        assert store.write_sync(put_meta, "k", "w") == 1
        assert store.read(get_meta, "k") == "w"
    finally:
        store.close()


def test_closing_the_store_ends_a_write_waiting_for_the_server(
    stopped_later: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from miniengine.storage.postgres.store import PostgresStore

    server = stopped_later
    store = PostgresStore(server.create_database())
    failures = _ConnectFailures(monkeypatch)
    server.stop()
    outcome: dict[str, BaseException] = {}

    def write() -> None:
        try:
            store.write_sync(put_meta, "k", "never")
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=write)
    thread.start()
    assert failures.first.wait(TIMEOUT)
    store.close()  # takes the write lock: returns once the waiting write gave up
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    error = outcome["error"]
    assert isinstance(error, StoreError) and not isinstance(error, DatabaseUnavailableError)
    assert "the store is closed" in str(error)
    attempts = failures.count
    server.start()
    assert failures.count == attempts  # nothing connected after the close


def test_a_write_whose_server_went_down_at_its_commit_learns_after_the_restart_that_it_committed(
    stopped_later: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stops right after the ``COMMIT``: the store waits for it (longer than it waits
    for an answer from a server that is up) and asks it whether the write committed."""
    from miniengine.storage.postgres import store as store_module

    server = stopped_later
    store = store_module.PostgresStore(server.create_database())
    try:
        # a server that answers but cannot tell fails the write at once: the wait below is
        # the one for a server that does not answer
        monkeypatch.setattr(store_module, "COMMIT_STATUS_SECONDS", 0.0)
        # the session ends right after its COMMIT: the answer never arrives
        ended = store_module._COMMIT + b"; SELECT pg_terminate_backend(pg_backend_pid())"
        monkeypatch.setattr(store_module, "_COMMIT", ended)
        failures = _ConnectFailures(monkeypatch)
        asked = store._commit_status

        def down_while_asking(xid: int, until: float) -> str | None:
            server.stop()
            restart = threading.Thread(
                target=lambda: failures.first.wait(TIMEOUT) and server.start()
            )
            restart.start()
            try:
                return asked(xid, until)
            finally:
                restart.join(TIMEOUT)

        monkeypatch.setattr(store, "_commit_status", down_while_asking)
        runs: list[str] = []

        def counted(connection: Connection) -> int:
            runs.append("put")
            return put_meta(connection, "k", "once")

        assert store.write_sync(counted) == 1
        assert runs == ["put"]  # committed: not run again
        assert failures.count >= 1
        monkeypatch.undo()
        assert store.read(get_meta, "k") == "once"
    finally:
        store.close()


async def test_an_awaited_read_made_while_the_server_restarts_returns_once_it_answers(
    stopped_later: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read waits without blocking the loop: a ticker on the same loop keeps ticking."""
    from miniengine import aload_node
    from miniengine.storage.postgres import async_reads

    server = stopped_later
    url = server.create_database()
    monkeypatch.setenv("MINIENGINE_DB", url)
    _, node = await double.arun_get_node(Int(3))
    assert (await aload_node(node.pk, db=url)).pk == node.pk  # this loop's connection opened
    failed = anyio.Event()
    real_open = async_reads.PostgresAsyncReads._open

    async def counting_open(self: Any) -> Any:
        try:
            return await real_open(self)
        except StoreError:
            failed.set()
            raise

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.01)

    await anyio.to_thread.run_sync(server.stop)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(async_reads.PostgresAsyncReads, "_open", counting_open)
        async with anyio.create_task_group() as group:
            group.start_soon(tick)
            result: dict[str, Any] = {}

            async def read() -> None:
                result["node"] = await aload_node(node.pk, db=url)

            group.start_soon(read)
            await failed.wait()  # the read found the server gone and waits for it
            before = ticks
            assert not result
            await anyio.to_thread.run_sync(server.start)
            while "node" not in result:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert result["node"].pk == node.pk and result["node"].is_finished_ok
    assert ticks > before  # the loop ran while the read waited


async def test_a_worker_in_an_application_keeps_its_loop_running_while_the_server_is_down(
    stopped_later: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker embedded in an application reads on the application's loop (is work ready,
    are there kill or pause requests): those reads wait for the server in a thread, so the
    application goes on answering while the server is down, and the worker runs what is
    submitted once it is back."""
    import time

    from miniengine.daemon import Worker

    server = stopped_later
    url = server.create_database()
    monkeypatch.setenv("MINIENGINE_DB", url)
    failures = _ConnectFailures(monkeypatch)
    longest = 0.0  # the longest the loop went without running the ticker

    async def tick() -> None:
        nonlocal longest
        last = time.monotonic()
        while True:
            await anyio.sleep(0.005)
            now = time.monotonic()
            longest = max(longest, now - last)
            last = now

    async with Worker(db=url, slots=4), anyio.create_task_group() as group:
        group.start_soon(tick)
        await anyio.to_thread.run_sync(server.stop)
        try:
            # the worker's reads find the server gone, and wait for it (30 s at most)
            await anyio.to_thread.run_sync(failures.first.wait, TIMEOUT)
            await anyio.sleep(2.0)  # the outage lasts two seconds more
            outage_longest = longest
        finally:
            await anyio.to_thread.run_sync(server.start)
        # a blocked loop would not have run the ticker for the two seconds
        assert outage_longest < 1.0
        node = await asubmit(AddWorkChain, x=Int(4), y=Int(5))
        node = await anyio.to_thread.run_sync(lambda: await_node(node, timeout=TIMEOUT))
        assert node.is_finished_ok and node.outputs.result.value == 9
        group.cancel_scope.cancel()


def test_the_web_view_answers_503_while_the_server_is_down_and_reads_again_after(
    stopped_later: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from miniengine.storage.postgres import store as store_module
    from miniengine.web import create_app

    monkeypatch.setattr(store_module, "RETRY_SECONDS", 0.3)  # reads wait for the server that long
    server = stopped_later
    url = server.create_database()
    token = "outage-token-" + "x" * 24

    async def main() -> None:
        app = create_app(url, token=token)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://127.0.0.1:8765",
                headers={"authorization": f"token {token}"},
            ) as c:
                assert (await c.get("/api/processes")).status_code == 200
                await anyio.to_thread.run_sync(server.stop)
                down = await c.get("/api/processes")
                assert down.status_code == 503, down.text
                assert "could not be reached for 0.3 s" in down.json()["error"]
                assert down.headers["retry-after"] == "5"
                assert server.password not in down.text
                page = await c.get("/processes")
                assert page.status_code == 503 and "Database unavailable" in page.text
                await anyio.to_thread.run_sync(server.start)
                assert (await c.get("/api/processes")).status_code == 200

    anyio.run(main)


# processes -------------------------------------------------------------------------------------


def test_a_daemon_rides_out_a_server_restart_without_running_a_step_again(
    stopped_later: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers whose steps write while the server is down wait for it: no step runs twice,
    no process is handed back or ends EXCEPTED."""
    from tests.workchains.daemon_chains import GateWorkChain

    server = stopped_later
    url = server.create_database()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the daemon's files
    monkeypatch.setenv("MINIENGINE_DB", url)
    folder = tmp_path / "gates"
    folder.mkdir()
    with DaemonGuard(url) as daemon:
        daemon.start("--workers", "1", "--lease-timeout", "30")
        nodes = [submit(GateWorkChain, folder=Str(str(folder))) for _ in range(3)]
        [started] = wait_until(
            lambda: list(folder.glob("started.*")), TIMEOUT, "the worker at the gate"
        )
        wait_until(
            lambda: (folder / "steps").read_text().count("gate ") == 3,
            TIMEOUT,
            "the three steps at the gate",
        )
        server.stop()
        # released while the server is down: each step calls ``add`` inline and commits
        (folder / started.name.replace("started", "release")).touch()
        # the outage lasts one second: the workers' writes wait for the server meanwhile
        anyio.run(anyio.sleep, 1.0)
        server.start()
        for node in nodes:
            node = await_node(node, timeout=TIMEOUT)
            assert node.is_finished_ok, (node.process_state, node.exception)
            assert node.outputs.sum.value == 3
            assert [child.process_label for child in node.called] == ["add"]
        # every step ran once: the workers waited, nothing was handed back and replayed
        steps = (folder / "steps").read_text().splitlines()
        assert steps.count("setup") == 3 and steps.count("finalize") == 3
        assert len([line for line in steps if line.startswith("gate ")]) == 3
        daemon.cli("stop")


def test_a_daemon_stops_gracefully_while_the_server_is_down(
    stopped_later: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``daemon stop`` during an outage: the supervisor's reads (1 s at most) do not keep it
    from acting on SIGTERM, so it stops its workers (killing those still waiting for the server
    after the stop timeout: their leases run out) and ends on its own, within the stop
    command's wait, instead of being killed with them."""
    from miniengine.daemon.files import DaemonFiles

    server = stopped_later
    url = server.create_database()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MINIENGINE_DB", url)
    with DaemonGuard(url) as daemon:
        daemon.start("--workers", "2", "--stop-timeout", "1")
        server.stop()
        stopped = daemon.cli("stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        log = DaemonFiles(url).log_file.read_text()
        assert "daemon stopped" in log  # its own last words: it was not SIGKILLed


def test_a_step_failing_unavailable_is_handed_back_by_the_daemon_and_runs_again(
    backend_db: Path | str, tmp_path: Path
) -> None:
    from miniengine.daemon import Worker

    async def main() -> Any:
        async with Worker(db=backend_db, lease_timeout=5.0):
            node = await asubmit(UnavailableOnceWorkChain, folder=Str(str(tmp_path)), x=Int(21))
            return await await_node(node, timeout=TIMEOUT)

    node = anyio.run(main)
    assert node.is_finished_ok, (node.process_state, node.exception)
    assert node.outputs.result.value == 42
    assert (tmp_path / "runs").read_text().splitlines() == ["compute", "compute"]
    # the replayed step reused the call its first run had finished
    [double] = node.called
    assert double.is_finished_ok and double.outputs.result.value == 42


def _add_in_a_worker_whose_call_ends_fail(
    backend_db: Path | str, monkeypatch: pytest.MonkeyPatch, error: Exception, times: int
) -> tuple[Any, list[int]]:
    """An ``AddWorkChain`` run by a worker in which the first ``times`` writes that end a
    process (``finish_process_tx``, patched before the worker's store opens) raise ``error``;
    the node once terminated, and the pks whose end failed."""
    import importlib

    from miniengine.daemon import Worker
    from tests.services.sql import is_postgres

    rows = importlib.import_module(
        "miniengine.storage.postgres.rows" if is_postgres(backend_db) else "miniengine.storage.rows"
    )
    real = rows.finish_process_tx
    failed: list[int] = []

    def failing(connection: Connection, finish: Any) -> Any:
        if len(failed) < times:
            failed.append(finish.pk)
            raise error
        return real(connection, finish)

    monkeypatch.setattr(rows, "finish_process_tx", failing)

    async def main() -> Any:
        async with Worker(db=backend_db, lease_timeout=5.0):
            node = await asubmit(AddWorkChain, x=Int(1), y=Int(2))
            return await await_node(node, timeout=TIMEOUT)

    return anyio.run(main), failed


@pytest.mark.parametrize("error", [DatabaseLockedError, DatabaseUnavailableError])
def test_an_inline_call_whose_end_cannot_be_written_is_not_left_running_by_the_daemon(
    backend_db: Path | str, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    """The end of an inline calcfunction fails (rows or a file that stayed locked, a server
    away): the step fails with it, the worker hands the process back, and the call, which would
    stay RUNNING under the live worker for good, ends EXCEPTED; the replayed step calls afresh
    and the process finishes."""
    node, failed = _add_in_a_worker_whose_call_ends_fail(
        backend_db, monkeypatch, error("simulated: the end of the call could not be written"), 1
    )
    assert node.is_finished_ok, (node.process_state, node.exception)
    assert node.outputs.result.value == 3
    abandoned, called = sorted(node.called, key=lambda call: call.pk)
    assert abandoned.pk == failed[0] and abandoned.is_excepted
    # locked: ended by the hand-back; away: its own EXCEPT write went through (the server
    # answered it), with the failed end as its exception
    assert ("abandoned" if error is DatabaseLockedError else "simulated") in abandoned.exception
    assert called.is_finished_ok and called.outputs.result.value == 3
    assert not find_processes(state=["created", "running", "waiting"], db=backend_db)


def test_an_inline_call_left_running_ends_with_its_caller_excepted_by_the_daemon(
    backend_db: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both writes that end an inline calcfunction fail (a ``statement_timeout``, say): the
    step fails with a store error, the process ends EXCEPTED, and the call, which its own
    worker would otherwise hold RUNNING for good (a kill request goes to an owner that no
    longer runs it), is killed with it."""
    node, failed = _add_in_a_worker_whose_call_ends_fail(
        backend_db,
        monkeypatch,
        StoreError("simulated: canceling statement due to statement timeout"),
        2,
    )
    assert node.is_excepted and "statement timeout" in node.exception
    [call] = node.called
    assert failed == [call.pk, call.pk]  # its end, then its EXCEPTED end
    assert call.is_killed and f"its caller {node.pk} excepted" in (call.process_status or "")
    assert not find_processes(state=["created", "running", "waiting"], db=backend_db)


def test_in_run_mode_a_step_failing_unavailable_ends_the_process_excepted(
    backend_db: Path | str, tmp_path: Path
) -> None:
    """No daemon runs the process again: the script's run ends it, with the error."""
    with pytest.raises(DatabaseUnavailableError, match="simulated"):
        run(UnavailableOnceWorkChain, folder=Str(str(tmp_path)), x=Int(1))
    (node,) = find_processes(process_label="UnavailableOnceWorkChain")
    assert node.is_excepted and "DatabaseUnavailableError" in (node.exception or "")


def test_sessions_cut_every_50_ms_lose_nothing_and_run_nothing_twice(
    stopped_later: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends every session miniengine has on the database (the workers' writers,
    readers and listeners, and the client's) every 50 ms while a daemon runs the chaos suite's mixed
    workload and the client submits more: every transaction cut off runs again whole, or is
    learnt to have committed, so the chaos suite's invariants all hold."""
    import random

    import psycopg

    from miniengine import Float
    from tests.test_chaos import CHAINS, ChaosSize, active_count, check_database, workload
    from tests.workchains.chaos_chains import process_count

    server = stopped_later
    url = server.create_database()
    database = url.rsplit("/", 1)[1]
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MINIENGINE_DB", url)
    size = ChaosSize(
        fan_outs=1,
        nested=4,
        inline_chains=10,
        leaves=10,
        events=0,
        nap=0.02,
        finish_timeout=120,
        fan_out_width=20,
    )
    jobs = workload(size, random.Random(0))
    done = threading.Event()
    cut = [0]

    def cut_sessions() -> None:
        with psycopg.connect(
            host=str(server.socket_dir),
            port=server.port,
            user=server.run_as or getpass.getuser(),
            dbname="postgres",
            autocommit=True,
        ) as admin:
            while not done.wait(0.05):
                (ended,) = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = 'miniengine'",
                    (database,),
                ).fetchone()  # type: ignore[misc]
                cut[0] += ended

    submitted: list[int] = []
    with DaemonGuard(url) as daemon:
        daemon.start("--workers", "2")
        cutter = threading.Thread(target=cut_sessions)
        cutter.start()
        try:
            for label, inputs in jobs:
                values = {name: Int(value) for name, value in inputs.items()}
                submitted.append(submit(CHAINS[label], **values, nap=Float(size.nap)).pk)
            wait_until(
                lambda: active_count(url) == 0,
                size.finish_timeout,
                "every process to terminate",
                interval=0.1,
            )
        finally:
            done.set()
            cutter.join()
        assert daemon.cli("stop").returncode == 0
    found = check_database(url, submitted)
    expected = sum(process_count(label, inputs) for label, inputs in jobs)
    summary = (
        f"{cut[0]} sessions cut; processes {found.processes} ({expected} expected), lost "
        f"{found.lost[:3]}, orphans {found.orphans[:3]}, duplicates {found.duplicates[:3]}, "
        f"inconsistent {found.inconsistent[:3]}"
    )
    print(summary)
    assert cut[0] >= 20, summary  # the sessions were cut while the work ran
    assert not found.lost and not found.orphans, summary
    assert not found.duplicates and not found.inconsistent, summary
    assert found.processes == expected + found.cut_off, summary
