"""The PostgreSQL store on a private cluster: schema, transactions, the commit signal, leases."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from miniengine.exceptions import IncompatibleDatabaseError, NotExistent, StoreError
from miniengine.storage.open import open_backend, shared_backend
from miniengine.storage.paths import resolve_db
from miniengine.storage.postgres.store import PostgresStore
from miniengine.storage.postgres.transaction import PostgresTransaction
from miniengine.storage.store import Store
from tests.services.postgres import PostgresServer, get_meta, put_meta

psycopg = pytest.importorskip("psycopg")

Connection = Any  # psycopg.Connection[Any]


def _put_then_fail(connection: Connection, key: str) -> None:
    put_meta(connection, key, "never")
    raise ValueError("the step failed")


@pytest.fixture
def store(postgres_url: str) -> Any:
    opened = PostgresStore(postgres_url)
    yield opened
    opened.close()


# the store ---------------------------------------------------------------------------------------


def test_create_then_reopen(postgres_url: str) -> None:
    from miniengine.storage.postgres.schema import SCHEMA_VERSION, read_schema_version

    first = PostgresStore(postgres_url)
    try:
        assert first.read(read_schema_version) == SCHEMA_VERSION
        first.write_sync(put_meta, "greeting", "hello")
        assert ":***@" in first.location and "/test_" in first.location
        assert "***" in repr(first)
    finally:
        first.close()
    assert first.closed
    with pytest.raises(StoreError, match="closed"):
        first.write_sync(put_meta, "greeting", "again")
    second = PostgresStore(postgres_url)
    try:
        assert second.read(get_meta, "greeting") == "hello"
    finally:
        second.close()


def test_a_newer_schema_is_refused_without_the_password(postgres_url: str) -> None:
    from miniengine.storage.postgres.schema import SCHEMA_VERSION

    store = PostgresStore(postgres_url)
    store.write_sync(put_meta, "schema_version", str(SCHEMA_VERSION + 1))
    store.close()
    password = psycopg.conninfo.conninfo_to_dict(postgres_url)["password"]
    with pytest.raises(IncompatibleDatabaseError, match="newer miniengine") as error:
        PostgresStore(postgres_url)
    assert password not in str(error.value)


@pytest.mark.parametrize("value", ["abc", "-1", "0", None])
def test_a_schema_version_changed_by_hand_is_refused_in_one_line(
    postgres_url: str, value: str | None
) -> None:
    from tests.test_cli import cli

    store = PostgresStore(postgres_url)
    if value is None:
        store.write_sync(lambda c: c.execute("DELETE FROM miniengine_meta"))
    else:
        store.write_sync(put_meta, "schema_version", value)
    store.close()
    with pytest.raises(IncompatibleDatabaseError, match="changed by hand"):
        PostgresStore(postgres_url)
    for command in (("process", "list"), ("db", "migrate")):
        assert "changed by hand" in cli(*command, db=postgres_url).failed()


def test_an_unreachable_server_is_a_store_error_without_the_password(postgres_url: str) -> None:
    from tests.services.sshd import free_port

    url = f"postgresql://someone:hunter2@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StoreError, match="cannot connect") as error:
        PostgresStore(url)
    assert "hunter2" not in str(error.value) and ":***@" in str(error.value)
    # one line (libpq's hint on a line of its own is joined), the driver's reason kept
    assert "\n" not in str(error.value) and "Is the server running" in str(error.value)


def test_a_database_the_role_may_not_create_tables_in_says_the_role_must_own_it(
    postgres_server: PostgresServer,
) -> None:
    name = postgres_server.next_name()
    postgres_server.admin(f'CREATE DATABASE "{name}"')  # owned by the cluster's superuser
    try:
        with pytest.raises(StoreError, match="cannot create the schema") as error:
            PostgresStore(postgres_server.database_url(name))
        message = str(error.value)
        assert "the role must own the database" in message and "\n" not in message
    finally:
        postgres_server.drop_database(name)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://someone:hunter2@[::1:5432/nothing",  # libpq quotes the URL it cannot parse
        "postgresql://someone@127.0.0.1:5432/nothing?password=hunter2&broken",
        "postgresql://someone:hunter%32@127.0.0.1:5432/no thing",  # percent-encoded
        "postgresql://someone:hun@ter2@127.0.0.1:5432/nothing",  # an "@" in it, unescaped
        "POSTGRESQL://someone:hunter2@127.0.0.1:5432/nothing?x",  # capitals, then malformed
    ],
)
def test_a_malformed_url_is_refused_without_its_password_anywhere_in_the_message(
    url: str,
) -> None:
    with pytest.raises(StoreError, match="cannot connect") as error:
        PostgresStore(url)
    assert "hunter" not in str(error.value)


async def test_a_url_whose_scheme_is_in_capitals_opens_the_database(postgres_url: str) -> None:
    """URL schemes are case-insensitive, libpq's is not: the scheme is lower-cased first (libpq
    would refuse it, quoting the whole URL in its error)."""
    from miniengine import aload_node

    url = "POSTGRESQL" + postgres_url[len("postgresql") :]
    store = PostgresStore(url)
    try:
        store.write_sync(put_meta, "greeting", "hello")
        assert store.read(get_meta, "greeting") == "hello"
        with pytest.raises(NotExistent):
            await aload_node(10**6, db=url)  # the async connection opens too
    finally:
        store.close()


def test_every_connection_notices_a_vanished_server_unless_the_url_says_otherwise(
    postgres_url: str,
) -> None:
    """TCP keepalives and a limit on unacknowledged data (a failover that moved the address,
    a network dropping packets), on the writer, the readers and the async reads alike; an
    option the URL sets wins."""
    store = PostgresStore(postgres_url)
    try:
        writer = store._writer.info.get_parameters()
        reader = store.read(lambda connection: connection.info.get_parameters())
    finally:
        store.close()
    for parameters in (writer, reader):
        assert parameters["keepalives"] == "1" and parameters["keepalives_idle"] == "10"
        assert parameters["tcp_user_timeout"] == "30000"
        assert parameters["application_name"] == "miniengine"
    own = PostgresStore(f"{postgres_url}?keepalives_idle=60&connect_timeout=3")
    try:
        parameters = own._writer.info.get_parameters()
        assert parameters["keepalives_idle"] == "60" and parameters["connect_timeout"] == "3"
        assert parameters["keepalives_count"] == "3"

        async def async_parameters() -> dict[str, str]:
            connection = await own.async_reads._connection()
            return dict(connection.info.get_parameters())

        awaited = asyncio.run(async_parameters())
        assert awaited["keepalives_idle"] == "60" and awaited["tcp_user_timeout"] == "30000"
    finally:
        own.close()


def test_a_session_lost_while_the_store_opens_is_opened_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server answered, then ended the session (an administrator, a restart beginning):
    the open connects again instead of failing as if the server were down."""
    from miniengine.storage.postgres import schema

    real = schema.ensure_schema
    calls: list[int] = []

    def cut_once(connection: Connection, where: str) -> None:
        calls.append(1)
        if len(calls) == 1:
            with pytest.raises(psycopg.OperationalError):
                connection.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        real(connection, where)

    monkeypatch.setattr(schema, "ensure_schema", cut_once)
    store = PostgresStore(postgres_url)
    try:
        assert len(calls) == 2
        store.write_sync(put_meta, "k", "v")
        assert store.read(get_meta, "k") == "v"
    finally:
        store.close()


