"""Drive a process lifecycle written once, from a plain thread or from an event loop.

A lifecycle is a generator that yields *operations* -- a database transaction (:class:`Write`),
user code (:class:`Body`), or something only the event loop can wait for (:class:`Await`) -- and
receives their results.

:func:`drive_sync` performs them in the calling thread (a script, or a worker thread whose body
called a child synchronously): the child's body runs in the thread that is already blocked on it
and its transactions are run by that thread too.  :func:`drive_async` performs them for a
coroutine: transactions and ``async def`` bodies on the loop; for a ``def`` body it moves the
lifecycle into a worker thread (from the runner's own limiter) and keeps driving it *there*
through following transactions and ``def`` bodies, coming back to the loop only for an ``async``
body or an :class:`Await`.  A WorkChain whose steps are all ``def`` therefore costs one thread
hop per wait, not one per step.  No path ever nests an event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread

from miniengine.exceptions import DatabaseLockedError, DatabaseUnavailableError, LeaseLostError
from miniengine.runtime import context

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Transaction

__all__ = [
    "UNWRITABLE",
    "Await",
    "Body",
    "Lifecycle",
    "Write",
    "drive_async",
    "drive_sync",
    "set_step_threads",
    "step_limiter",
]

T = TypeVar("T")

#: Worker threads per event loop for synchronous bodies and steps (run mode).
DEFAULT_STEP_THREADS = 40

#: The errors of a :class:`Write` that say the process could not be written, not that it
#: failed: another owner holds it, the file stayed locked, the server stopped answering.  A
#: CalcJob's stage and a restart loop's inline call raise them on, with no terminal write (it
#: would fail alike, or overwrite the new owner's); a daemon worker hands the process back to
#: run again from its checkpoint.
UNWRITABLE: tuple[type[Exception], ...] = (
    LeaseLostError,
    DatabaseLockedError,
    DatabaseUnavailableError,
)


class Write:
    """Commit ``tx(*args)``, one transaction of the backend (see :class:`Transaction`)."""

    __slots__ = ("args", "tx")

    def __init__(self, tx: Transaction[..., Any], *args: Any) -> None:
        self.tx = tx
        self.args = args


class Body:
    """Call user code ``fn(*args, **kwargs)`` with ``process`` as the running process."""

    __slots__ = ("args", "fn", "is_async", "kwargs", "process")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        is_async: bool,
        process: context.RunningProcess | None = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.is_async = is_async
        self.process = process


class Await:
    """Await ``factory()`` on the event loop (waiting for children, for instance)."""

    __slots__ = ("factory",)

    def __init__(self, factory: Callable[[], Awaitable[Any]]) -> None:
        self.factory = factory


Operation = Write | Body | Await
Lifecycle = Generator[Operation, Any, T]

# True while this context runs inside a worker thread started by drive_async.
_in_worker_thread: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "miniengine_in_worker_thread", default=False
)


def in_worker_thread() -> bool:
    """True in a worker thread that drive_async started for a ``def`` body or step."""
    return _in_worker_thread.get()


# A synchronous child runs its body in the thread of its caller, so nesting is recursion: each level
# costs ~6 units of the interpreter's recursion limit (the body, the launch frames, this driver),
# and the default limit of 1,000 stops a 200-level recursion.  Nested bodies therefore get a
# larger limit, up to a depth far below where an 8 MiB C stack would overflow (~5,000 levels).
_RECURSION_UNITS_PER_LEVEL = 16
_MAX_GRANTED_NESTING = 1000
_DEFAULT_RECURSION_LIMIT = 1000
_nesting = threading.local()


def _call_body(body: Body) -> Any:
    depth: int = getattr(_nesting, "depth", 0)
    if 0 < depth <= _MAX_GRANTED_NESTING:
        needed = _DEFAULT_RECURSION_LIMIT + depth * _RECURSION_UNITS_PER_LEVEL
        if sys.getrecursionlimit() < needed:
            sys.setrecursionlimit(needed)
    _nesting.depth = depth + 1
    token = context.set_current(body.process)
    try:
        return body.fn(*body.args, **body.kwargs)
    finally:
        context.reset_current(token)
        _nesting.depth = depth


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
                value, interrupted = operation.tx.deferring_interrupt(*operation.args)
            elif isinstance(operation, Await):
                raise RuntimeError("this process needs an event loop; launch it with arun()")
            elif operation.is_async:
                value = _run_coroutine_from_thread(operation)
            else:
                value = _call_body(operation)
        except BaseException as exc:
            error = exc


def _run_coroutine_from_thread(body: Body) -> Any:
    """An ``async def`` body called synchronously: on the loop that owns this worker thread if
    there is one, else on a fresh loop in this (loop-less) thread."""

    async def call() -> Any:
        token = context.set_current(body.process)
        try:
            return await body.fn(*body.args, **body.kwargs)
        finally:
            context.reset_current(token)

    if _in_worker_thread.get():
        return anyio.from_thread.run(call)
    return asyncio.run(call())


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def set_step_threads(total: int) -> None:
    """Size this loop's step-thread limiter (a worker: one thread per slot)."""
    step_limiter().total_tokens = max(int(total), 1)


def step_limiter() -> anyio.CapacityLimiter:
    """The limiter for synchronous bodies and steps on this loop (our own, not anyio's default)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(DEFAULT_STEP_THREADS)
    return limiter


_DONE = object()


def _drive_in_thread(lifecycle: Lifecycle[Any], first: Body) -> tuple[Any, Any, Any]:
    """Run ``first`` and keep driving in this worker thread while the operations allow it.

    Returns ``(_DONE, value, None)`` when the lifecycle finished, or ``(operation, value, error)``
    for the first operation that needs the loop, which the loop then performs.
    """
    _in_worker_thread.set(True)
    operation: Operation = first
    while True:
        value: Any = None
        error: BaseException | None = None
        try:
            if isinstance(operation, Write):
                value = operation.tx(*operation.args)
            else:
                value = _call_body(operation)  # type: ignore[arg-type]
        except BaseException as exc:
            error = exc
        try:
            following = lifecycle.send(value) if error is None else lifecycle.throw(error)
        except StopIteration as stop:
            return _DONE, stop.value, None
        if isinstance(following, Await) or (isinstance(following, Body) and following.is_async):
            return following, None, None
        operation = following


async def drive_async(lifecycle: Lifecycle[T]) -> T:
    """Run a lifecycle for the running event loop without ever blocking it."""
    value: Any = None
    error: BaseException | None = None
    operation: Any = None
    while True:
        if operation is None:
            try:
                operation = lifecycle.send(value) if error is None else lifecycle.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            if isinstance(operation, Write):
                value = await operation.tx.aio(*operation.args)
            elif isinstance(operation, Await):
                value = await operation.factory()
            elif operation.is_async:
                token = context.set_current(operation.process)
                try:
                    value = await operation.fn(*operation.args, **operation.kwargs)
                finally:
                    context.reset_current(token)
            else:
                following, result, _ = await anyio.to_thread.run_sync(
                    _drive_in_thread, lifecycle, operation, limiter=step_limiter()
                )
                if following is _DONE:
                    return result  # type: ignore[no-any-return]
                operation = following
                continue
        except BaseException as exc:
            error = exc
        operation = None
