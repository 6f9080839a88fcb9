"""The one transition table of process states, driven by random event sequences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniengine import MiniengineError, ProcessState
from miniengine.core.states import (
    TERMINAL_STATES,
    TRANSITIONS,
    ProcessEvent,
    mermaid_diagram,
    transition,
)
from miniengine.exceptions import InvalidTransition

states = st.sampled_from(list(ProcessState))
events = st.sampled_from(list(ProcessEvent))


@given(start=states, sequence=st.lists(events, max_size=30))
def test_random_event_sequences_follow_the_table(
    start: ProcessState, sequence: list[ProcessEvent]
) -> None:
    state = start
    for event in sequence:
        expected = TRANSITIONS[state].get(event)
        if expected is None:
            with pytest.raises(InvalidTransition) as error:
                transition(state, event)
            assert isinstance(error.value, RuntimeError)
            assert isinstance(error.value, MiniengineError)
            assert state.value in str(error.value) and event.value in str(error.value)
            # an illegal move changes nothing: the process stays where it was
        else:
            state = transition(state, event)
            assert state is expected


@given(state=states, event=events)
def test_every_pair_is_either_in_the_table_or_refused(
    state: ProcessState, event: ProcessEvent
) -> None:
    if event in TRANSITIONS[state]:
        assert transition(state, event) is TRANSITIONS[state][event]
    else:
        with pytest.raises(InvalidTransition):
            transition(state, event)


#: The table, written out by hand: a change to the legal moves must change this test too.
#: (state, event, next state), by the values stored in the database.
LEGAL_MOVES = {
    ("created", "start", "running"),
    ("created", "wait", "waiting"),
    ("created", "except", "excepted"),
    ("created", "kill", "killed"),
    ("running", "start", "running"),
    ("running", "wait", "waiting"),
    ("running", "finish", "finished"),
    ("running", "except", "excepted"),
    ("running", "kill", "killed"),
    ("waiting", "start", "running"),
    ("waiting", "resume", "running"),
    ("waiting", "wait", "waiting"),
    ("waiting", "finish", "finished"),
    ("waiting", "except", "excepted"),
    ("waiting", "kill", "killed"),
}


def test_the_table_is_exactly_the_legal_moves_written_out() -> None:
    table = {
        (state.value, event.value, target.value)
        for state, moves in TRANSITIONS.items()
        for event, target in moves.items()
    }
    assert table == LEGAL_MOVES
    # and the function applies it: every listed move goes through, every other one is refused
    for state in ProcessState:
        for event in ProcessEvent:
            legal = [to for frm, on, to in LEGAL_MOVES if (frm, on) == (state.value, event.value)]
            if legal:
                assert transition(state, event) is ProcessState(legal[0])
            else:
                with pytest.raises(InvalidTransition):
                    transition(state, event)


def test_the_legal_state_changes_are_exactly_these_pairs() -> None:
    """The (from, to) pairs alone, whatever event causes them: what a reader of the database
    may ever see a process go through."""
    assert {(frm, to) for frm, _, to in LEGAL_MOVES} == {
        ("created", "running"),
        ("created", "waiting"),
        ("created", "excepted"),
        ("created", "killed"),
        ("running", "running"),
        ("running", "waiting"),
        ("running", "finished"),
        ("running", "excepted"),
        ("running", "killed"),
        ("waiting", "running"),
        ("waiting", "waiting"),
        ("waiting", "finished"),
        ("waiting", "excepted"),
        ("waiting", "killed"),
    }


def test_the_table_covers_every_state_and_only_states() -> None:
    assert set(TRANSITIONS) == set(ProcessState)
    for moves in TRANSITIONS.values():
        assert set(moves) <= set(ProcessEvent)
        assert set(moves.values()) <= set(ProcessState)


@pytest.mark.parametrize("state", [s for s in ProcessState if s in TERMINAL_STATES])
@pytest.mark.parametrize("event", list(ProcessEvent))
def test_terminal_states_have_no_way_out(state: ProcessState, event: ProcessEvent) -> None:
    assert state.is_terminal
    with pytest.raises(InvalidTransition, match="terminated"):
        transition(state, event)


def test_terminal_states_are_finished_excepted_and_killed() -> None:
    assert {
        ProcessState.FINISHED,
        ProcessState.EXCEPTED,
        ProcessState.KILLED,
    } == TERMINAL_STATES
    assert not any(state.is_terminal for state in set(ProcessState) - TERMINAL_STATES)


def test_every_live_state_can_be_killed_and_can_except() -> None:
    for state in set(ProcessState) - TERMINAL_STATES:
        assert transition(state, ProcessEvent.KILL) is ProcessState.KILLED
        assert transition(state, ProcessEvent.EXCEPT) is ProcessState.EXCEPTED


def test_every_state_is_reachable_from_created() -> None:
    reached = {ProcessState.CREATED}
    frontier = [ProcessState.CREATED]
    while frontier:
        for target in TRANSITIONS[frontier.pop()].values():
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(ProcessState)


def test_mermaid_diagram_mentions_every_transition_and_nothing_else() -> None:
    diagram = mermaid_diagram()
    lines = diagram.splitlines()
    assert lines[0] == "stateDiagram-v2"
    expected = {
        f"{state.name} --> {target.name}: {event.value}"
        for state, moves in TRANSITIONS.items()
        for event, target in moves.items()
    }
    drawn = {line.strip() for line in lines[1:] if ": " in line}
    assert drawn == expected
    for state in TERMINAL_STATES:
        assert f"{state.name} --> [*]" in diagram
    assert f"[*] --> {ProcessState.CREATED.name}" in diagram
