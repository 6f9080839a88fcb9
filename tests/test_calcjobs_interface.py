"""The calcjobs and computers concerns of a backend (``store.calcjobs``, ``store.computers``).

The CalcJob runtime, its job watcher and the ``computer``, ``code`` and ``calcjob`` commands
reach the database through these interfaces only, so a second database implements the same
methods; these tests pin what goes in and what comes out, on each backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from miniengine import Int
from miniengine.core.ids import new_uuid
from miniengine.exceptions import NotExistent, ValidationError
from miniengine.storage.interfaces import Backend
from miniengine.storage.interfaces.calcjobs import (
    CalcJobCommit,
    CalcJobInfo,
    CleanableCalcJob,
    JobRow,
    JobStateChange,
)
from miniengine.storage.interfaces.computers import CodeRow, ComputerInUseError, ComputerRow
from miniengine.storage.interfaces.provenance import (
    FinishProcess,
    NewProcess,
    unpack_attributes,
)
from miniengine.storage.open import open_backend


@pytest.fixture
def store(backend_db: Path | str) -> Iterator[Backend]:
    opened = open_backend(backend_db, lease_timeout=0.4)
    try:
        yield opened
    finally:
        opened.close()


def add_computer(store: Backend, label: str = "here") -> tuple[int, str]:
    uuid = new_uuid()
    pk, _ = store.computers.insert_computer(
        uuid, label, "localhost", "", "core.local", "core.direct", {"workdir": "/tmp"}, None
    )
    return pk, uuid


def new_calcjob(store: Backend, state: str = "running") -> NewProcess:
    claimed = state != "created"
    return NewProcess(
        uuid=new_uuid(),
        node_type="process.calcjob",
        process_type="tests.Job",
        process_label="Job",
        process_state=state,
        label="",
        description="",
        inputs=[("x", Int(1))],
        input_link_type="input_calc",
        owner=store.owner if claimed else None,
        lease_expires=store.lease_expiry() if claimed else None,
        call_link_type="call_calc",
    )


def create(store: Backend, computer_uuid: str, enqueue: bool = False) -> tuple[int, list[int]]:
    seen: list[list[int]] = []

    def checkpoint(input_pks: list[int]) -> bytes:
        seen.append(input_pks)
        return b"first"

    pk, input_pks = store.calcjobs.create_calcjob(
        new_calcjob(store, "created" if enqueue else "running"),
        computer_uuid,
        checkpoint,
        enqueue,
        None,
    )
    assert seen == [input_pks]  # built inside the transaction, once the inputs had pks
    return pk, input_pks


def commit(store: Backend, pk: int, seq: int, **fields: Any) -> tuple[list[int], bool]:
    return store.calcjobs.calcjob_commit(
        CalcJobCommit(
            pk=pk,
            owner=store.owner,
            epoch=1,
            process_state="waiting",
            process_status="Monitoring scheduler: job state queued",
            seq=seq,
            checkpoint=b"stage",
            **fields,
        )
    )


def ready_tasks(store: Backend) -> list[int]:
    """The processes of the ready tasks (claimed here, so each is seen once)."""
    now = time.time()
    return [
        claim.process_pk for claim in store.broker.claim_tasks("probe", 100, now + 60, now, True)
    ]


def test_a_calcjob_is_created_with_its_computer_and_checkpoint(store: Backend) -> None:
    computer_pk, computer_uuid = add_computer(store)
    pk, [input_pk] = create(store, computer_uuid, enqueue=True)
    assert store.checkpoints.read_checkpoint(pk) == (0, b"first")
    assert ready_tasks(store) == [pk]
    info = store.calcjobs.calcjob_info(pk)
    assert isinstance(info, CalcJobInfo)
    assert (info.pk, info.computer_pk, info.computer_label, info.computer_uuid) == (
        pk,
        computer_pk,
        "here",
        computer_uuid,
    )
    assert store.calcjobs.calcjob_info(input_pk) is None  # an Int, not a CalcJob


def test_a_job_is_watched_from_its_commit_until_it_is_done(store: Backend) -> None:
    _, computer_uuid = add_computer(store)
    pk, _ = create(store, computer_uuid)
    outputs, paused = commit(
        store,
        pk,
        1,
        attributes={"state": "withscheduler", "job_id": "42"},
        outputs=[("remote_folder", Int(7))],
        logs=[("REPORT", "submitted")],
        job=(computer_uuid, "42"),
        evict=True,
    )
    assert len(outputs) == 1 and paused is False
    job = store.calcjobs.read_job(pk)
    assert job == JobRow(pk, computer_uuid, "42", False, None, None, "waiting")
    assert store.calcjobs.active_stages([pk, outputs[0]]) == {pk: "withscheduler"}

    now = time.time()
    assert store.calcjobs.has_unwatched_jobs(now)
    assert store.calcjobs.claim_jobs("watcher", now + 60, now) == 1
    assert not store.calcjobs.has_unwatched_jobs(now)
    assert store.calcjobs.read_watched_jobs("someone else") == []
    [watched] = store.calcjobs.read_watched_jobs("watcher")
    assert (watched.process_pk, watched.job_id) == (pk, "42")

    async def from_a_loop() -> bool:
        await store.calcjobs.job_states.aio(
            "watcher", [JobStateChange(pk, "42", "running", "Monitoring scheduler: running")]
        )
        return await store.calcjobs.job_done.aio(pk, "42", "watcher", "done", {"exit": 0})

    assert asyncio.run(from_a_loop()) is True
    node = store.provenance.node(pk)
    assert node.process_status == "Monitoring scheduler: running"
    assert unpack_attributes(node.attributes)["scheduler_state"] == "done"
    job = store.calcjobs.read_job(pk)
    assert job is not None and job.done and job.detailed_info == {"exit": 0}
    assert ready_tasks(store) == [pk]  # its continuation
    # another watcher that still thinks it holds the job changes nothing
    assert store.calcjobs.job_done(pk, "42", "watcher", "done", None) is False
    assert store.calcjobs.read_watched_jobs("watcher") == []


def test_a_finished_calcjob_forgets_its_job_and_can_be_cleaned(store: Backend) -> None:
    _, computer_uuid = add_computer(store)
    pk, _ = create(store, computer_uuid)
    [remote_pk], _ = commit(
        store, pk, 1, outputs=[("remote_folder", Int(7))], job=(computer_uuid, "1")
    )
    store.calcjobs.finish_calcjob(
        FinishProcess(pk=pk, owner=store.owner, epoch=1, process_state="finished", exit_status=0)
    )
    assert store.calcjobs.read_job(pk) is None
    found = store.calcjobs.cleanable_calcjobs(None, None, None, None)
    assert found == [CleanableCalcJob(pk, "finished", remote_pk)]
    assert store.calcjobs.cleanable_calcjobs([pk], None, None, ["elsewhere"]) == []
    assert store.calcjobs.cleanable_calcjobs(None, time.time() + 10, None, None) == []
    assert store.calcjobs.output_tree(pk, "remote_folder") == {}
    assert store.calcjobs.output_tree(pk, "retrieved") is None


def test_a_failing_stage_shows_its_retries_then_pauses(store: Backend) -> None:
    _, computer_uuid = add_computer(store)
    pk, _ = create(store, computer_uuid)
    store.calcjobs.stage_status(pk, store.owner, 1, "upload failed, next in 2 s", [("WARN", "x")])
    assert store.provenance.node(pk).process_status == "upload failed, next in 2 s"
    store.calcjobs.pause_stage(pk, store.owner, 1, "Pausing after failed upload", True, None)
    node = store.provenance.node(pk)
    assert (node.paused, node.process_status, node.owner) == (
        1,
        "Pausing after failed upload",
        None,
    )
    assert [log.message for log in store.provenance.logs(pk)][-1] == "Pausing after failed upload"


def test_watched_jobs_are_paused_dropped_and_released(store: Backend) -> None:
    _, computer_uuid = add_computer(store)
    pks = []
    for seq in range(3):
        pk, _ = create(store, computer_uuid)
        commit(store, pk, seq, job=(computer_uuid, str(seq)), evict=True)
        pks.append(pk)
    now = time.time()
    assert store.calcjobs.claim_jobs("watcher", now + 60, now) == 3
    store.calcjobs.pause_watched([pks[0]], "Pausing after failed transport task: update")
    assert store.provenance.node(pks[0]).paused == 1
    assert [job.process_pk for job in store.calcjobs.read_watched_jobs("watcher")] == pks[1:]
    store.calcjobs.drop_job(pks[1], "watcher")
    assert store.calcjobs.read_job(pks[1]) is None
    store.calcjobs.release_jobs("watcher")
    assert store.calcjobs.read_watched_jobs("watcher") == []
    assert store.calcjobs.claim_jobs("next", now + 60, now) == 2  # the paused one too


def test_the_heartbeat_renews_watched_jobs_only_while_asked(backend_db: Path | str) -> None:
    store = open_backend(backend_db, lease_timeout=2.0)  # a heartbeat every 0.5 s
    try:
        _, computer_uuid = add_computer(store)
        pk, _ = create(store, computer_uuid)
        commit(store, pk, 1, job=(computer_uuid, "9"), evict=True)
        now = time.time()
        assert store.calcjobs.claim_jobs(store.owner, now + 0.3, now) == 1
        with store.calcjobs.renewing_jobs(store.owner):
            store.start_heartbeat()
            time.sleep(1.2)  # long past the claim's lease: heartbeats renewed it
            assert not store.calcjobs.has_unwatched_jobs(time.time())
        deadline = time.monotonic() + 10
        while not store.calcjobs.has_unwatched_jobs(time.time()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.calcjobs.has_unwatched_jobs(time.time())  # no longer renewed: it expired
    finally:
        store.close()


def test_computers_are_stored_edited_found_and_deleted(store: Backend) -> None:
    pk, uuid = add_computer(store, "cluster")
    row = store.computers.read_computer(pk)
    assert isinstance(row, ComputerRow)
    assert (row.uuid, row.label, row.metadata, row.configuration) == (
        uuid,
        "cluster",
        {"workdir": "/tmp"},
        None,
    )
    assert store.computers.read_computer("cluster") == row
    assert store.computers.read_computer(uuid[:8]) == row
    with pytest.raises(ValidationError, match="a computer labelled 'cluster' exists already"):
        add_computer(store, "cluster")
    store.computers.update_computer(pk, {"hostname": "remote", "configuration": {"port": 22}})
    row = store.computers.read_computer(pk)
    assert (row.hostname, row.configuration) == ("remote", {"port": 22})
    assert [computer.pk for computer in store.computers.read_computers()] == [pk]

    create(store, uuid)  # a CalcJob on the computer
    with pytest.raises(ComputerInUseError, match=r"is used by 1 process\.calcjob node"):
        store.computers.delete_computer(pk)
    other, _ = add_computer(store, "spare")
    store.computers.delete_computer(other)
    with pytest.raises(NotExistent, match="no computer with the label, uuid or uuid prefix"):
        store.computers.read_computer("spare")


def test_codes_are_found_by_label_and_computer(backend_db: Path | str, tmp_path: Path) -> None:
    from miniengine.runtime.codes import InstalledCode
    from miniengine.runtime.computers import localhost_computer

    computer = localhost_computer(tmp_path / "work")
    code = InstalledCode(computer=computer, filepath_executable="/bin/true", label="truth")
    code.store()
    store = computer.store_handle
    assert store is not None
    assert store.computers.code_pks("truth", "localhost") == [code.pk]
    assert store.computers.code_pks("truth", "elsewhere") == []
    assert store.computers.code_rows() == [
        CodeRow(code.pk, "core.code.installed", "truth", "localhost")  # type: ignore[arg-type]
    ]
