"""A daemon thread for the database work that must not run on an event loop or in user code.

It runs two kinds of work for a :class:`~miniengine.storage.store.Store`: a write that an event
loop could not do inline because the file was locked by another process (it may have to wait, so
it waits here, not on the loop); and the lease heartbeat, every ``idle_interval`` seconds whatever
user code is doing.  (WAL checkpoints run on a short-lived thread of their own: behind queued
writes that wait for the file's lock, they would start too late to keep the WAL small.)

It is a daemon thread, so a forgotten store never keeps a script alive; stores are still closed
properly at exit.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["BackgroundThread"]

T = TypeVar("T")

_STOP = object()


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class BackgroundThread:
    """Runs callables handed over by event loops, plus a periodic callback."""

    def __init__(
        self,
        *,
        name: str,
        on_idle: Callable[[], None] | None = None,
        idle_interval: float = 1.0,
    ) -> None:
        self._on_idle = on_idle
        self._idle_interval = idle_interval
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._started = False
        self._closed = False
        self._start_lock = threading.Lock()

    def _ensure_started(self) -> None:
        if not self._started:
            with self._start_lock:
                if not self._started and not self._closed:
                    self._thread.start()
                    self._started = True

    def start(self) -> None:
        self._ensure_started()

    def close(self) -> None:
        """Finish queued work and stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._queue.put(_STOP)
            if threading.current_thread() is not self._thread:
                self._thread.join()

    def submit(self, fn: Callable[[], Any]) -> None:
        """Queue ``fn()`` without waiting for it (errors are swallowed: used for maintenance)."""
        if self._closed:
            return
        self._ensure_started()
        self._queue.put((fn, None))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the thread and await its result.

        If the awaiting task is cancelled it still waits for ``fn`` to finish and only then
        raises ``CancelledError``, so a caller never unwinds without knowing whether its
        transaction committed.
        """
        self._ensure_started()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((lambda: fn(*args), future))
        cancelled: asyncio.CancelledError | None = None
        while True:
            try:
                result = await asyncio.shield(future)
                break
            except asyncio.CancelledError as exc:
                cancelled = exc
                if future.done() and not future.cancelled():
                    if future.exception() is not None:
                        raise
                    result = future.result()
                    break
        if cancelled is not None:
            raise cancelled
        return result

    def _main(self) -> None:
        next_idle = time.monotonic() + self._idle_interval
        while True:
            now = time.monotonic()
            if now >= next_idle:
                if self._on_idle is not None:
                    try:
                        self._on_idle()
                    except Exception:  # retried at the next interval
                        pass
                next_idle = time.monotonic() + self._idle_interval
                continue
            try:
                item = self._queue.get(timeout=next_idle - now)
            except queue.Empty:
                continue
            if item is _STOP:
                return
            fn, future = item
            try:
                result, error = fn(), None
            except BaseException as exc:
                result, error = None, exc
            if future is None:
                continue
            try:
                future.get_loop().call_soon_threadsafe(_resolve, future, result, error)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass
