"""The checkpoints concern of a backend (``store.checkpoints``), the checkpoint as a typed value,
the run and daemon modes, and loading a process from its checkpoint.

The WorkChain runtime and the daemon's worker reach leases, step commits and checkpoints through
this interface only, so a second database implements the same methods; these tests pin what
goes in and what comes out.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from miniengine import Int
from miniengine.core import codec
from miniengine.core.checkpoint import Checkpoint, CheckpointHead, peek, with_refs
from miniengine.core.ids import new_uuid
from miniengine.exceptions import CheckpointError, LeaseLostError, NotExistent
from miniengine.runtime.mode import DaemonMode, RunMode
from miniengine.runtime.workchain.load import (
    IMPORT_STAGE,
    READ_STAGE,
    LoadError,
    decode_checkpoint,
    load_process,
)
from miniengine.storage.interfaces import Backend
from miniengine.storage.interfaces.checkpoints import (
    Created,
    StepCommit,
    StepCommitted,
    StoredCheckpoint,
)
from miniengine.storage.interfaces.provenance import NewProcess
from miniengine.storage.open import open_backend
from tests.services import sql

pytestmark = pytest.mark.backends

CLASS_PATH = "tests.workchains.daemon_chains:LeafWorkChain"


@pytest.fixture
def store(miniengine_db: Path | str) -> Iterator[Backend]:
    opened = open_backend(miniengine_db, lease_timeout=0.4)
    try:
        yield opened
    finally:
        opened.close()


def new_workchain(store: Backend, x: Int, state: str = "created") -> NewProcess:
    claimed = state != "created"
    return NewProcess(
        uuid=new_uuid(),
        node_type="process.workchain",
        process_type="tests.workchains.daemon_chains.LeafWorkChain",
        process_label="LeafWorkChain",
        process_state=state,
        label="",
        description="",
        inputs=[("x", x)],
        input_link_type="input_work",
        owner=store.owner if claimed else None,
        lease_expires=store.lease_expiry() if claimed else None,
        call_link_type="call_work",
    )


def create(store: Backend, enqueue: bool = False) -> Created:
    x = Int(4)
    return store.checkpoints.create_workchain(
        new_workchain(store, x), CLASS_PATH, {"x": x}, enqueue, None
    )


def test_create_workchain_writes_the_node_and_its_first_checkpoint(store: Backend) -> None:
    created = create(store)
    assert isinstance(created, Created)
    assert store.provenance.node(created.pk).process_state == "created"
    stored = store.checkpoints.read_checkpoint(created.pk)
    assert isinstance(stored, StoredCheckpoint) and stored.seq == 0
    checkpoint = Checkpoint.decode(stored.data)
    assert checkpoint.class_path == CLASS_PATH
    assert checkpoint.inputs == {"x": codec.NodeRef(created.input_pks[0])}  # by pk, not value
    assert (checkpoint.cursor, checkpoint.seq, checkpoint.awaiting) == (None, 0, [])
    assert store.checkpoints.read_checkpoint(created.pk + 100) is None


@pytest.mark.parametrize("inputs", [0, 1, 3])
@pytest.mark.parametrize("enqueue", [False, True])
def test_a_created_workchain_has_its_checkpoint_and_its_start_task_if_queued(
    store: Backend, miniengine_db: Path | str, inputs: int, enqueue: bool
) -> None:
    """With or without inputs (on PostgreSQL the row, links, checkpoint and task go in one
    statement when there are links to write, in several when there are none)."""
    values = [Int(10 + i) for i in range(inputs)]
    new = new_workchain(store, Int(0))
    new = dataclasses.replace(new, inputs=[(f"x{i}", value) for i, value in enumerate(values)])
    created = store.checkpoints.create_workchain(
        new, CLASS_PATH, {f"x{i}": value for i, value in enumerate(values)}, enqueue, None
    )
    assert len(created.input_pks) == inputs
    stored = store.checkpoints.read_checkpoint(created.pk)
    assert stored is not None and stored.seq == 0
    assert Checkpoint.decode(stored.data).inputs == {
        f"x{i}": codec.NodeRef(pk) for i, pk in enumerate(created.input_pks)
    }
    links = sql.query(
        miniengine_db, "SELECT in_pk, label FROM links WHERE out_pk = ? ORDER BY pk", created.pk
    )
    assert links == [(pk, f"x{i}") for i, pk in enumerate(created.input_pks)]
    tasks = sql.query(
        miniengine_db, "SELECT dedup_key, status FROM tasks WHERE process_pk = ?", created.pk
    )
    assert tasks == ([(f"start:{created.pk}", "ready")] if enqueue else [])


def test_read_process_gives_the_node_and_its_checkpoint_together(store: Backend) -> None:
    created = create(store)
    row, checkpoint = store.checkpoints.read_process(created.pk)
    assert row == store.provenance.node(created.pk)
    assert checkpoint == store.checkpoints.read_checkpoint(created.pk) and checkpoint is not None
    assert Checkpoint.decode(checkpoint.data).class_path == CLASS_PATH
    data_pk = created.input_pks[0]  # a node with no checkpoint
    assert store.checkpoints.read_process(data_pk) == (store.provenance.node(data_pk), None)
    for missing in (created.pk + 100, 2**70):
        with pytest.raises(NotExistent, match=f"no node with the pk {missing}"):
            store.checkpoints.read_process(missing)


def test_read_processes_reads_several_as_read_process_does_each(store: Backend) -> None:
    first, second = create(store), create(store)
    data_pk = first.input_pks[0]
    pks = [second.pk, first.pk, data_pk, first.pk + second.pk + 100, 2**70, second.pk]
    found = store.checkpoints.read_processes(pks)
    assert set(found) == {first.pk, second.pk, data_pk}  # the missing pks are left out
    for pk in found:
        assert found[pk] == store.checkpoints.read_process(pk)
    assert store.checkpoints.read_processes([]) == {}


def test_a_decode_takes_the_data_nodes_read_ahead_and_reads_the_rest(store: Backend) -> None:
    """A daemon worker reads the stored nodes that a claim's checkpoints name in one query; a
    decode takes its Data nodes from those rows (objects of its own) and reads only the others."""
    from miniengine.runtime.nodes import rows_read_ahead

    x, a, b = (Int(value).store() for value in (1, 20, 300))
    blob = Checkpoint(CLASS_PATH, {"x": x}, ctx={"a": a, "b": b}).encode()
    ahead = store.provenance.nodes([x.pk, a.pk])
    counting: Any = _CountingNodes(store)
    with rows_read_ahead(ahead):
        decoded = decode_checkpoint(counting, blob)
    assert counting.asked == [[b.pk]]  # only the node not read ahead
    assert (decoded.inputs["x"].value, decoded.ctx["a"].value, decoded.ctx["b"].value) == (
        1,
        20,
        300,
    )
    assert decoded.inputs["x"].pk == x.pk and decoded.inputs["x"].is_stored
    with rows_read_ahead(ahead):
        again = decode_checkpoint(counting, blob)
    assert again.inputs["x"] is not decoded.inputs["x"]  # each decode builds its own objects
    decode_checkpoint(counting, blob)  # outside the block, everything is read
    assert sorted(counting.asked[-1]) == sorted([x.pk, a.pk, b.pk])


def test_claim_fences_and_a_step_commit_answers_typed(store: Backend) -> None:
    pk = create(store).pk
    checkpoints = store.checkpoints
    epoch = checkpoints.claim_process(pk, store.owner, store.lease_expiry(), "running")
    with pytest.raises(LeaseLostError, match="is owned by"):
        checkpoints.claim_process(pk, "someone-else", store.lease_expiry(), "running")
    blob = Checkpoint(CLASS_PATH, {}, (0,), "setup", 1).encode()
    commit = StepCommit(pk, store.owner, epoch, "running", None, 1, blob, [("out", Int(5))])
    committed = checkpoints.step_commit(commit)
    assert isinstance(committed, StepCommitted) and committed.paused is False
    assert len(committed.output_pks) == 1
    assert checkpoints.read_checkpoint(pk) == StoredCheckpoint(1, blob)
    stale = StepCommit(pk, store.owner, epoch - 1, "running", None, 2, blob)
    with pytest.raises(LeaseLostError):
        checkpoints.step_commit(stale)
    assert checkpoints.read_checkpoint(pk) == StoredCheckpoint(1, blob)  # nothing written


def test_transactions_are_awaitable_on_a_loop(store: Backend) -> None:
    pk = create(store).pk

    async def main() -> int:
        return await store.checkpoints.claim_process.aio(
            pk, store.owner, store.lease_expiry(), "running"
        )

    assert asyncio.run(main()) >= 1
    assert store.provenance.node(pk).owner == store.owner


def test_kill_unstarted_and_except_unless_owned(store: Backend) -> None:
    first, second = create(store).pk, create(store).pk
    store.checkpoints.kill_unstarted(first, "Killed: never started")
    killed = store.provenance.node(first)
    assert (killed.process_state, killed.process_status) == ("killed", "Killed: never started")
    store.checkpoints.claim_process(second, "a-live-owner", store.lease_expiry() + 60, "running")
    with pytest.raises(LeaseLostError):
        store.checkpoints.except_unless_owned(second, store.owner, "cannot resume")
    assert store.provenance.node(second).process_state == "running"  # left alone


def test_a_pause_request_is_taken_once(store: Backend, miniengine_db: Path | str) -> None:
    pk = create(store).pk
    store.checkpoints.claim_process(pk, store.owner, store.lease_expiry(), "running")
    assert store.control.pause(pk).live  # a live owner: a request for it to take

    def request() -> Any:
        ((control,),) = sql.query(miniengine_db, "SELECT control FROM nodes WHERE pk = ?", pk)
        return control

    assert request() == "pause"
    store.checkpoints.take_pause_request(pk)
    assert request() is None
    assert store.provenance.node(pk).paused  # still paused: only the request was taken


def test_parents_waiting_for_the_same_children_each_wake_when_their_last_one_ends(
    store: Backend, miniengine_db: Path | str
) -> None:
    """A child's end wakes every parent waiting for it, whichever order each parent named its
    children in; an end that no parent waits for wakes nobody."""
    from miniengine.storage.interfaces.provenance import FinishProcess

    checkpoints = store.checkpoints
    first, second, third, child_a, child_b, alone = (create(store).pk for _ in range(6))
    epochs = {
        pk: checkpoints.claim_process(pk, store.owner, store.lease_expiry(), "running")
        for pk in (first, second, third, child_a, child_b, alone)
    }
    blob = Checkpoint(CLASS_PATH, {}, (0,), "setup", 1).encode()
    waits = {first: [child_a, child_b], second: [child_b, child_a], third: [child_b]}
    for parent, children in waits.items():
        checkpoints.step_commit(
            StepCommit(
                parent, store.owner, epochs[parent], "waiting", None, 1, blob, wait_for=children
            )
        )

    def woken() -> list[int]:
        return sorted(
            pk
            for (pk,) in sql.query(
                miniengine_db, "SELECT process_pk FROM tasks WHERE dedup_key LIKE ?", "wake:%"
            )
        )

    def end(pk: int) -> None:
        store.provenance.finish_process(FinishProcess(pk, store.owner, epochs[pk], "finished"))

    end(alone)
    assert woken() == []
    end(child_b)
    assert woken() == [third]  # the other two still wait for child_a
    end(child_a)
    assert woken() == [first, second, third]
    assert sql.count(miniengine_db, "SELECT count(*) FROM waits") == 0
    assert sql.count(miniengine_db, "SELECT count(*) FROM awaited") == 0


# the checkpoint as a value ---------------------------------------------------------------------


def test_a_checkpoint_round_trips_and_tells_its_kind() -> None:
    value = Checkpoint(
        "mod:Chain", {"n": 3}, (1, 0), "step", 4, {"i": 2}, [("child", True, 7)], {"out": 9}
    )
    assert Checkpoint.decode(value.encode()) == value
    assert peek(value.encode()) == CheckpointHead("workchain", "mod:Chain")
    calcjob = codec.encode({"k": "calcjob", "p": "mod:Job", "i": {}})
    assert peek(calcjob) == CheckpointHead("calcjob", "mod:Job")
    with pytest.raises(CheckpointError, match="names no process class"):
        peek(codec.encode({"x": 1}))
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        Checkpoint.decode(codec.encode({"p": "mod:Chain"}))


def test_with_refs_names_just_stored_data_by_pk() -> None:
    fresh, other = Int(1), Int(2)
    assert with_refs({"a": fresh, "b": {"c": other}}, {id(fresh): 11}) == {
        "a": codec.NodeRef(11),
        "b": {"c": other},
    }


# modes and loading ---------------------------------------------------------------------------


class _Worker:
    stopping = False


def test_the_modes_answer_what_the_lifecycle_asks() -> None:
    worker = _Worker()
    daemon = DaemonMode(worker, task_pk=5)
    assert (daemon.evicts, daemon.children_via_daemon, daemon.ends_after_failed_finish) == (
        True,
        True,
        False,
    )
    assert (daemon.tree, daemon.task_pk, daemon.hands_back()) == (None, 5, False)
    worker.stopping = True
    assert daemon.hands_back()
    tree: Any = object()
    run = RunMode(tree)
    assert (run.evicts, run.children_via_daemon, run.ends_after_failed_finish) == (
        False,
        False,
        True,
    )
    assert (run.tree, run.task_pk, run.hands_back()) == (tree, None, False)


def test_load_process_says_at_which_stage_it_failed(store: Backend) -> None:
    pk = create(store).pk
    row = store.provenance.node(pk)
    with pytest.raises(LoadError) as missing:
        load_process(store, row, 1, None, DaemonMode())
    assert missing.value.stage == READ_STAGE and missing.value.class_path is None
    gone = StoredCheckpoint(0, Checkpoint("no_such_module_here:Chain", {}).encode())
    with pytest.raises(LoadError) as unimportable:
        load_process(store, row, 1, gone, DaemonMode())
    assert unimportable.value.stage == IMPORT_STAGE
    assert unimportable.value.class_path == "no_such_module_here:Chain"


class _CountingNodes:
    """A backend that records each query for nodes (``provenance.nodes``) it is asked."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.asked: list[list[int]] = []
        self.provenance = self

    def nodes(self, pks: Any) -> Any:
        self.asked.append(list(pks))
        return self.inner.provenance.nodes(pks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_the_nodes_a_checkpoint_names_are_read_in_one_query(store: Backend) -> None:
    """On a database server each query is a round trip: decoding a checkpoint asks for all the
    stored nodes it names at once, not once per node."""

    x, a, b = (Int(value).store() for value in (1, 20, 300))  # in $MINIENGINE_DB: the same
    blob = Checkpoint(CLASS_PATH, {"x": x}, ctx={"a": a, "pair": (b, x), "n": Int(5)}).encode()
    counting: Any = _CountingNodes(store)
    decoded = decode_checkpoint(counting, blob)
    assert len(counting.asked) == 1 and sorted(counting.asked[0]) == sorted([x.pk, a.pk, b.pk])
    assert decoded.inputs["x"].value == 1 and decoded.inputs["x"].pk == x.pk
    assert decoded.ctx["a"].value == 20 and decoded.ctx["pair"][0].value == 300
    assert decoded.ctx["pair"][1] is decoded.inputs["x"]  # one object per stored node
    assert not decoded.ctx["n"].is_stored


def test_the_modes_say_where_a_calcjobs_transports_come_from_and_who_watches_its_job() -> None:
    class Jobs:
        def __init__(self) -> None:
            self.woken = 0
            self.asked: list[Any] = []

        def wake(self) -> None:
            self.woken += 1

        def request(self, computer: Any) -> Any:
            self.asked.append(computer)
            return "a transport's context"

    worker: Any = _Worker()
    worker.jobs = Jobs()
    daemon = DaemonMode(worker, task_pk=5)
    daemon.job_submitted()  # the worker's job watcher leases the job of the evicted CalcJob
    assert worker.jobs.woken == 1
    assert daemon.transport("computer") == "a transport's context"
    assert worker.jobs.asked == ["computer"]
    DaemonMode().job_submitted()  # no worker (a dry run's executor): nothing to wake
    RunMode(object()).job_submitted()  # run mode: the CalcJob waits for its job on the loop
