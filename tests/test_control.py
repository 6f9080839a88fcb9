"""Pause, play and kill (miniengine.control), in run mode and in the database."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from miniengine import (
    ProcessKilledError,
    ProcessNode,
    ProcessState,
    Str,
    arun_get_node,
    control,
    find_processes,
    load_node,
    run,
    submit,
)
from miniengine.storage.control_rows import KILL_STATUS, PAUSE_STATUS
from miniengine.testing import WaitingProcess, gate_is_open, open_gate
from tests.services import sql
from tests.workchains.control_chains import NappingChain, ParentOfWaiting

pytestmark = pytest.mark.backends


async def _running(label: str = "WaitingProcess", count: int = 1) -> list[int]:
    """Wait (bounded) until ``count`` processes with ``label`` are RUNNING; their pks."""
    for _ in range(2000):
        nodes = find_processes(state="running", process_label=label)
        if len(nodes) >= count:
            return sorted(node.pk for node in nodes)  # type: ignore[misc]
        await asyncio.sleep(0.005)
    raise AssertionError(f"no running {label}")


async def test_kill_a_running_run_mode_process_ends_it_killed_with_the_message():
    task = asyncio.create_task(arun_get_node(WaitingProcess, gate=Str("never")))
    (pk,) = await _running()
    answer = await asyncio.to_thread(control.kill, pk, "enough", wait=True)
    assert answer == f"killed process {pk}"
    with pytest.raises(ProcessKilledError, match=r"^enough$"):
        await task
    node = load_node(pk)
    assert node.process_state is ProcessState.KILLED
    assert node.process_status == "enough"
    assert node.exit_status is None
    assert any(entry.message == "enough" for entry in node.logs)


async def test_kill_cascades_to_the_running_children_of_a_run_mode_tree():
    task = asyncio.create_task(arun_get_node(ParentOfWaiting, gate=Str("never")))
    (child_pk,) = await _running()
    parent_pk = load_node(child_pk).caller.pk
    await asyncio.to_thread(control.kill, parent_pk, wait=True)
    with pytest.raises(ProcessKilledError):
        await task
    assert load_node(parent_pk).process_state is ProcessState.KILLED
    assert load_node(child_pk).process_state is ProcessState.KILLED


async def test_pause_holds_a_run_mode_process_at_its_next_step_until_play():
    task = asyncio.create_task(arun_get_node(WaitingProcess, gate=Str("g")))
    (pk,) = await _running()
    assert "paused" in await asyncio.to_thread(control.pause, pk)
    await asyncio.to_thread(open_gate, "g")
    # the first step ends and the process stops at the boundary: its owner takes the request
    store = load_node(pk).store
    assert await asyncio.to_thread(control._wait_for_control, store, pk, 10.0)
    assert gate_is_open("g")
    node = load_node(pk)
    assert node.process_status == PAUSE_STATUS
    assert node.paused and node.process_state is ProcessState.RUNNING
    assert not task.done()
    assert "played" in await asyncio.to_thread(control.play, pk)
    outputs, finished = await task
    assert finished.is_finished_ok and outputs["passed"].value is True
    assert not load_node(pk).paused


def test_kill_of_a_created_process_nobody_runs_is_done_in_the_database():
    node = submit(WaitingProcess, gate=Str("never"))  # no daemon: it stays CREATED
    assert node.process_state is ProcessState.CREATED
    assert control.kill(node) == f"killed process {node.pk}"
    assert node.process_state is ProcessState.KILLED
    assert node.process_status == KILL_STATUS
    assert node.exception is None  # KILLED is not EXCEPTED: the message is its status only


def test_killing_a_terminated_process_is_a_clear_no_op():
    node = submit(WaitingProcess, gate=Str("never"))
    control.kill(node)
    answer = control.kill(node)
    assert "already terminated" in answer and "nothing to kill" in answer
    assert "nothing to pause" in control.pause(node)
    assert "nothing to play" in control.play(node)


def test_pause_and_play_of_an_unowned_process_change_the_database():
    node = submit(WaitingProcess, gate=Str("never"))
    control.pause(node)
    assert node.paused and node.process_status == PAUSE_STATUS
    control.play(node)
    assert not node.paused and node.process_status is None
    assert node.process_state is ProcessState.CREATED


def test_aiida_names_accept_lists_and_all_entries():
    first = submit(WaitingProcess, gate=Str("a"))
    second = submit(WaitingProcess, gate=Str("b"))
    assert len(control.pause_processes([first, second.pk])) == 2
    assert first.paused and second.paused
    assert len(control.play_processes(all_entries=True)) == 2
    assert not first.paused and not second.paused
    assert control.kill_processes([]) == []
    messages = control.kill_processes(all_entries=True, msg_text="cleanup")
    assert len(messages) == 2
    assert {n.process_status for n in (first, second)} == {"cleanup"}
    assert control.revive_processes([first]) == [f"revived process {first.pk}"]


def test_unknown_pk_is_a_clear_error():
    from miniengine import NotExistent

    with pytest.raises(NotExistent, match="no process with pk 4242"):
        control.kill(4242)


def test_open_gate_releases_a_waiting_process_in_another_thread():
    result: dict[str, object] = {}

    def runner() -> None:
        result["out"] = asyncio.run(arun_get_node(WaitingProcess, gate=Str("t")))

    thread = threading.Thread(target=runner)
    thread.start()
    for _ in range(4000):
        if find_processes(state="running"):
            break
        threading.Event().wait(0.002)
    open_gate("t")
    thread.join(timeout=30)
    assert not thread.is_alive()
    _outputs, node = result["out"]  # type: ignore[misc]
    assert node.is_finished_ok


async def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(4000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def test_kill_pause_and_play_reach_a_process_running_on_a_worker():
    from miniengine import asubmit, await_node
    from miniengine.daemon import Worker

    async with Worker(slots=4):
        killed = await asubmit(WaitingProcess, gate=Str("k"))
        await _until(lambda: killed.process_state is ProcessState.RUNNING, "the worker to run it")
        answer = await asyncio.to_thread(control.kill, killed, "stop", wait=True)
        assert answer == f"killed process {killed.pk}"
        assert killed.process_state is ProcessState.KILLED and killed.process_status == "stop"

        paused = await asubmit(WaitingProcess, gate=Str("p"))
        await _until(lambda: paused.process_state is ProcessState.RUNNING, "the worker to run it")
        await asyncio.to_thread(control.pause, paused)
        await asyncio.to_thread(open_gate, "p")
        # at the step boundary the worker hands the paused process back and holds no lease
        await _until(lambda: paused.lease[0] is None, "the paused process to be released")
        assert paused.paused and paused.process_state is ProcessState.RUNNING
        await asyncio.to_thread(control.play, paused)
        await await_node(paused, timeout=30)
        assert paused.is_finished_ok and paused.outputs.passed.value is True


async def test_killing_a_waiting_parent_on_the_daemon_kills_its_running_child():
    from miniengine import asubmit
    from miniengine.daemon import Worker

    async with Worker(slots=4):
        parent = await asubmit(ParentOfWaiting, gate=Str("never"))
        await _until(lambda: parent.process_state is ProcessState.WAITING, "the parent to wait")
        (child,) = parent.called
        await _until(lambda: child.process_state is ProcessState.RUNNING, "the child to run")
        await asyncio.to_thread(control.kill, parent, wait=True)
        assert parent.process_state is ProcessState.KILLED  # evicted: killed in the database
        await _until(lambda: child.is_terminated, "the worker to kill the child")
        assert child.process_state is ProcessState.KILLED


async def test_reviving_a_parent_that_waits_for_its_child_leaves_it_waiting_until_the_child_ends(
    miniengine_db,
):
    """A revive of a process that was not stuck wakes it early: it goes back to waiting, and
    the checkpoint it writes again still names its step, so the real wake-up continues it
    (it used to end EXCEPTED: "the step at the checkpoint's cursor was renamed")."""
    from miniengine import asubmit, await_node
    from miniengine.daemon import Worker

    async with Worker(slots=4):
        parent = await asubmit(ParentOfWaiting, gate=Str("revived"))
        await _until(lambda: parent.process_state is ProcessState.WAITING, "the parent to wait")
        assert control.revive_processes([parent]) == [f"revived process {parent.pk}"]
        await _until(
            lambda: (
                sql.count(
                    miniengine_db,
                    "SELECT count(*) FROM tasks WHERE process_pk = ? AND status != 'done'",
                    parent.pk,
                )
                == 0
            ),
            "the worker to take the revive",
        )
        assert parent.process_state is ProcessState.WAITING
        await asyncio.to_thread(open_gate, "revived")
        await await_node(parent, timeout=30)
    assert parent.is_finished_ok, parent.exception
    (child,) = parent.called
    assert parent.outputs.seen.value == child.pk


async def test_killing_all_entries_kills_a_waiting_parent_too():
    """``kill_processes(all_entries=True)`` must not kill a child first: its end would wake
    the parent, which would then finish instead of being killed."""
    from miniengine import asubmit
    from miniengine.daemon import Worker

    async with Worker(slots=4):
        parent = await asubmit(ParentOfWaiting, gate=Str("never-all"))
        await _until(lambda: parent.process_state is ProcessState.WAITING, "the parent to wait")
        (child,) = parent.called
        await _until(lambda: child.process_state is ProcessState.RUNNING, "the child to run")
        await asyncio.to_thread(control.kill_processes, all_entries=True, wait=True)
        await _until(lambda: child.is_terminated, "the worker to kill the child")
    assert parent.process_state is ProcessState.KILLED
    assert child.process_state is ProcessState.KILLED


async def test_a_paused_process_stays_paused_across_a_worker_restart_until_played(miniengine_db):
    from miniengine import asubmit, await_node
    from miniengine.daemon import Worker

    async with Worker(slots=2):
        node = await asubmit(WaitingProcess, gate=Str("restart"))
        await _until(lambda: node.process_state is ProcessState.RUNNING, "the worker to run it")
        await asyncio.to_thread(control.pause, node)
        await asyncio.to_thread(open_gate, "restart")
        await _until(lambda: node.lease[0] is None, "the paused process to be released")

    def queued() -> int:  # the tasks of the process that a worker has not dealt with yet
        return sql.count(
            miniengine_db,
            "SELECT count(*) FROM tasks WHERE process_pk = ? AND status != 'done'",
            node.pk,
        )

    async with Worker(slots=2):  # "the daemon restarted"
        # the new worker has dealt with every task of the process (dropped it, or wrongly ran it)
        await _until(lambda: queued() == 0, "the worker to deal with the process's tasks")
        assert node.paused and not node.is_terminated
        assert node.process_state is ProcessState.RUNNING and node.lease[0] is None
        await asyncio.to_thread(control.play, node)
        await await_node(node, timeout=30)
    assert node.is_finished_ok


async def test_repair_finds_nothing_after_normal_work_on_a_worker(miniengine_db):
    import subprocess
    import sys

    from miniengine import asubmit, await_node
    from miniengine.daemon import Worker

    async with Worker(slots=4):
        nodes = [await asubmit(ParentOfWaiting, gate=Str(f"g{i}")) for i in range(3)]
        for i in range(3):
            await asyncio.to_thread(open_gate, f"g{i}")
        for node in nodes:
            await await_node(node, timeout=30)
    assert all(node.is_finished_ok for node in nodes)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "miniengine", "process", "repair", "--db", str(miniengine_db)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stdout.strip() == "nothing to repair"


# kills and pauses of ``def`` steps, which run in a thread that cannot be interrupted ------------


def _naps(node: ProcessNode) -> int:
    """How many ``nap`` steps of a NappingChain have committed (each reports once)."""
    return sum("|nap]: nap " in entry.message for entry in node.logs)


def test_run_raises_when_a_chain_of_def_steps_is_killed_from_another_thread():
    """The kill takes effect at the end of the running ``def`` step: run() raises with the
    kill's message and no further step runs."""
    answers: list[str] = []

    def killer() -> None:
        try:
            for _ in range(4000):
                nodes = find_processes(state="running", process_label="NappingChain")
                if nodes and _naps(nodes[0]):
                    answers.append(control.kill(nodes[0], "stop now", wait=True, timeout=60))
                    return
                threading.Event().wait(0.005)
        finally:
            open_gate("never")  # a run that the kill missed ends instead of running for good

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        with pytest.raises(ProcessKilledError, match="stop now"):
            run(NappingChain, gate=Str("never"))
    finally:
        thread.join(timeout=120)
    (node,) = find_processes(process_label="NappingChain")
    assert answers == [f"killed process {node.pk}"]
    assert node.process_state is ProcessState.KILLED
    assert node.process_status == "stop now" and node.exit_status is None
    assert "naps" not in node.outputs


