"""One open transport per computer per worker, shared by all of that computer's jobs.

AiiDA users see a connection opened per transport task and a fixed ``safe_interval`` wait before
each; here a worker opens a computer's connection when a job first needs it, keeps it while jobs
use it, closes it after ``idle_timeout`` seconds unused, and never opens two connections to one
computer less than the transport's ``safe_interval`` apart.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType

import anyio
import anyio.abc

from miniengine.transports.transport import Transport

__all__ = ["TransportPool"]


@dataclass
class _Entry:
    transport: Transport
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0
    opens: int = 0
    last_open: float = -math.inf
    idle_since: float | None = None


class TransportPool:
    """``async with TransportPool() as pool: async with pool.request(key, make) as t: ...``"""

    def __init__(self, idle_timeout: float = 30.0) -> None:
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive, not {idle_timeout}")
        self.idle_timeout = idle_timeout
        self._entries: dict[str, _Entry] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._idle = anyio.Event()

    async def __aenter__(self) -> TransportPool:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._close_idle)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        try:
            return await self._task_group.__aexit__(exc_type, exc, traceback)
        finally:
            with anyio.CancelScope(shield=True):
                for entry in self._entries.values():
                    await entry.transport.close()
            self._entries.clear()

    def opens(self, key: str) -> int:
        """How many times the transport for ``key`` was opened (one, while it stays in use)."""
        entry = self._entries.get(key)
        return entry.opens if entry is not None else 0

    @asynccontextmanager
    async def request(self, key: str, make: Callable[[], Transport]) -> AsyncIterator[Transport]:
        """The open transport for ``key`` (a computer), made by ``make`` the first time."""
        if self._task_group is None:
            raise RuntimeError("use the pool inside 'async with TransportPool() as pool'")
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(make())
        entry.users += 1
        entry.idle_since = None
        try:
            async with entry.lock:
                if not entry.transport.is_open:
                    wait = entry.last_open + entry.transport.safe_interval - anyio.current_time()
                    if wait > 0:
                        await anyio.sleep(wait)
                    entry.last_open = anyio.current_time()
                    entry.opens += 1
                    await entry.transport.open()
            yield entry.transport
        finally:
            entry.users -= 1
            if entry.users == 0:
                entry.idle_since = anyio.current_time()
                self._idle.set()

    async def _close_idle(self) -> None:
        while True:
            await self._idle.wait()
            self._idle = anyio.Event()
            while True:
                now = anyio.current_time()
                idle = [e for e in self._entries.values() if e.idle_since is not None]
                if not idle:
                    break
                due = min(e.idle_since for e in idle if e.idle_since is not None)
                if due + self.idle_timeout > now:
                    with anyio.move_on_after(due + self.idle_timeout - now):
                        await self._idle.wait()  # a new idle entry may be due earlier: re-read
                    self._idle = anyio.Event()
                    continue
                for entry in idle:
                    if entry.idle_since is not None and entry.idle_since + self.idle_timeout <= now:
                        entry.idle_since = None
                        async with entry.lock:
                            if entry.users == 0:
                                await entry.transport.close()
