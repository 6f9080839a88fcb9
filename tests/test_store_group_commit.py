"""Writes waiting for a store's write lock commit together; when one of them fails, each runs
again in a transaction of its own.  On sqlite and on PostgreSQL.

A daemon worker's step threads queue dozens of writes behind the lock; the thread that gets it
runs them all in one transaction.  What must hold: each caller returns only once its own write is
committed, with its own result or its own error; a write that fails is rolled back alone; the
main thread (where a Ctrl-C lands) never runs another thread's write; and on PostgreSQL a group
whose connection was lost runs again whole if nothing of it was committed (the connection lost
before its ``COMMIT``, or the server says the transaction was rolled back), and not at all if
the server says it committed or cannot tell.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from miniengine.exceptions import StoreError
from miniengine.storage.group_commit import QueuedWrite
from miniengine.storage.open import open_backend

pytestmark = pytest.mark.backends

Write = Callable[[Any], Any]


@pytest.fixture
def store(miniengine_db: Path | str) -> Iterator[Any]:
    store = open_backend(miniengine_db)
    store.write_sync(lambda c: c.execute("CREATE TABLE things (name TEXT PRIMARY KEY)"))
    yield store
    store.close()


def _postgres(store: Any) -> bool:
    return isinstance(store.location, str) and store.location.startswith("postgres")


def _names(store: Any) -> set[str]:
    return {row[0] for row in store.read(lambda c: c.execute("SELECT name FROM things").fetchall())}


def _queue_behind_the_lock(store: Any, writes: dict[str, Write]) -> dict[str, Any]:
    """Start one thread per write while the test holds the write lock, wait until all of them
    are queued, then let them go; the outcome (result or exception) of each."""
    outcomes: dict[str, Any] = {}

    def call(name: str, fn: Write) -> None:
        try:
            outcomes[name] = store.write_sync(fn)
        except Exception as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=call, args=item) for item in writes.items()]
    with store._write_lock:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(store._group.queued) < len(writes):
            assert time.monotonic() < deadline, "the writes never queued up"
            time.sleep(0.001)
    for thread in threads:
        thread.join(30)
    return outcomes


def _insert_statement(store: Any) -> str:
    return f"INSERT INTO things VALUES ({'%s' if _postgres(store) else '?'})"


def _insert(store: Any, name: str) -> Write:
    statement = _insert_statement(store)

    def write(connection: Any) -> Any:
        connection.execute(statement, (name,))
        return name, threading.get_ident()

    return write


def test_queued_writes_are_committed_together_by_one_thread(store: Any) -> None:
    names = [f"w{i}" for i in range(12)]
    outcomes = _queue_behind_the_lock(store, {name: _insert(store, name) for name in names})
    assert [outcomes[name][0] for name in names] == names  # each caller got its own result
    assert len({outcomes[name][1] for name in names}) == 1  # all ran in one thread
    assert _names(store) == set(names)


def test_a_failing_write_in_a_group_is_rolled_back_alone(store: Any) -> None:
    statement = _insert_statement(store)

    def half_then_fail(connection: Any) -> None:
        connection.execute(statement, ("half",))
        raise ValueError("the value of 'half' is wrong")

    def duplicate(connection: Any) -> None:
        connection.execute(statement, ("dup-first",))
        connection.execute(statement, ("a",))  # 'a' is queued before it

    writes: dict[str, Write] = {
        "a": _insert(store, "a"),
        "half": half_then_fail,
        "b": _insert(store, "b"),
        "dup": duplicate,
        "c": _insert(store, "c"),
    }
    outcomes = _queue_behind_the_lock(store, writes)
    assert isinstance(outcomes["half"], ValueError)
    assert "'half'" in str(outcomes["half"])
    assert isinstance(outcomes["dup"], StoreError)
    assert ("duplicate key" if _postgres(store) else "UNIQUE") in str(outcomes["dup"])
    assert {outcomes[name][0] for name in "abc"} == {"a", "b", "c"}
    # neither the failed writes' first rows nor anything else of theirs was committed
    assert _names(store) == {"a", "b", "c"}


def test_the_main_thread_runs_only_its_own_write(store: Any) -> None:
    # writes of other threads, queued (as if their threads were waiting for the lock)
    queued = [QueuedWrite(_insert(store, f"t{i}"), ()) for i in range(3)]
    store._group.queued.extend(queued)
    store.write_sync(_insert(store, "main"))
    assert not any(write.done for write in queued)
    assert _names(store) == {"main"}
    # the next thread to write commits them with its own
    thread = threading.Thread(target=store.write_sync, args=(_insert(store, "t3"),))
    thread.start()
    thread.join(30)
    assert all(write.done and write.error is None for write in queued)
    assert _names(store) == {"main", "t0", "t1", "t2", "t3"}


def _counted(store: Any, runs: list[str], name: str) -> Write:
    insert = _insert(store, name)

    def write(connection: Any) -> Any:
        runs.append(name)
        return insert(connection)

    return write


def test_a_group_cut_off_before_its_commit_runs_again_whole(store: Any) -> None:
    """The server ends a session that waits inside a transaction for too long (a worker
    stopped by SIGSTOP): nothing of it was committed, so the group runs again on a new
    connection and every write succeeds once."""
    if not _postgres(store):
        pytest.skip("a sqlite connection is not lost while its process lives")
    runs: list[str] = []

    def cut_off_once(connection: Any) -> str:
        runs.append("cut")
        if runs.count("cut") == 1:
            connection.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return "cut"

    writes = {"a": _counted(store, runs, "a"), "cut": cut_off_once, "b": _counted(store, runs, "b")}
    outcomes = _queue_behind_the_lock(store, writes)
    assert not any(isinstance(outcome, Exception) for outcome in outcomes.values()), outcomes
    assert runs == ["a", "cut", "a", "cut", "b"]
    assert _names(store) == {"a", "b"}


def test_a_group_whose_session_ended_before_its_commit_arrived_runs_again_whole(
    store: Any, miniengine_db: Path | str
) -> None:
    """The session ends after every write ran, so it is the ``COMMIT`` that finds the
    connection lost: the server, asked on a new connection, says the transaction was rolled
    back, and the group runs again whole; each write is committed once."""
    if not _postgres(store):
        pytest.skip("a sqlite connection is not lost while its process lives")
    import psycopg

    runs: list[str] = []

    def end_the_session_once(connection: Any) -> None:
        runs.append("end")
        if runs.count("end") == 1:  # ended from another session, waiting until it is gone
            pid = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
            with psycopg.connect(str(miniengine_db), autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))

    writes = {"a": _counted(store, runs, "a"), "b": _counted(store, runs, "b")}
    writes["end"] = end_the_session_once
    outcomes = _queue_behind_the_lock(store, writes)
    assert not any(isinstance(outcome, Exception) for outcome in outcomes.values()), outcomes
    assert sorted(runs) == ["a", "a", "b", "b", "end", "end"]
    assert _names(store) == {"a", "b"}


def test_a_group_whose_connection_was_lost_after_its_commit_is_not_run_again(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``COMMIT`` is done when the connection is lost: the server, asked on a new
    connection, says so, and each write returns its result without running again (it would be
    stored twice)."""
    if not _postgres(store):
        pytest.skip("a sqlite connection is not lost while its process lives")
    from miniengine.storage.postgres import store as postgres_store

    commit = postgres_store._COMMIT + b"; SELECT pg_terminate_backend(pg_backend_pid())"
    monkeypatch.setattr(postgres_store, "_COMMIT", commit)
    runs: list[str] = []
    writes = {name: _counted(store, runs, name) for name in ("a", "b", "c")}
    outcomes = _queue_behind_the_lock(store, writes)
    assert {name: outcome[0] for name, outcome in outcomes.items()} == {
        "a": "a",
        "b": "b",
        "c": "c",
    }, outcomes
    assert sorted(runs) == ["a", "b", "c"]
    monkeypatch.undo()
    assert _names(store) == {"a", "b", "c"}
    # the store connects again for the next write
    store.write_sync(_insert(store, "after"))
    assert _names(store) == {"a", "b", "c", "after"}