async def test_a_paused_chain_of_def_steps_stops_at_the_step_boundary_and_can_be_killed():
    task = asyncio.create_task(arun_get_node(NappingChain, gate=Str("never")))
    (pk,) = await _running("NappingChain")
    assert "paused" in await asyncio.to_thread(control.pause, pk, wait=True, timeout=60)
    # the owner took the request at a step boundary: no step runs until it is played
    node = load_node(pk)
    assert node.paused and node.process_status == PAUSE_STATUS
    naps = _naps(node)
    answer = await asyncio.to_thread(control.kill, pk, "paused and killed", wait=True, timeout=60)
    assert answer == f"killed process {pk}"
    with pytest.raises(ProcessKilledError, match="paused and killed"):
        await task
    node = load_node(pk)
    assert node.process_state is ProcessState.KILLED
    assert node.process_status == "paused and killed"
    assert _naps(node) == naps  # killed where it was paused: no step ran in between


async def test_kill_and_pause_reach_a_chain_of_def_steps_on_a_worker():
    from miniengine import asubmit
    from miniengine.daemon import Worker

    async with Worker(slots=4):
        killed = await asubmit(NappingChain, gate=Str("never"))
        await _until(lambda: _naps(killed) > 0, "the worker to run its steps")
        answer = await asyncio.to_thread(control.kill, killed, "stop now", wait=True, timeout=60)
        assert answer == f"killed process {killed.pk}"
        assert killed.process_state is ProcessState.KILLED
        assert killed.process_status == "stop now" and "naps" not in killed.outputs

        paused = await asubmit(NappingChain, gate=Str("never"))
        await _until(lambda: _naps(paused) > 0, "the worker to run its steps")
        await asyncio.to_thread(control.pause, paused, wait=True, timeout=60)
        # at the step boundary the worker hands the paused process back and holds no lease
        await _until(lambda: paused.lease[0] is None, "the paused process to be released")
        assert paused.paused and paused.process_state is ProcessState.RUNNING
        naps = _naps(paused)
        answer = await asyncio.to_thread(control.kill, paused, "paused and killed", wait=True)
        assert answer == f"killed process {paused.pk}"  # nobody holds it: killed in the database
        assert paused.process_state is ProcessState.KILLED
        assert paused.process_status == "paused and killed" and _naps(paused) == naps


