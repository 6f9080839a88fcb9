"""Live pages: one commit watcher per app, fanned out to every open event stream.

The watcher awaits the backend's commit signal (``await_commit``: ``PRAGMA data_version`` on
sqlite, polled every 5 ms and, after a second without commits, every 50 ms; LISTEN/NOTIFY on
PostgreSQL), reads what changed once, and hands the batch to each
open stream's queue.  A stream costs nothing while nothing commits: it sleeps on its queue, and
the keep-alive comment every ~15 s comes from the watcher's own timeout, not from a timer per
stream.  A stream that falls far behind (a stalled client) is dropped; the browser's
EventSource reconnects and the page catches up from the database.

Streams end when the client goes (Starlette cancels the response) or when the server stops
(:meth:`Broadcaster.stop` closes every queue, so uvicorn's shutdown never waits on them).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from miniengine.web.reads import change_key
from miniengine.web.render import state_text

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend
    from miniengine.storage.interfaces.reads import ProcessSummary
    from miniengine.web.filters import ProcessFilters
    from miniengine.web.reads import PageReads

__all__ = ["Broadcaster", "list_events", "process_events", "summary_json"]

_log = logging.getLogger(__name__)

#: Batches a stream may have waiting before it is dropped as stalled.
QUEUE_SIZE = 256
#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE = 15.0
#: Seconds between looks for a first stream while none is open.
STALE_LOOK = 0.2


@dataclass(frozen=True)
class Batch:
    """What one commit (or several close together) changed; empty for a keep-alive."""

    changes: Sequence[ProcessSummary] = ()
    keepalive: bool = False


@dataclass(eq=False)
class _Subscriber:
    send: MemoryObjectSendStream[Batch]
    receive: MemoryObjectReceiveStream[Batch]


@dataclass(eq=False)
class Broadcaster:
    """The single commit watcher of one app and the queues of its open streams."""

    backend: Backend
    reads: PageReads
    keepalive: float = KEEPALIVE
    _subscribers: set[_Subscriber] = field(default_factory=set)
    running: bool = False
    stopped: bool = False
    _stale: bool = False
    _fresh: anyio.Event = field(default_factory=anyio.Event)
    #: when the watcher last saw a commit (``time.monotonic()``): a backend that polls for
    #: commits polls less often the longer the database is quiet
    _last_commit: float = field(default_factory=time.monotonic)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch commits until cancelled (the app's lifespan runs this in its task group).

        While no stream is open nothing is read: the cursor goes stale, and the first stream
        to open waits in :meth:`ready` until the cursor has been read again (within
        :data:`STALE_LOOK` seconds), before it reads its own start."""
        await self.reads.current_cursor()
        marker = self.backend.commit_marker()
        self.running = True
        task_status.started()
        try:
            while True:
                try:
                    marker = await self._step(marker)
                except Exception:  # a failed read must not end the live pages for good
                    _log.exception("watching the database for the event streams failed")
                    self._offer(Batch())  # the process pages read again, and see
                    await anyio.sleep(1.0)
        finally:
            self.running = False
            self.stop()

    async def _step(self, marker: int) -> int:
        """Wait for one commit (or a keep-alive's time) and hand on what it changed."""
        timeout = STALE_LOOK if self._stale else self.keepalive
        current = await self.backend.await_commit(marker, timeout, quiet_since=self._last_commit)
        if current != marker:
            self._last_commit = time.monotonic()
        if self._stale:
            if self._subscribers:
                await self.reads.current_cursor()
                self._stale = False
                self._fresh.set()
            return current
        if current == marker:
            self._offer(Batch(keepalive=True))
            return current
        if not self._subscribers:
            self._stale = True  # nobody listens: read nothing until somebody does
            self._fresh = anyio.Event()
            return current
        self._offer(Batch(await self.reads.changes()))
        return current

    async def ready(self) -> None:
        """Return once the changes of every later commit will be handed on (a stream that
        subscribed calls this before it reads its own start)."""
        if self._stale:
            await self._fresh.wait()

    def _offer(self, batch: Batch) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber.send.send_nowait(batch)
            except anyio.WouldBlock:  # stalled: drop it, its client reconnects and catches up
                self._drop(subscriber)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._drop(subscriber)

    def _drop(self, subscriber: _Subscriber) -> None:
        self._subscribers.discard(subscriber)
        subscriber.send.close()

    def subscribe(self) -> _Subscriber:
        """A new stream's queue (closed at once when the server is stopping)."""
        send, receive = anyio.create_memory_object_stream[Batch](QUEUE_SIZE)
        subscriber = _Subscriber(send, receive)
        if self.stopped:
            send.close()
        else:
            self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: _Subscriber) -> None:
        """The stream ended."""
        self._drop(subscriber)
        subscriber.receive.close()

    def stop(self) -> None:
        """Close every stream (the server is stopping); new ones end at once."""
        self.stopped = True
        for subscriber in list(self._subscribers):
            self._drop(subscriber)

    @property
    def streams(self) -> int:
        """How many streams are open."""
        return len(self._subscribers)


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def summary_json(summary: ProcessSummary) -> dict[str, Any]:
    """A process as the list's JSON and event stream send it."""
    return {
        "pk": summary.pk,
        "uuid": summary.uuid,
        "process_label": summary.process_label,
        "process_state": summary.process_state,
        "exit_status": summary.exit_status,
        "paused": summary.paused,
        "process_status": summary.process_status,
        "parent": summary.parent,
        "state": state_text(summary.process_state, summary.exit_status, summary.paused),
        "ctime": summary.ctime,
        "mtime": summary.mtime,
    }


