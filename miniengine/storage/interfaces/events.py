"""The events concern of a backend (see :mod:`miniengine.storage.interfaces`).

State-change broadcasts: while any subscriber (a "watcher") is registered, every state change
of every process is recorded as an event in the same transaction as the change; subscribers
read the events after the last one they saw.  A subscriber renews its registration while it
listens, and one that stopped renewing lapses, so a dead listener does not keep the recording
on.  The named gates that ``miniengine.testing`` processes wait at live here too: a gate is a
signal through the database, opened once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from miniengine.storage.interfaces.transaction import Transaction

__all__ = ["KEEP_EVENTS_SECONDS", "Events", "StateChange", "Watcher"]

#: Events older than this are dropped by :attr:`Events.prune`.
KEEP_EVENTS_SECONDS = 3600.0


@dataclass(frozen=True)
class StateChange:
    """One process moved from ``from_state`` (None when it was created) to ``to_state``."""

    id: int
    pk: int
    from_state: str | None
    to_state: str
    time: float


class Watcher(NamedTuple):
    """A registered subscriber, and the id of the last event committed before it registered
    (it reads the events after that one)."""

    id: int
    last_event: int


class Events(Protocol):
    """Subscribers to state changes, the changes themselves, and the testing gates."""

    @property
    def add_watcher(self) -> Transaction[[float], Watcher]:
        """``(expires)``: register a subscriber until ``expires`` (``time.time()``)."""
        ...

    @property
    def renew_watcher(self) -> Transaction[[int, float], None]:
        """``(watcher id, expires)``: the subscriber still listens."""
        ...

    @property
    def remove_watcher(self) -> Transaction[[int], None]:
        """``(watcher id)``: the subscriber stopped listening."""
        ...

    def events_after(self, after: int) -> list[StateChange]:
        """The state changes committed after event id ``after``, oldest first (at most 10,000
        at a time: a reader that is behind calls again)."""
        ...

    @property
    def prune(self) -> Transaction[[float], None]:
        """``(now)``: drop events older than :data:`KEEP_EVENTS_SECONDS` and lapsed
        subscribers (daemon workers run it now and then)."""
        ...

    @property
    def open_gate(self) -> Transaction[[str, float], None]:
        """``(name, now)``: open the gate ``name`` (opening it again changes nothing)."""
        ...

    def gate_is_open(self, name: str) -> bool:
        """Whether the gate ``name`` has been opened."""
        ...
