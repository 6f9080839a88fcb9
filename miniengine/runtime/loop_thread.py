"""One event loop in a daemon thread, shared by every synchronous ``run()`` of a WorkChain.

A WorkChain needs an event loop (children run as tasks, ``async def`` steps run on it).  Creating
and closing a loop -- and the worker threads for its ``def`` steps -- for each ``run()`` costs
3-4 ms here, more than a whole small WorkChain.  So a plain script's ``run()`` hands the launch to
this long-lived loop and blocks on the result; the loop's threads are daemon threads, so nothing
keeps the interpreter alive at exit, and the loop is stopped at exit.  Ctrl-C in the caller
cancels the launch, whose processes end KILLED, before ``KeyboardInterrupt`` propagates.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["run_on_loop_thread"]

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            return loop
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                ready = threading.Event()
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._serve,
                    args=(self._loop, ready),
                    name="miniengine-loop",
                    daemon=True,
                )
                self._thread.start()
                ready.wait()
            return self._loop

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)

        async def root() -> None:
            # A root task run with run_until_complete, as under asyncio.run: anyio finds it once
            # and keeps it (otherwise every to_thread call scans all tasks: O(tasks) each), and
            # the step threads it starts live as long as it does, so runs reuse them.
            self._stopping = asyncio.Event()
            ready.set()
            await self._stopping.wait()

        try:
            loop.run_until_complete(root())
        finally:
            loop.close()

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and not loop.is_closed():
            stopping = self._stopping
            if stopping is not None:
                loop.call_soon_threadsafe(stopping.set)
            if thread is not None:
                thread.join(timeout=5)


_loop_thread = _LoopThread()
atexit.register(_loop_thread.stop)


def run_on_loop_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``make()`` on the shared loop and block until it is done (Ctrl-C cancels it)."""
    loop = _loop_thread.loop()
    done = threading.Event()
    outcome: dict[str, Any] = {}

    async def wrapper() -> None:
        outcome["task"] = asyncio.current_task()
        try:
            outcome["result"] = await make()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    asyncio.run_coroutine_threadsafe(wrapper(), loop)
    try:
        done.wait()
    except KeyboardInterrupt:
        task = outcome.get("task")
        if task is not None:
            loop.call_soon_threadsafe(task.cancel)
        done.wait()  # the launch records its processes as KILLED, then we re-raise
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]  # type: ignore[no-any-return]