def test_a_transaction_commits_whole_or_not_at_all(store: PostgresStore) -> None:
    put = PostgresTransaction(store, put_meta)
    assert put("a", "1") == 1
    assert store.read(get_meta, "a") == "1"
    fail = PostgresTransaction(store, _put_then_fail)
    with pytest.raises(ValueError, match="the step failed"):
        fail("b")
    assert store.read(get_meta, "b") is None
    # the writer connection is usable again after the rollback
    assert put.deferring_interrupt("c", "3") == (1, None)
    assert store.read(get_meta, "c") == "3"
    assert "put_meta" in repr(put)


def test_a_sql_error_is_a_store_error_and_rolls_back(store: PostgresStore) -> None:
    def broken(connection: Connection) -> None:
        put_meta(connection, "d", "4")
        connection.execute("SELECT no_such_column FROM miniengine_meta")

    with pytest.raises(StoreError, match=r"write failed.*no_such_column"):
        store.write_sync(broken)
    assert store.read(get_meta, "d") is None
    with pytest.raises(StoreError, match="read failed"):
        store.read(lambda connection: connection.execute("SELECT nope").fetchone())


async def test_aio_commits_off_the_loop(store: PostgresStore) -> None:
    put = PostgresTransaction(store, put_meta)
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def put_here(connection: Connection, key: str) -> int:
        seen.append(threading.get_ident())
        return put_meta(connection, key, "async")

    assert await put.aio("e", "5") == 1
    assert await PostgresTransaction(store, put_here).aio("f") == 1
    assert seen and seen[0] != loop_thread
    assert store.read(get_meta, "e") == "5" and store.read(get_meta, "f") == "async"


