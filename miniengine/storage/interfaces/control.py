"""The control concern of a backend: kill, pause and play processes, wherever they run.

A process that a live owner holds (a worker, or a script in run mode) gets a request that its
owner reads with :meth:`Control.pending_controls` and acts on; a process nobody holds is changed
in the database directly.  Each action is one transaction whose typed outcome says which of the
two happened, so :mod:`miniengine.control` can tell people (and wait when asked to).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from miniengine.storage.interfaces.read import Read
    from miniengine.storage.interfaces.transaction import Transaction

__all__ = [
    "KILL_STATUS",
    "PAUSE_STATUS",
    "Control",
    "ControlRequest",
    "KillOutcome",
    "PauseOutcome",
    "PlayOutcome",
]

#: The status of a process paused, and the exit message of one killed, without a message given.
PAUSE_STATUS = "Paused through `miniengine process pause`"
KILL_STATUS = "Killed through `miniengine process kill`"


class KillOutcome(NamedTuple):
    """What a kill did: the state the process was in, the pks killed in the database (it and
    its unowned descendants) and those whose live owner was asked to kill them.  Both lists are
    empty for a process that had already terminated."""

    state: str
    killed: list[int]
    requested: list[int]


class PauseOutcome(NamedTuple):
    """What a pause did: ``paused`` is False for a terminated process; ``live`` is True when a
    live owner holds it and was asked to stop at its next step boundary."""

    state: str
    paused: bool
    live: bool


class PlayOutcome(NamedTuple):
    """What a play did: ``played`` is False for a terminated process."""

    state: str
    played: bool


class ControlRequest(NamedTuple):
    """A request waiting for the owner of process ``pk``: ``'pause'`` or ``'kill:<message>'``."""

    pk: int
    request: str


class Control(Protocol):
    """Process control in the database: the actions, and what owners read to honour them."""

    @property
    def kill(self) -> Transaction[[int, str | None], KillOutcome]:
        """Kill a process and every descendant that has not terminated: unowned ones at once,
        owned ones by a request to their owner.  ``None`` as message means :data:`KILL_STATUS`.
        Raises :class:`~miniengine.exceptions.NotExistent` for a pk that is no process."""
        ...

    @property
    def pause(self) -> Transaction[[int], PauseOutcome]:
        """Pause a process: it keeps its state and runs no further step until played."""
        ...

    @property
    def play(self) -> Transaction[[int], PlayOutcome]:
        """Un-pause a process, and enqueue it again if nobody holds it and it waits for no
        children."""
        ...

    @property
    def revive(self) -> Transaction[[int, float], bool]:
        """Give a process a task again (``now`` as its time), so that a daemon continues it from
        its last checkpoint; False when such a task was queued already."""
        ...

    @property
    def pause_unloadable(self) -> Transaction[[int, str, int, str, int | None], None]:
        """``(pk, owner, epoch, message, task_pk)``: pause a process its owner claimed but cannot
        load (its class does not import there), releasing its lease and acknowledging its task;
        ``message`` becomes its status and an ERROR log entry.  Fenced by the lease epoch."""
        ...

    @property
    def honour_pending_kill(self) -> Transaction[[int, float], bool]:
        """Kill a process (and its descendants) in the database if a kill request waits for it,
        left by an owner that stopped before acting; True if it did.  A claim does this in its
        own transaction; this is the same step on its own."""
        ...

    @property
    def kill_in_database(self) -> Transaction[[int, str, float], None]:
        """``(pk, message, now)``: terminate an unowned process as KILLED, its task done and
        its parents notified."""
        ...

    @property
    def pending_controls(self) -> Read[[str], list[ControlRequest]]:
        """``(owner)``: the requests waiting for the processes that ``owner`` holds."""
        ...

    def control_request(self, pk: int) -> str | None:
        """The request still waiting for process ``pk`` (None once its owner took it)."""
        ...

    def process_state(self, pk: int) -> str | None:
        """The state of process ``pk`` (None for a node that is not a process).  Raises
        :class:`~miniengine.exceptions.NotExistent` if there is no such node."""
        ...
