"""A waiter that passes ``quiet_since`` polls sqlite's commit counter less often the longer
nothing commits (an idle web server), and still sees the next commit; the web view's commit
watcher is such a waiter.  Waiters that do not pass it (workers, ``await_node``) poll as
before."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from miniengine import Int
from miniengine.storage import store as store_module
from miniengine.storage.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "engine.sqlite")
    try:
        yield opened
    finally:
        opened.close()


class _Counted:
    """``data_version`` counting its calls; ``first`` is set at the first one."""

    def __init__(self, store: Store) -> None:
        self.calls = 0
        self.first = threading.Event()
        self._read = store.data_version

    def __call__(self) -> int:
        self.calls += 1
        self.first.set()
        return self._read()


def test_the_poll_interval_grows_with_the_quiet_up_to_the_idle_interval(store: Store) -> None:
    now = 1000.0
    assert store._poll_interval(now, None) == store.commit_poll_interval
    assert store._poll_interval(now, now) == store.commit_poll_interval  # a commit just now
    assert store._poll_interval(now, now - 0.5) == pytest.approx(0.025)
    assert store._poll_interval(now, now - 3600) == store_module.IDLE_POLL_INTERVAL


async def test_a_quiet_waiter_polls_at_most_every_idle_interval(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = _Counted(store)
    monkeypatch.setattr(store, "data_version", counted)
    marker = store.commit_marker()
    wait = 0.5
    quiet = time.monotonic() - 60
    assert await store.await_commit(marker, wait, quiet_since=quiet) == marker
    # sleeps only ever overrun: a loaded machine polls fewer times, never more
    assert counted.calls <= wait / store_module.IDLE_POLL_INTERVAL + 2
    counted.calls = 0
    assert store.wait_for_commit(marker, wait, quiet_since=quiet) == marker
    assert counted.calls <= wait / store_module.IDLE_POLL_INTERVAL + 2


def test_a_quiet_waiter_still_sees_the_next_commit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = Store(store.path)
    counted = _Counted(store)
    monkeypatch.setattr(store, "data_version", counted)
    marker = store.commit_marker()
    counted.first.clear()

    def commit_once_waiting() -> None:
        counted.first.wait()
        other.provenance.store_data(Int(1))

    committer = threading.Thread(target=commit_once_waiting)
    committer.start()
    try:
        assert store.wait_for_commit(marker, 60, quiet_since=time.monotonic() - 60) != marker
    finally:
        committer.join()
        other.close()


async def test_the_web_watcher_waits_as_a_quiet_waiter(store: Store) -> None:
    """The commit watcher passes the time of the last commit it saw, and a later one after
    a commit."""
    from miniengine.web.reads import PageReads
    from miniengine.web.stream import Broadcaster

    seen: list[float | None] = []
    real = store.await_commit

    async def recording(marker: int, timeout: float, **kwargs: Any) -> int:
        seen.append(kwargs.get("quiet_since"))
        return await real(marker, timeout, **kwargs)

    store.await_commit = recording  # type: ignore[method-assign]
    broadcaster = Broadcaster(store, PageReads(store), keepalive=0.05)
    subscriber = broadcaster.subscribe()
    async with anyio.create_task_group() as tasks:
        await tasks.start(broadcaster.run)
        async for _batch in subscriber.receive:  # a keep-alive: one wait timed out
            break
        first = seen[-1]
        assert first is not None
        other = Store(store.path)
        try:
            await anyio.to_thread.run_sync(other.provenance.store_data, Int(2))
        finally:
            other.close()
        async for batch in subscriber.receive:
            if not batch.keepalive:
                break
        async for _batch in subscriber.receive:  # the wait after the commit
            break
        assert seen[-1] is not None and seen[-1] > first
        tasks.cancel_scope.cancel()
    broadcaster.unsubscribe(subscriber)
