"""Writes waiting for the sqlite store's write lock commit together; when one of them fails,
each runs again in a transaction of its own.

A daemon worker's step threads queue dozens of writes behind the lock; the thread that gets it
runs them all in one transaction.  What must hold: each caller returns only once its own write is
committed, with its own result or its own error; a write that fails is rolled back alone; and
the main thread (where a Ctrl-C lands) never runs another thread's write.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from miniengine.exceptions import StoreError
from miniengine.storage.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Any:
    store = Store(tmp_path / "engine.sqlite")
    store.write_sync(lambda c: c.execute("CREATE TABLE things (name TEXT PRIMARY KEY)"))
    yield store
    store.close()


def _names(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM things")}


def _queue_behind_the_lock(
    store: Store, writes: dict[str, Callable[[sqlite3.Connection], Any]]
) -> dict[str, Any]:
    """Start one thread per write while the test holds the write lock, wait until all of them
    are queued, then let them go; the outcome (result or exception) of each."""
    outcomes: dict[str, Any] = {}

    def call(name: str, fn: Callable[[sqlite3.Connection], Any]) -> None:
        try:
            outcomes[name] = store.write_sync(fn)
        except Exception as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=call, args=item) for item in writes.items()]
    with store._write_lock:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(store._queued) < len(writes):
            assert time.monotonic() < deadline, "the writes never queued up"
            time.sleep(0.001)
    for thread in threads:
        thread.join(30)
    return outcomes


def _insert(name: str) -> Callable[[sqlite3.Connection], Any]:
    def write(connection: sqlite3.Connection) -> Any:
        connection.execute("INSERT INTO things VALUES (?)", (name,))
        return name, threading.get_ident()

    return write


def test_queued_writes_are_committed_together_by_one_thread(store: Store) -> None:
    names = [f"w{i}" for i in range(12)]
    outcomes = _queue_behind_the_lock(store, {name: _insert(name) for name in names})
    assert [outcomes[name][0] for name in names] == names  # each caller got its own result
    assert len({outcomes[name][1] for name in names}) == 1  # all ran in one thread
    assert _names(store.path) == set(names)


def test_a_failing_write_in_a_group_is_rolled_back_alone(store: Store) -> None:
    def half_then_fail(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO things VALUES ('half')")
        raise ValueError("the value of 'half' is wrong")

    def duplicate(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO things VALUES ('dup-first')")
        connection.execute("INSERT INTO things VALUES ('a')")  # 'a' is queued before it

    writes: dict[str, Callable[[sqlite3.Connection], Any]] = {
        "a": _insert("a"),
        "half": half_then_fail,
        "b": _insert("b"),
        "dup": duplicate,
        "c": _insert("c"),
    }
    outcomes = _queue_behind_the_lock(store, writes)
    assert isinstance(outcomes["half"], ValueError)
    assert "'half'" in str(outcomes["half"])
    assert isinstance(outcomes["dup"], StoreError)
    assert "UNIQUE" in str(outcomes["dup"])
    assert {outcomes[name][0] for name in "abc"} == {"a", "b", "c"}
    # neither the failed writes' first rows nor anything else of theirs was committed
    assert _names(store.path) == {"a", "b", "c"}


def test_the_main_thread_runs_only_its_own_write(store: Store) -> None:
    from miniengine.storage.store import _QueuedWrite

    # writes of other threads, queued (as if their threads were waiting for the lock)
    queued = [_QueuedWrite(_insert(f"t{i}"), ()) for i in range(3)]
    store._queued.extend(queued)
    store.write_sync(_insert("main"))
    assert not any(write.done for write in queued)
    assert _names(store.path) == {"main"}
    # the next thread to write commits them with its own
    thread = threading.Thread(target=store.write_sync, args=(_insert("t3"),))
    thread.start()
    thread.join(30)
    assert all(write.done and write.error is None for write in queued)
    assert _names(store.path) == {"main", "t0", "t1", "t2", "t3"}