def test_a_commit_elsewhere_wakes_a_waiting_thread(postgres_url: str) -> None:
    waiter = PostgresStore(postgres_url)
    writer = PostgresStore(postgres_url)
    try:
        marker = waiter.commit_marker()
        woke = threading.Event()
        waited: list[float] = []

        def wait() -> None:
            start = time.monotonic()
            waiter.wait_for_commit(marker, 30)
            waited.append(time.monotonic() - start)
            woke.set()

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.05)  # let it block (an early commit would only make it return sooner)
        committed = time.monotonic()
        writer.write_sync(put_meta, "g", "7")
        assert woke.wait(10)
        latency = time.monotonic() - committed
        thread.join()
        assert waiter.commit_marker() != marker
        assert latency < 1.0, latency  # well within 20 ms on an idle machine
        # a timeout without any commit returns the same marker
        marker = waiter.commit_marker()
        assert waiter.wait_for_commit(marker, 0.05) == marker
    finally:
        waiter.close()
        writer.close()


async def test_a_commit_elsewhere_wakes_an_awaiting_task(postgres_url: str) -> None:
    waiter = PostgresStore(postgres_url)
    writer = PostgresStore(postgres_url)
    try:
        marker = waiter.commit_marker()
        task = asyncio.create_task(waiter.await_commit(marker, 30))
        await asyncio.sleep(0.05)
        assert not task.done()
        start = time.monotonic()
        await PostgresTransaction(writer, put_meta).aio("h", "8")
        assert await asyncio.wait_for(task, 10) != marker
        assert time.monotonic() - start < 1.0
        marker = waiter.commit_marker()
        assert await waiter.await_commit(marker, 0.05) == marker
    finally:
        waiter.close()
        writer.close()


