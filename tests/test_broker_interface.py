"""The broker and events concerns of a backend (``store.broker``, ``store.events``) and its one
"something committed" wait: typed records in, typed records out, on sqlite and on PostgreSQL.

The daemon (workers, supervisor, ``daemon status``), state-change subscriptions and the testing
gates reach the queue and the events through these methods only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from miniengine import Int
from miniengine.storage.interfaces import Backend
from miniengine.storage.interfaces.broker import (
    QueueDepth,
    RecoveryCounts,
    Released,
    TaskClaim,
    WorkerRow,
)
from miniengine.storage.interfaces.events import StateChange, Watcher
from miniengine.storage.interfaces.provenance import NewProcess
from miniengine.storage.open import open_backend


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "broker.sqlite")
    pytest.importorskip("psycopg")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(location: str) -> Iterator[Backend]:
    opened = open_backend(location, lease_timeout=0.4)
    try:
        yield opened
    finally:
        opened.close()


def begin(store: Backend, owner: str | None = None, expires: float | None = None) -> int:
    """A running process (submitted, as the daemon's are) held by ``owner``."""
    pk, _ = store.provenance.begin_process(
        NewProcess(
            uuid=f"{time.monotonic_ns():032x}",
            node_type="process.workflow.workchain",
            process_type="tests.p",
            process_label="p",
            process_state="running",
            label="",
            description="",
            inputs=[("x", Int(1))],
            input_link_type="input_work",
            owner=owner,
            lease_expires=expires,
            submitted=True,
        )
    )
    return pk


def test_a_task_is_enqueued_once_claimed_and_acknowledged(store: Backend) -> None:
    pk = begin(store)
    now = time.time()
    assert store.broker.enqueue(pk, f"start:{pk}", now) is True
    assert store.broker.enqueue(pk, f"start:{pk}", now) is False  # the same key: a no-op
    assert store.broker.queue_depth() == QueueDepth(ready=1, leased=0)
    assert store.broker.has_ready_task(time.time())

    [claim] = store.broker.claim_tasks("worker:a", 10, time.time() + 10, time.time(), True)
    assert isinstance(claim, TaskClaim)
    assert (claim.process_pk, claim.attempts) == (pk, 1)
    assert store.broker.queue_depth() == QueueDepth(ready=0, leased=1)
    assert not store.broker.has_ready_task(time.time())
    assert store.broker.runs_alone(claim.task_pk, "worker:a") is False  # first claim

    store.broker.ack(claim.task_pk)
    assert store.broker.queue_depth() == QueueDepth(0, 0)


def test_a_task_not_before_a_time_waits_for_it(store: Backend) -> None:
    pk = begin(store)
    store.broker.enqueue(pk, "later", time.time(), time.time() + 3600)
    assert not store.broker.has_ready_task(time.time())
    assert store.broker.claim_tasks("worker:a", 10, time.time() + 10, time.time(), True) == []
    assert store.broker.queue_depth().ready == 0


def test_workers_register_heartbeat_and_are_released(store: Backend) -> None:
    started = time.time()
    store.broker.register_worker("worker:a", 4242, 7, started)
    busy = 3
    store.broker.renew_on_heartbeat("worker:a", lambda: busy)
    pk = begin(store, "worker:a", time.time() + 10)
    store.broker.enqueue(pk, f"start:{pk}", time.time())
    store.broker.claim_tasks("worker:a", 10, time.time() + 10, time.time(), True)

    [row] = store.broker.workers()
    assert isinstance(row, WorkerRow)
    assert (row.id, row.pid, row.slots, row.busy) == ("worker:a", 4242, 7, 1)  # tasks held
    assert store.broker.worker_heartbeats() == {"worker:a": started}

    store.start_heartbeat()  # every lease_timeout / 4
    deadline = time.monotonic() + 10
    while store.broker.worker_heartbeats()["worker:a"] == started:
        assert time.monotonic() < deadline, "the heartbeat never renewed the worker"
        time.sleep(0.02)

    released = store.broker.release_owner("worker:a")
    assert released == Released(tasks=1, processes=1)
    assert store.broker.workers() == []
    assert store.broker.queue_depth() == QueueDepth(ready=1, leased=0)


def test_a_silent_worker_is_forgotten_and_a_live_one_kept(store: Backend) -> None:
    now = time.time()
    store.broker.register_worker("worker:silent", 4242, 4, now - 120, "alpha")
    store.broker.register_worker("worker:live", 4343, 4, now, "alpha")
    assert store.broker.forget_worker("worker:live", now - 60) is False  # it beat since
    assert store.broker.forget_worker("worker:silent", now - 60) is True
    assert [row.id for row in store.broker.workers()] == ["worker:live"]


def test_expired_leases_are_recovered_with_counts(store: Backend) -> None:
    pk = begin(store, "worker:gone", time.time() - 1)  # its owner stopped renewing
    counts = store.broker.recover_expired(time.time())
    assert isinstance(counts, RecoveryCounts)
    assert counts == RecoveryCounts(requeued=0, recovered=1, excepted=0)
    assert store.broker.queue_depth().ready == 1
    assert store.broker.recover_expired(time.time()) == (0, 0, 0)  # idempotent
    # its owner is still named until a worker claims the recover task; repair would re-queue
    # it, which recovery already did (so a real repair changes nothing)
    found = f"process {pk} has an expired lease and no live owner: re-queued"
    assert store.broker.repair(True) == [found]
    assert store.broker.repair(False) == [found]
    assert store.broker.queue_depth().ready == 1


def test_a_subscriber_reads_the_state_changes_after_it_registered(store: Backend) -> None:
    before = begin(store)
    watcher = store.events.add_watcher(time.time() + 10)
    assert isinstance(watcher, Watcher)
    pk = begin(store)
    changes = store.events.events_after(watcher.last_event)
    assert [(c.pk, c.from_state, c.to_state) for c in changes] == [(pk, None, "running")]
    assert isinstance(changes[0], StateChange) and before not in [c.pk for c in changes]
    assert store.events.events_after(changes[-1].id) == []

    store.events.renew_watcher(watcher.id, time.time() + 10)
    store.events.remove_watcher(watcher.id)
    begin(store)  # nobody listens: nothing recorded
    assert store.events.events_after(changes[-1].id) == []
    store.events.prune(time.time() + 7200)  # an hour past the events' age limit
    assert store.events.events_after(0) == []


def test_a_gate_opens_once(store: Backend) -> None:
    assert store.events.gate_is_open("g") is False
    store.events.open_gate("g", time.time())
    store.events.open_gate("g", time.time())  # again: no error, no change
    assert store.events.gate_is_open("g") is True
    assert store.events.gate_is_open("h") is False


def test_a_commit_of_another_connection_ends_the_wait(location: str, store: Backend) -> None:
    marker = store.commit_marker()
    assert store.wait_for_commit(marker, 0.05) == marker  # nothing committed: the timeout

    other = open_backend(location)
    try:
        timer = threading.Timer(0.2, other.events.open_gate, args=("g", time.time()))
        timer.start()
        began = time.monotonic()
        assert store.wait_for_commit(marker, 10) != marker
        assert time.monotonic() - began < 5
        timer.join()
    finally:
        other.close()


async def test_a_commit_ends_an_awaited_wait(location: str, store: Backend) -> None:
    import anyio

    marker = store.commit_marker()
    other = open_backend(location)
    try:
        async with anyio.create_task_group() as group:

            async def commit_soon() -> None:
                await anyio.sleep(0.2)
                await other.events.open_gate.aio("g", time.time())

            group.start_soon(commit_soon)
            with anyio.fail_after(5):
                assert await store.await_commit(marker, 10) != marker
    finally:
        other.close()