def _hold_for_a_dead_owner(node: ProcessNode) -> None:
    """Make ``node`` look held by a live owner that will never act (a worker SIGKILLed in the
    middle of a step, before its lease was released)."""
    sql.execute(
        os.environ["MINIENGINE_DB"],
        "UPDATE nodes SET owner = 'worker:gone', lease_expires = ? WHERE pk = ?",
        time.time() + 3600,
        node.pk,
    )


def _release_the_dead_owner(node: ProcessNode) -> None:
    """What the supervisor does when it reaps the dead worker: its leases expire now."""
    store = node.store
    assert store is not None
    store.broker.release_owner("worker:gone")


async def test_a_kill_pending_when_its_owner_died_is_honoured_by_the_next_claim():
    from miniengine import asubmit
    from miniengine.daemon import Worker

    node = await asubmit(NappingChain, gate=Str("never"))
    _hold_for_a_dead_owner(node)
    answer = await asyncio.to_thread(control.kill, node, "while away")
    assert answer == f"asked the owner of process {node.pk} to kill it"
    assert node.process_state is ProcessState.CREATED
    _release_the_dead_owner(node)
    async with Worker(slots=2):
        await _until(lambda: node.is_terminated, "the worker to claim it")
    assert node.process_state is ProcessState.KILLED
    assert node.process_status == "while away"
    assert not any("|setup]" in entry.message or "|nap]" in entry.message for entry in node.logs)