def test_closing_wakes_the_waiters(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    marker = store.commit_marker()
    thread = threading.Thread(target=store.wait_for_commit, args=(marker, 30))
    thread.start()
    time.sleep(0.05)
    start = time.monotonic()
    store.close()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - start < 5


def test_the_listener_comes_back_after_losing_its_connection(store: PostgresStore) -> None:
    def listeners(connection: Connection) -> list[int]:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
        ).fetchall()
        return [int(row[0]) for row in rows]

    pids = store.read(listeners)
    assert len(pids) == 1
    marker = store.commit_marker()
    store.write_sync(lambda connection: connection.execute("SELECT pg_terminate_backend(%s)", pids))
    # reconnected: the marker moves (commits may have been missed), and commits wake again
    marker = store.wait_for_commit(marker, 10)
    deadline = time.monotonic() + 10
    while store.read(listeners) in ([], pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    marker = store.commit_marker()
    store.write_sync(put_meta, "i", "9")
    assert store.wait_for_commit(marker, 10) != marker


def test_two_stores_creating_the_schema_at_once_both_succeed(postgres_url: str) -> None:
    barrier = threading.Barrier(2)
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(PostgresStore(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == [] and len(opened) == 2
        opened[0].write_sync(put_meta, "j", "10")
        assert opened[1].read(get_meta, "j") == "10"
    finally:
        for store in opened:
            store.close()


def test_a_deadlock_victim_runs_again_whole(postgres_url: str) -> None:
    first = PostgresStore(postgres_url)
    second = PostgresStore(postgres_url)
    try:
        first.write_sync(put_meta, "x", "0")
        first.write_sync(put_meta, "y", "0")
        both_hold_one = threading.Barrier(2, timeout=10)
        attempts: list[str] = []

        def swap(connection: Connection, mine: str, theirs: str, name: str) -> None:
            attempts.append(name)
            put_meta(connection, mine, name)
            if attempts.count(name) == 1:
                both_hold_one.wait()  # each holds one row lock and asks for the other's
            put_meta(connection, theirs, name)

        threads = [
            threading.Thread(target=first.write_sync, args=(swap, "x", "y", "first")),
            threading.Thread(target=second.write_sync, args=(swap, "y", "x", "second")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(attempts) == 3  # the victim ran twice, the other once
        x, y = first.read(get_meta, "x"), first.read(get_meta, "y")
        assert x == y and x in ("first", "second")  # one whole transaction won last
    finally:
        first.close()
        second.close()


def test_a_lock_timeout_of_the_server_is_waited_out_as_any_lock(postgres_url: str) -> None:
    """An administrator's ``lock_timeout`` (of the database or the role) makes the server end a
    write that waits for a lock: the write runs again, for its patience, instead of failing
    with "locked" at once (a daemon excepted processes for it)."""
    name = urlsplit(postgres_url).path.lstrip("/")
    holder = PostgresStore(postgres_url)
    holder.write_sync(lambda c: c.execute(f'ALTER DATABASE "{name}" SET lock_timeout = 50'))
    other = PostgresStore(postgres_url)  # its sessions start with the 50 ms lock_timeout
    try:
        assert other.read(lambda c: c.execute("SHOW lock_timeout").fetchone()[0]) == "50ms"
        with _holding_the_meta_row(holder) as release:
            threading.Timer(0.5, release.set).start()  # the lock lasts ten lock timeouts
            other.write_sync(put_meta, "k", "after")
        assert other.read(get_meta, "k") == "after"
    finally:
        holder.close()
        other.close()


@contextmanager
def _holding_the_meta_row(holder: PostgresStore) -> Iterator[threading.Event]:
    """A transaction of ``holder`` that has written meta row ``k`` and holds its lock until the
    event it yields is set (at the latest when the block ends)."""
    holding, release = threading.Event(), threading.Event()

    def hold(connection: Connection) -> None:
        put_meta(connection, "k", "held")
        holding.set()
        release.wait(30)

    thread = threading.Thread(target=holder.write_sync, args=(hold,))
    thread.start()
    try:
        assert holding.wait(10)
        yield release
    finally:
        release.set()
        thread.join(30)


def test_within_gives_up_on_a_held_lock(postgres_url: str) -> None:
    from miniengine.exceptions import DatabaseLockedError

    holder = PostgresStore(postgres_url)
    other = PostgresStore(postgres_url)
    try:
        holder.write_sync(put_meta, "k", "0")
        with _holding_the_meta_row(holder):
            start = time.monotonic()
            with pytest.raises(DatabaseLockedError, match="locked"):
                PostgresTransaction(other, put_meta).within(0.2, "k", "late")
            assert time.monotonic() - start < 5
        assert other.read(get_meta, "k") == "held"
    finally:
        holder.close()
        other.close()


def test_a_writer_stalled_inside_a_transaction_loses_its_session_and_its_locks(
    postgres_url: str,
) -> None:
    """A host that stops mid-transaction (SIGSTOP, a paused VM) would keep its row locks, and
    every other host's claim of those rows would wait for it.  The server ends such a session
    after half a lease: the others go on, and nothing of the stalled transaction commits.  When
    the stalled store resumes, it finds its session gone before it sent ``COMMIT`` and runs the
    transaction again whole on a new connection (the engine's writes of a process are fenced by
    its lease, so a worker whose lease was taken over meanwhile learns it then; this plain write
    is not fenced, so it commits after the other's)."""
    stalled = PostgresStore(postgres_url, lease_timeout=2.0)  # its sessions stall 1 s at most
    other = PostgresStore(postgres_url, lease_timeout=2.0)
    put = PostgresTransaction(other, put_meta)
    locked, resume = threading.Event(), threading.Event()
    runs: list[str] = []
    errors: list[BaseException] = []

    def hold(connection: Connection, key: str) -> None:
        runs.append(key)
        put_meta(connection, key, "stalled")  # the row is locked until this transaction ends
        locked.set()
        resume.wait(20)  # this process stops here, inside its transaction (the first time)
        put_meta(connection, key, "late")

    def run_stalled() -> None:
        try:
            stalled.write_sync(hold, "k")
        except StoreError as exc:
            errors.append(exc)

    try:
        put("k", "first")
        thread = threading.Thread(target=run_stalled)
        thread.start()
        assert locked.wait(10)
        put("k", "taken over")  # waits for the row only until the server ends the stall
        assert not resume.is_set() and other.read(get_meta, "k") == "taken over"
        resume.set()
        thread.join(20)
        assert errors == [] and runs == ["k", "k"]  # run again whole, once
        assert other.read(get_meta, "k") == "late"
        PostgresTransaction(stalled, put_meta)("j", "again")
        assert other.read(get_meta, "j") == "again"
    finally:
        resume.set()
        stalled.close()
        other.close()


def test_the_heartbeat_renews_this_owners_leases(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, lease_timeout=0.4, owner="me")

    def insert(connection: Connection, owner: str, expires: float) -> int:
        row = connection.execute(
            "INSERT INTO nodes (uuid, node_type, process_state, owner, lease_expires, ctime, "
            "mtime) VALUES (gen_random_uuid()::text, 'process', 'running', %s, %s, 0, 0) "
            "RETURNING pk",
            (owner, expires),
        ).fetchone()
        return int(row[0])

    def expiry(connection: Connection, pk: int) -> float:
        row = connection.execute("SELECT lease_expires FROM nodes WHERE pk = %s", (pk,))
        return float(row.fetchone()[0])

    try:
        mine = store.write_sync(insert, "me", 1.0)
        theirs = store.write_sync(insert, "someone else", 1.0)
        store.leases_taken()
        deadline = time.monotonic() + 10
        while store.read(expiry, mine) == 1.0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.read(expiry, mine) > time.time()
        assert store.read(expiry, theirs) == 1.0
        store.leases_released()
    finally:
        store.close()


def test_open_backend_chooses_by_location(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite = open_backend(tmp_path / "engine.sqlite")
    try:
        assert isinstance(sqlite, Store)
    finally:
        sqlite.close()
    postgres = open_backend(postgres_url, lease_timeout=3.0, owner="tester")
    try:
        assert isinstance(postgres, PostgresStore)
        assert postgres.owner == "tester" and postgres.lease_timeout == 3.0
    finally:
        postgres.close()
    monkeypatch.setenv("MINIENGINE_DB", postgres_url)
    assert resolve_db() == postgres_url
    shared = shared_backend()
    assert shared is shared_backend(postgres_url) and isinstance(shared, PostgresStore)
    with pytest.raises(StoreError, match="not supported"):
        resolve_db("mysql://example/db")


def test_the_writer_and_a_reader_connect_again_after_the_server_dropped_them(
    store: PostgresStore, postgres_url: str
) -> None:
    store.write_sync(put_meta, "l", "before")
    assert store.read(get_meta, "l") == "before"
    backends = store.read(
        lambda connection: [
            int(row[0])
            for row in connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND query NOT LIKE 'LISTEN%%'"
            )
        ]
    )
    other = psycopg.connect(postgres_url, autocommit=True)
    try:
        for pid in backends:  # the writer and this thread's reader, idle between statements
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        other.close()
    store.write_sync(put_meta, "l", "after")  # nothing was sent on the lost one: run on a new one
    assert store.read(get_meta, "l") == "after"  # the read fails once, then runs on a new reader


def test_a_reader_checks_the_schema_and_never_writes(postgres_url: str) -> None:
    from miniengine.exceptions import ReadOnlyDatabaseError
    from miniengine.storage.postgres.reader import PostgresReader
    from miniengine.storage.postgres.schema import SCHEMA_VERSION

    with pytest.raises(StoreError, match="no miniengine database"):
        PostgresReader(postgres_url)
    store = PostgresStore(postgres_url)
    store.write_sync(put_meta, "m", "stored")
    store.close()
    with PostgresReader(postgres_url) as reader:
        assert reader.check() == SCHEMA_VERSION and "***" in repr(reader)
        assert reader.read(get_meta, "m") == "stored"
        assert reader.queries.counts().nodes == 0
        with pytest.raises(ReadOnlyDatabaseError, match="read only"):
            reader.provenance.update_label(1, "label", "description")
        with pytest.raises(ReadOnlyDatabaseError):  # the server refuses a write as well
            reader.read(put_meta, "m", "changed")
        reader.vacuum()
        assert reader.read(get_meta, "m") == "stored"
    store = PostgresStore(postgres_url)
    store.write_sync(put_meta, "schema_version", str(SCHEMA_VERSION + 1))
    store.close()
    with pytest.raises(IncompatibleDatabaseError, match="newer miniengine"):
        PostgresReader(postgres_url)


def test_reads_from_many_threads_share_a_few_connections(store: PostgresStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from miniengine.storage.postgres import store as store_module

    def backends(connection: Connection) -> int:
        time.sleep(0.01)  # long enough for the reads of the threads to overlap
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchone()
        return int(row[0])

    with ThreadPoolExecutor(max_workers=64) as pool:
        seen = list(pool.map(lambda _: store.read(backends), range(200)))
    # the writer, the listener and at most MAX_READERS readers, never a connection per thread
    assert max(seen) <= store_module.MAX_READERS + 2
    assert len(store._idle_readers) <= store_module.MAX_IDLE_READERS


def test_a_closed_store_refuses_to_wait(backend_db: Path | str) -> None:
    store = open_backend(backend_db)
    marker = store.commit_marker()  # this thread's reader is open (sqlite)
    store.close()
    with pytest.raises(StoreError, match="closed") as raised:
        store.wait_for_commit(marker, 0.01)
    assert _shown(backend_db) in str(raised.value)
    with pytest.raises(StoreError, match="closed"):
        store.commit_marker()

    async def awaits() -> None:
        await store.await_commit(marker, 0.01)

    with pytest.raises(StoreError, match="closed"):
        asyncio.run(awaits())


#: A host whose clock is an hour ahead: it tries to take a live lease and to recover it as
#: expired, takes a free process, and once another host has taken that over, writes a step.
_HOST_AHEAD = """
import sys, time
real_time = time.time
time.time = lambda: real_time() + 3600.0  # this host's clock only
from miniengine.exceptions import LeaseLostError
from miniengine.storage.interfaces.checkpoints import StepCommit
from miniengine.storage.postgres.store import PostgresStore
url, live, free = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = PostgresStore(url, owner="ahead", lease_timeout=1.0)
try:
    store.checkpoints.claim_process(live, "ahead", store.lease_expiry(), "running")
    print("took a live lease", flush=True)
except LeaseLostError as exc:
    print("refused:", exc, flush=True)
print("recovered:", tuple(store.broker.recover_expired(time.time())), flush=True)
print("epoch:", store.checkpoints.claim_process(free, "ahead", store.lease_expiry(), "running"),
      flush=True)
sys.stdin.readline()  # its lease lapsed meanwhile and another host took the process over
try:
    store.checkpoints.step_commit(StepCommit(free, "ahead", 1, "running", "stale", 1, b"x"))
    print("wrote past fencing", flush=True)
except LeaseLostError as exc:
    print("fenced:", exc, flush=True)
store.close()
"""


def test_a_host_whose_clock_is_ahead_neither_takes_a_live_lease_nor_keeps_its_own(
    postgres_url: str,
) -> None:
    """Leases are set and compared on the server's clock: a host an hour ahead sees another
    host's live lease as live, and the lease it takes lasts its timeout, not an hour more."""
    import subprocess
    import sys

    from miniengine.storage.postgres import rows as pg_rows
    from tests.test_postgres_sql import _new_process

    store = PostgresStore(postgres_url, owner="here", lease_timeout=60.0)
    try:
        live, _ = store.write_sync(
            pg_rows.begin_process_tx, _new_process("here", store.lease_expiry(), submitted=True)
        )
        free, _ = store.write_sync(pg_rows.begin_process_tx, _new_process(submitted=True))
        ahead = subprocess.Popen(
            [sys.executable, "-c", _HOST_AHEAD, postgres_url, str(live), str(free)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert ahead.stdin is not None and ahead.stdout is not None
        try:
            assert ahead.stdout.readline().startswith(f"refused: process {live} is owned by here")
            assert ahead.stdout.readline().strip() == "recovered: (0, 0, 0)"
            assert ahead.stdout.readline().strip() == "epoch: 1"

            def lease_left(pk: int) -> tuple[str, int, float]:
                def read(connection: Any) -> tuple[str, int, float]:
                    row = connection.execute(
                        "SELECT owner, lease_epoch, lease_expires - "
                        "date_part('epoch', statement_timestamp()) FROM nodes WHERE pk = %s",
                        (pk,),
                    ).fetchone()
                    return row[0], int(row[1]), float(row[2])

                return store.read(read)

            owner, epoch, left = lease_left(live)
            assert (owner, epoch) == ("here", 1) and 50 < left <= 60
            owner, epoch, left = lease_left(free)
            assert owner == "ahead" and left <= 1.0  # its timeout, not an hour and a second
            time.sleep(max(left, 0) + 0.2)  # it lapses on the server's clock: take it over
            assert (
                store.checkpoints.claim_process(free, "here", store.lease_expiry(), "running") == 2
            )
            ahead.stdin.write("\n")
            ahead.stdin.flush()
            assert ahead.stdout.readline().startswith(
                f"fenced: process {free} is no longer owned by ahead at epoch 1"
            )
            assert ahead.wait(timeout=60) == 0
        finally:
            if ahead.poll() is None:
                ahead.kill()
                ahead.wait()
    finally:
        store.close()


# the engine on both backends ---------------------------------------------------------------------


def test_run_mode_on_both_backends(backend_db: Path | str) -> None:
    from miniengine import Int, run
    from tests.workchains.daemon_chains import AddWorkChain, NestedWorkChain, add

    result, node = run.get_node(add, Int(1), Int(2))
    assert result == 3 and node.is_finished_ok
    assert node.store is not None and node.store.location == _shown(backend_db)
    result, node = run.get_node(AddWorkChain, x=Int(4), y=Int(5))
    assert result["result"] == 9 and node.is_finished_ok
    assert [child.process_label for child in node.called] == ["add"]
    result, node = run.get_node(NestedWorkChain, inp=Int(5))
    assert node.is_finished_ok and result["output"] == 5


async def test_a_worker_runs_what_is_submitted_on_both_backends(backend_db: Path | str) -> None:
    from miniengine import Int, ProcessState, asubmit, await_node
    from miniengine.daemon import Worker
    from tests.workchains.daemon_chains import LeafWorkChain, NestedWorkChain

    async with Worker(db=backend_db, lease_timeout=5.0) as worker:
        deadline = time.monotonic() + 10
        while worker.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        node = await asubmit(LeafWorkChain, x=Int(7))
        while node.process_state is ProcessState.CREATED and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        picked_up = time.perf_counter() - started
        await await_node(node, timeout=30)
        nested = await asubmit(NestedWorkChain, inp=Int(3))
        await await_node(nested, timeout=60)
    assert node.is_finished_ok and node.outputs.x.value == 7
    assert nested.is_finished_ok
    print(f"picked up after {picked_up * 1000:.1f} ms")


def test_the_operators_queries_answer_alike_on_both_backends(backend_db: Path | str) -> None:
    from miniengine import Int, run
    from miniengine.core.links import LinkType
    from miniengine.storage.schema import SCHEMA_VERSION
    from tests.workchains.daemon_chains import AddWorkChain

    _, node = run.get_node(AddWorkChain, x=Int(4), y=Int(5))
    queries = shared_backend(backend_db).queries
    listed = queries.list_processes(None, None, None)
    assert [row.process_label for row in listed] == ["add", "AddWorkChain"]
    assert listed[0].caller == node.pk  # the call link names the caller
    assert queries.list_processes(["finished"], None, 1)[0].process_label == "add"
    view = queries.node(node.pk)
    assert view is not None and view.process_label == "AddWorkChain"
    assert queries.node(10**6) is None and queries.node(2**70) is None
    assert queries.uuid_matches(node.uuid) == [node.pk]
    inputs = queries.linked_nodes(node.pk, incoming=True, link_types=[LinkType.INPUT_WORK.value])
    assert sorted(linked.link_label for linked in inputs) == ["x", "y"]
    tree = queries.subtree(node.pk, None)
    assert [(row.depth, row.process_label) for row in tree] == [(0, "AddWorkChain"), (1, "add")]
    assert queries.subtree(node.pk, 0)[0].pk == node.pk and len(queries.subtree(node.pk, 0)) == 1
    assert queries.log_count(node.pk) == len(queries.subtree_logs(node.pk, 0))
    counts = queries.counts()
    assert counts.processes == {"finished": 2} and counts.paused == 0
    assert counts.nodes == 5  # x, y, the WorkChain, add and the sum it returned
    assert counts.queue is not None and counts.queue.ready == 0
    assert queries.schema_version() == SCHEMA_VERSION
    assert queries.integrity_check() == "ok"


def test_the_commands_take_a_postgresql_url_and_never_show_its_password(
    postgres_url: str, postgres_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import os
    import subprocess
    import sys

    from miniengine import Int, run
    from tests.workchains.daemon_chains import AddWorkChain

    monkeypatch.setenv("MINIENGINE_DB", postgres_url)
    _, node = run.get_node(AddWorkChain, x=Int(1), y=Int(2))
    environment = {**os.environ, "MINIENGINE_DB": postgres_url}

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "miniengine", *args],
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert postgres_server.password not in done.stdout + done.stderr
        return done

    listed = command("process", "list", "--all")
    assert listed.returncode == 0, listed.stderr
    assert "AddWorkChain" in listed.stdout and "add" in listed.stdout
    shown = command("process", "show", str(node.pk))
    assert shown.returncode == 0 and "AddWorkChain" in shown.stdout, shown.stderr
    migrated = command("db", "migrate", "--db", postgres_url)
    assert migrated.returncode == 0 and "is current" in migrated.stdout, migrated.stderr
    assert ":***@" in migrated.stdout
    info = command("db", "info", "--json")
    assert info.returncode == 0, info.stderr
    counted = json.loads(info.stdout)
    assert counted["process_nodes"] == 2 and counted["processes"]["finished"] == 2
    assert counted["size_bytes"] is None and ":***@" in counted["path"]
    assert "n/a" in command("db", "info").stdout
    missing = command("process", "show", "999999")
    assert missing.returncode != 0 and "999999" in missing.stderr


def test_the_process_commands_print_the_same_on_both_backends(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import os
    import re
    import subprocess
    import sys

    from miniengine import Int, run
    from miniengine.storage.open import close_all_backends
    from tests.workchains.daemon_chains import AddWorkChain, NestedWorkChain

    def fill(db: Path | str) -> list[int]:
        monkeypatch.setenv("MINIENGINE_DB", str(db))
        _, added = run.get_node(AddWorkChain, x=Int(1), y=Int(2))
        _, nested = run.get_node(NestedWorkChain, inp=Int(2))
        close_all_backends()
        return [added.pk, nested.pk]

    def outputs(db: Path | str, pks: list[int]) -> list[str]:
        def command(*args: str) -> str:
            done = subprocess.run(
                [sys.executable, "-m", "miniengine", "process", *args],
                capture_output=True,
                text=True,
                env={**os.environ, "MINIENGINE_DB": str(db)},
                timeout=120,
                stdin=subprocess.DEVNULL,
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        printed = [command("list", "--all", "--json")]
        for pk in pks:
            printed += [command("show", str(pk), "--json"), command("status", str(pk))]
            printed.append(command("report", str(pk)))
        # what differs by nature: uuids and times
        uuid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
        shown = [re.sub(uuid, "UUID", text) for text in printed]
        shown = [re.sub(r"\d{4}-\d\d-\d\d[ T][\d:.+]+", "TIME", text) for text in shown]
        shown = [re.sub(r"\b\d+(\.\d+)?\s?(ms|s)\b", "DURATION", text) for text in shown]
        json.loads(shown[0])
        return shown

    sqlite = tmp_path / "engine.sqlite"
    pks = fill(sqlite)
    assert fill(postgres_url) == pks  # the same pks: identities count as sqlite does
    for on_sqlite, on_postgres in zip(
        outputs(sqlite, pks), outputs(postgres_url, pks), strict=True
    ):
        assert on_postgres == on_sqlite


def test_the_demo_runs_on_postgresql_with_its_daemon(
    postgres_url: str, postgres_server: Any, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    done = subprocess.run(
        [sys.executable, "-m", "miniengine", "demo", "--db", postgres_url],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(home)},  # the daemon's files go under ~/.miniengine
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "output = 5" in done.stdout and "stopped the daemon" in done.stdout
    assert postgres_server.password not in done.stdout + done.stderr


def test_a_node_opens_its_closed_store_again_on_both_backends(backend_db: Path | str) -> None:
    from miniengine import Int, load_node, run
    from miniengine.storage.open import close_all_backends
    from tests.workchains.daemon_chains import AddWorkChain

    _, node = run.get_node(AddWorkChain, x=Int(2), y=Int(3))
    loaded = load_node(node.pk)
    close_all_backends()
    assert loaded.is_finished_ok and loaded.outputs.result.value == 5
    assert loaded.store is not None and not loaded.store.closed


# the private cluster of the tests ----------------------------------------------------------------


def test_the_cluster_runs_unprivileged_and_no_command_line_holds_the_password(
    postgres_server: Any, postgres_url: str
) -> None:
    import os

    password = postgres_server.password
    assert password in postgres_url
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                command = stream.read().replace(b"\0", b" ").decode(errors="replace")
            owner = os.stat(f"/proc/{entry}").st_uid
        except OSError:
            continue  # ended meanwhile
        assert password not in command, command
        if command.startswith(str(postgres_server.bin / "postgres")):
            assert owner != 0  # as root the server runs as Debian's postgres user
    # a fresh database per test: empty, owned by the role, reachable with the password only
    with psycopg.connect(postgres_url) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
        assert tables == (0,)
    wrong = postgres_url.replace(password, "wrong")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(wrong).close()


def _shown(location: Path | str) -> str:
    from miniengine.storage.postgres.connection import without_password

    return str(location) if isinstance(location, Path) else without_password(location)


def test_db_backup_of_a_url_names_pg_dump_and_db_copy(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from miniengine.__main__ import main
    from miniengine.storage.postgres.connection import without_password

    target = tmp_path / "backup.sqlite"
    assert main(["db", "backup", str(target), "--db", postgres_url]) != 0
    message = capsys.readouterr().err
    assert without_password(postgres_url) in message
    assert "pg_dump" in message and "miniengine db copy" in message
    assert not target.exists()