async def _batches(subscriber: _Subscriber) -> AsyncIterator[list[Batch]]:
    """Every batch that arrived since the last look (many commits in a row coalesce)."""
    async for batch in subscriber.receive:
        batches = [batch]
        while True:
            try:
                batches.append(subscriber.receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        yield batches


async def list_events(
    broadcaster: Broadcaster, filters: ProcessFilters, before: int | None, limit: int
) -> AsyncIterator[str]:
    """The process list's stream: each new or changed process that passes ``filters``.

    It starts with the page as it is now (``before`` and ``limit`` as the page shows), read
    after the stream subscribed to the commits, oldest first: what changed between the page's
    rendering and the stream's start (or while a dropped stream reconnected) is not lost.
    With a group filter the page is read again after every commit too, so a process added to
    the group shows at once (membership is no change of the process).
    """
    subscriber = broadcaster.subscribe()
    shown: dict[int, Any] = {}  # pk -> change_key sent, for a group's list
    try:
        yield _event("hello", {"streams": broadcaster.streams})
        await broadcaster.ready()
        for summary in reversed(await broadcaster.reads.process_page(filters, before, limit)):
            shown[summary.pk] = change_key(summary)
            yield _event("process", summary_json(summary))
        async for batches in _batches(subscriber):
            changes = [s for batch in batches for s in batch.changes if filters.matches(s)]
            if filters.group and changes:
                members = await broadcaster.reads.in_group(filters.group, [s.pk for s in changes])
                changes = [s for s in changes if s.pk in members]
            if filters.group and not all(batch.keepalive for batch in batches):
                # joining a group changes no process, so the changes do not show it: the
                # page is read again (one page of an index walk) after each commit
                page = await broadcaster.reads.process_page(filters, before, limit)
                found = {s.pk for s in changes}
                changes += [
                    s
                    for s in reversed(page)
                    if s.pk not in found and shown.get(s.pk) != change_key(s)
                ]
                shown.update((s.pk, change_key(s)) for s in changes)
            for summary in changes:
                yield _event("process", summary_json(summary))
            if not changes and any(batch.keepalive for batch in batches):
                yield ": keep-alive\n\n"
    finally:
        broadcaster.unsubscribe(subscriber)


async def process_events(
    broadcaster: Broadcaster, pk: int, after_log: int | None
) -> AsyncIterator[str]:
    """A process page's stream: the process's state, its reports after log id ``after_log``
    (the last one the page showed), and its call tree; read at once, then again after each
    commit."""
    from miniengine.web.render import report_json, tree_json

    reads = broadcaster.reads
    subscriber = broadcaster.subscribe()
    last_log = after_log
    last_state: Any = None
    last_tree: Any = None

    async def refresh() -> AsyncIterator[str]:
        nonlocal last_log, last_state, last_tree
        summaries = await reads.summaries([pk])
        if summaries and change_key(summaries[0]) != last_state:
            last_state = change_key(summaries[0])
            yield _event("process", summary_json(summaries[0]))
        for row in await reads.reports(pk, last_log):
            last_log = row.pk
            yield _event("report", report_json(row))
        tree = tree_json(await reads.call_tree(pk))
        if tree != last_tree:
            last_tree = tree
            yield _event("tree", tree)

    try:
        yield _event("hello", {"pk": pk})
        await broadcaster.ready()
        async for text in refresh():
            yield text
        async for batches in _batches(subscriber):
            if all(batch.keepalive for batch in batches):
                yield ": keep-alive\n\n"
                continue
            async for text in refresh():
                yield text
    finally:
        broadcaster.unsubscribe(subscriber)
