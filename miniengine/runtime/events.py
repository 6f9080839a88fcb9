"""State-change broadcasts: ``(node pk, from state, to state, time)`` as processes move.

``with subscribe(db=...) as changes:`` registers a subscriber (a row in ``watchers`` that it
renews while it listens); while any subscriber exists, database triggers append every state
change of every process to ``events`` in the same transaction as the change.  Iterating (sync or
``async for``) yields the changes as they commit: it waits for the backend's "something
committed" signal and reads the events only then.  Without subscribers nothing is recorded.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from miniengine.runtime.context import store_for
from miniengine.storage.interfaces.events import StateChange

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["StateChange", "Subscription", "subscribe"]

#: A subscription is renewed this often and lapses after twice as long without renewal.
RENEW_EVERY = 5.0


class Subscription:
    """The state changes committed since the subscription started, optionally for some pks."""

    def __init__(self, store: Backend, pks: Iterable[int] | None) -> None:
        self.store = store
        self.pks = set(pks) if pks is not None else None
        self._watcher_id: int | None = None
        self._last_id = 0
        self._renewed = 0.0
        #: the backend's commit marker when the events were last read
        self._marker = -1

    def __enter__(self) -> Subscription:
        now = time.time()
        self._watcher_id, self._last_id = self.store.events.add_watcher(now + 2 * RENEW_EVERY)
        self._renewed = now
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._watcher_id is not None and not self.store.closed:
            self.store.events.remove_watcher(self._watcher_id)
        self._watcher_id = None

    def _renew(self) -> None:
        now = time.time()
        if now - self._renewed > RENEW_EVERY and self._watcher_id is not None:
            self.store.events.renew_watcher(self._watcher_id, now + 2 * RENEW_EVERY)
            self._renewed = now

    def poll(self) -> list[StateChange]:
        """The changes committed since the last call (an empty list if nothing changed)."""
        self._renew()
        marker = self.store.commit_marker()
        if marker == self._marker:
            return []
        self._marker = marker
        changes = self.store.events.events_after(self._last_id)
        if changes:
            self._last_id = changes[-1].id
        return [change for change in changes if self.pks is None or change.pk in self.pks]

    def __iter__(self) -> Iterator[StateChange]:
        while True:
            changes = self.poll()
            yield from changes
            if not changes:
                # at most half a renewal period, so that the subscription never lapses
                self.store.wait_for_commit(self._marker, RENEW_EVERY / 2)

    async def __aiter__(self) -> AsyncIterator[StateChange]:
        while True:
            changes = self.poll()
            for change in changes:
                yield change
            if not changes:
                await self.store.await_commit(self._marker, RENEW_EVERY / 2)


def subscribe(
    pks: Iterable[int] | None = None, *, db: Backend | str | os.PathLike[str] | None = None
) -> Subscription:
    """Subscribe to state changes (of ``pks`` only, if given); use it as a context manager."""
    return Subscription(store_for(db), pks)
