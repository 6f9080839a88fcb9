"""Drive a process lifecycle written once, from a plain thread or from an event loop.

A lifecycle is a generator that yields *operations* -- a database transaction (:class:`Write`) or
user code (:class:`Body`) -- and receives their results.  :func:`drive_sync` performs them in the
calling thread (a script, or a worker thread whose body called a child synchronously); the child's
body therefore runs in the thread that is already blocked on it, and only its transactions go to
the store's writer thread.  :func:`drive_async` performs them on the event loop: transactions are
awaited, ``async def`` bodies are awaited, and ``def`` bodies run in a worker thread taken from the
runner's own limiter.  No path ever nests an event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread

from miniengine.storage.store import Store

__all__ = ["Body", "Lifecycle", "Write", "drive_async", "drive_sync", "step_limiter"]

T = TypeVar("T")

#: Worker threads per event loop for synchronous bodies and steps (run mode).
DEFAULT_STEP_THREADS = 40


class Write:
    """Run ``fn(connection, *args)`` as one transaction on ``store``."""

    __slots__ = ("args", "fn", "store")

    def __init__(self, store: Store, fn: Callable[..., Any], *args: Any) -> None:
        self.store = store
        self.fn = fn
        self.args = args


class Body:
    """Call user code ``fn(*args, **kwargs)``; ``is_async`` when it returns a coroutine."""

    __slots__ = ("args", "fn", "is_async", "kwargs")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], is_async: bool
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.is_async = is_async


Lifecycle = Generator[Write | Body, Any, T]

# True while this context runs inside a worker thread started by drive_async.
_in_worker_thread: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "miniengine_in_worker_thread", default=False
)


def drive_sync(lifecycle: Lifecycle[T]) -> T:
    """Run a lifecycle in the calling thread, which must not be running an event loop."""
    value: Any = None
    error: BaseException | None = None
    interrupted: KeyboardInterrupt | None = None
    while True:
        try:
            operation = lifecycle.send(value) if error is None else lifecycle.throw(error)
        except StopIteration as stop:
            if interrupted is not None:
                raise interrupted from None
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        if interrupted is not None:
            # Ctrl-C arrived while a transaction was committing: the lifecycle has now seen that
            # transaction's result, so deliver the interrupt where it stands.
            error, interrupted = interrupted, None
            continue
        try:
            if isinstance(operation, Write):
                value, interrupted = operation.store.write_sync_deferring_interrupt(
                    operation.fn, *operation.args
                )
            elif operation.is_async:
                value = _run_coroutine_from_thread(operation)
            else:
                value = operation.fn(*operation.args, **operation.kwargs)
        except BaseException as exc:
            error = exc


def _run_coroutine_from_thread(body: Body) -> Any:
    """An ``async def`` body called synchronously: on the loop that owns this worker thread if
    there is one, else on a fresh loop in this (loop-less) thread."""

    async def call() -> Any:
        return await body.fn(*body.args, **body.kwargs)

    if _in_worker_thread.get():
        return anyio.from_thread.run(call)
    return asyncio.run(call())


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def step_limiter() -> anyio.CapacityLimiter:
    """The limiter for synchronous bodies and steps on this loop (our own, not anyio's default)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(DEFAULT_STEP_THREADS)
    return limiter


def _call_in_worker(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    _in_worker_thread.set(True)
    return fn(*args, **kwargs)


async def drive_async(lifecycle: Lifecycle[T]) -> T:
    """Run a lifecycle on the running event loop without ever blocking it."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            operation = lifecycle.send(value) if error is None else lifecycle.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            if isinstance(operation, Write):
                value = await operation.store.write(operation.fn, *operation.args)
            elif operation.is_async:
                value = await operation.fn(*operation.args, **operation.kwargs)
            else:
                value = await anyio.to_thread.run_sync(
                    _call_in_worker,
                    operation.fn,
                    operation.args,
                    operation.kwargs,
                    limiter=step_limiter(),
                )
        except BaseException as exc:
            error = exc
