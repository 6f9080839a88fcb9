"""Process states and the one table of legal transitions.

Every state change of every process goes through :func:`transition`, which looks the move up in
:data:`TRANSITIONS` and raises :class:`~miniengine.exceptions.InvalidTransition` for anything else.
The state diagram in the documentation is generated from the same table, so it cannot drift.
``paused`` is a flag on the process, not a state.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from miniengine.exceptions import InvalidTransition

__all__ = [
    "TERMINAL_STATES",
    "TRANSITIONS",
    "ProcessEvent",
    "ProcessState",
    "transition",
]


class ProcessState(enum.Enum):
    """The state of a process, with AiiDA's names and values."""

    CREATED = "created"
    RUNNING = "running"
    WAITING = "waiting"
    FINISHED = "finished"
    EXCEPTED = "excepted"
    KILLED = "killed"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


class ProcessEvent(enum.Enum):
    """What happens to a process; the table maps (state, event) to the next state."""

    START = "start"  # an owner begins (or resumes) executing the process
    WAIT = "wait"  # the process waits on children or an external event
    RESUME = "resume"  # what it waited on happened
    FINISH = "finish"  # it returned normally (any exit status)
    EXCEPT = "except"  # it raised, or could not be continued
    KILL = "kill"  # a user, a parent or Ctrl-C killed it


_S = ProcessState
_E = ProcessEvent

#: ``{state: {event: next_state}}``.  Terminal states have no way out.
TRANSITIONS: Mapping[ProcessState, Mapping[ProcessEvent, ProcessState]] = {
    _S.CREATED: {
        _E.START: _S.RUNNING,
        _E.WAIT: _S.WAITING,
        _E.EXCEPT: _S.EXCEPTED,
        _E.KILL: _S.KILLED,
    },
    _S.RUNNING: {
        _E.START: _S.RUNNING,  # taken over by a new owner after a crash
        _E.WAIT: _S.WAITING,
        _E.FINISH: _S.FINISHED,
        _E.EXCEPT: _S.EXCEPTED,
        _E.KILL: _S.KILLED,
    },
    _S.WAITING: {
        _E.START: _S.RUNNING,
        _E.RESUME: _S.RUNNING,
        _E.WAIT: _S.WAITING,
        _E.FINISH: _S.FINISHED,
        _E.EXCEPT: _S.EXCEPTED,
        _E.KILL: _S.KILLED,
    },
    _S.FINISHED: {},
    _S.EXCEPTED: {},
    _S.KILLED: {},
}

TERMINAL_STATES: frozenset[ProcessState] = frozenset(
    state for state, moves in TRANSITIONS.items() if not moves
)


def transition(state: ProcessState, event: ProcessEvent) -> ProcessState:
    """Return the state that ``event`` leads to from ``state``, or raise ``InvalidTransition``."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise InvalidTransition(
            f"a {state.value} process cannot {event.value}"
            + (" (it has terminated)" if state in TERMINAL_STATES else "")
        ) from None


def mermaid_diagram() -> str:
    """The transition table as a Mermaid state diagram, for the documentation."""
    lines = ["stateDiagram-v2", f"    [*] --> {ProcessState.CREATED.name}"]
    for state, moves in TRANSITIONS.items():
        for event, target in moves.items():
            lines.append(f"    {state.name} --> {target.name}: {event.value}")
        if not moves:
            lines.append(f"    {state.name} --> [*]")
    return "\n".join(lines) + "\n"