async def test_a_pause_pending_when_its_owner_died_holds_the_process_until_played():
    from miniengine import asubmit, await_node
    from miniengine.daemon import Worker

    node = await asubmit(WaitingProcess, gate=Str("pending pause"))
    _hold_for_a_dead_owner(node)
    await asyncio.to_thread(control.pause, node)
    _release_the_dead_owner(node)
    async with Worker(slots=2) as worker:
        # the worker's recovery queues the process again and its claim drops the task
        await _until(
            lambda: worker.processed > 0 and not _live_tasks(node.pk),
            "the worker to claim and drop its task",
        )
        assert node.paused and node.lease[0] is None and not node.is_terminated
        assert worker.busy == 0  # it holds no slot
        await asyncio.to_thread(control.play, node)
        await asyncio.to_thread(open_gate, "pending pause")
        await await_node(node, timeout=30)
    assert node.is_finished_ok


def _live_tasks(pk: int) -> bool:
    return bool(
        sql.query(
            os.environ["MINIENGINE_DB"],
            "SELECT 1 FROM tasks WHERE process_pk = ? AND status IN ('ready', 'leased')",
            pk,
        )
    )


async def test_a_pending_kill_honoured_at_claim_kills_the_children_too():
    from miniengine import asubmit
    from miniengine.daemon import Worker

    async with Worker(slots=2, stop_timeout=0.1):
        parent = await asubmit(ParentOfWaiting, gate=Str("never"))
        await _until(lambda: parent.process_state is ProcessState.WAITING, "the parent to wait")
        (child,) = parent.called
        await _until(lambda: child.process_state is ProcessState.RUNNING, "the child to run")
    # the worker stopped: both hold no lease now; make them look held by a worker that then dies
    _hold_for_a_dead_owner(parent)
    _hold_for_a_dead_owner(child)
    answer = await asyncio.to_thread(control.kill, parent, "tidy up")
    assert answer == f"asked the owner of process {parent.pk} to kill it"
    _release_the_dead_owner(parent)
    async with Worker(slots=2):
        await _until(lambda: parent.is_terminated and child.is_terminated, "the kills")
    assert (parent.process_state, parent.process_status) == (ProcessState.KILLED, "tidy up")
    assert child.process_state is ProcessState.KILLED
    assert child.process_status == f"tidy up (its caller {parent.pk} was killed)"
    assert "seen" not in parent.outputs and "passed" not in child.outputs