def _commit_lost_with_unknown_outcome(
    store: Any, monkeypatch: pytest.MonkeyPatch, answer: Callable[[], None]
) -> None:
    """Three writes grouped; the session ends right after their ``COMMIT`` (which went
    through), and asking the server about it ends with ``answer()`` (on a new connection, as
    always): every write must fail as "unknown", and none may run again."""
    if not _postgres(store):
        pytest.skip("a sqlite connection is not lost while its process lives")
    from miniengine.storage.postgres import store as postgres_store

    commit = postgres_store._COMMIT + b"; SELECT pg_terminate_backend(pg_backend_pid())"
    monkeypatch.setattr(postgres_store, "_COMMIT", commit)

    def asked(xid: int, until: float) -> None:
        store._writer_connection()
        answer()

    monkeypatch.setattr(store, "_commit_status", asked)
    runs: list[str] = []
    writes = {name: _counted(store, runs, name) for name in ("a", "b", "c")}
    outcomes = _queue_behind_the_lock(store, writes)
    for name, outcome in outcomes.items():
        assert isinstance(outcome, StoreError), (name, outcome)
        assert "whether it was committed is unknown" in str(outcome)
    assert sorted(runs) == ["a", "b", "c"]  # once each, in the group
    monkeypatch.undo()
    assert _names(store) == {"a", "b", "c"}


def test_a_group_whose_commit_the_server_cannot_confirm_is_not_run_again(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is lost at ``COMMIT`` and the server cannot say whether the transaction
    committed: every write of the group fails saying so, and none runs again (here the group
    had committed: a second run would store each write twice)."""
    _commit_lost_with_unknown_outcome(store, monkeypatch, lambda: None)


def test_a_group_whose_store_closed_while_asking_about_its_commit_is_not_run_again(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the store ends the question about a lost ``COMMIT`` unanswered: that is an
    unknown outcome too, and no write of the group runs again."""

    def closed() -> None:
        raise StoreError(f"{store.location}: the store is closed")

    _commit_lost_with_unknown_outcome(store, monkeypatch, closed)
