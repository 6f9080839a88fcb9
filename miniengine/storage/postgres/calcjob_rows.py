"""The SQL of CalcJobs on PostgreSQL (the port of ``storage/calcjob_rows.py``).

Stage commits are fenced like a WorkChain step's.  Two wake-ups race on sqlite only in theory
(its writers are serialised) and are ordered here by row locks: a stage commit that evicts the
process holds the node's row from its first UPDATE, and the watcher's ``job_done_tx`` locks that
row before deciding whether the process is held; whichever commits second sees what the first
did, so the continuation is enqueued exactly when the process is free and its job done.  The
watchers claim unwatched jobs with ``FOR UPDATE SKIP LOCKED``, so several never wait for (or
double-claim) each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from miniengine.storage.attribute_json import attributes_json_text
from miniengine.storage.calcjob_rows import _JOB_COLUMNS, _job_row, _unpack_dict
from miniengine.storage.interfaces.calcjobs import (
    CALCJOB_TYPE,
    CalcJobCommit,
    CalcJobInfo,
    CleanableCalcJob,
    JobRow,
    JobStateChange,
)
from miniengine.storage.interfaces.provenance import pack_attributes, unpack_attributes
from miniengine.storage.postgres import broker_rows, checkpoint_rows
from miniengine.storage.postgres.clock import SERVER_NOW, lease_seconds
from miniengine.storage.postgres.read import OneQuery
from miniengine.storage.postgres.rows import (
    begin_process_tx,
    check_lease,
    executemany,
)
from miniengine.storage.rows import log_rows

if TYPE_CHECKING:
    from miniengine.storage.interfaces.provenance import LogEntry, NewProcess
    from miniengine.storage.postgres.rows import Connection

__all__ = [
    "CALCJOB_TYPE",
    "active_stages",
    "calcjob_commit_tx",
    "calcjob_info",
    "claim_jobs_tx",
    "cleanable_calcjobs",
    "create_calcjob_tx",
    "drop_job_tx",
    "finish_calcjob_tx",
    "has_unwatched_jobs",
    "job_done_tx",
    "job_states_tx",
    "merge_attributes",
    "output_tree",
    "pause_stage_tx",
    "pause_watched_tx",
    "read_job",
    "read_watched_jobs",
    "release_jobs_tx",
    "renew_jobs",
    "set_computer_tx",
    "stage_status_tx",
]

_INSERT_ERROR_LOG = (
    "INSERT INTO logs (node_pk, time, levelname, message) VALUES (%s, %s, 'ERROR', %s)"
)


def merge_attributes(connection: Connection, pk: int, values: dict[str, Any]) -> None:
    """Set ``values`` among the node's attributes (a ``None`` value removes the key); the row
    is locked while its attributes are read, changed and written back."""
    if not values:
        return
    row = connection.execute(
        "SELECT attributes FROM nodes WHERE pk = %s FOR NO KEY UPDATE", (pk,)
    ).fetchone()
    current = unpack_attributes(row[0]) if row is not None else None
    attributes: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
    for key, value in values.items():
        if value is None:
            attributes.pop(key, None)
        else:
            attributes[key] = value
    connection.execute(
        "UPDATE nodes SET attributes = %s, attributes_json = %s::jsonb WHERE pk = %s",
        (pack_attributes(attributes), attributes_json_text(attributes), pk),
    )


def create_calcjob_tx(
    connection: Connection,
    new: NewProcess,
    computer_uuid: str,
    checkpoint: Callable[[list[int]], bytes],
    enqueue: bool,
    memo: tuple[int, int, int, str] | None = None,
) -> tuple[int, list[int]]:
    """Create a CalcJob node with its inputs, computer and first checkpoint (and, for the
    daemon, its start task) in one transaction; a memoised call of a replayed step is reused."""
    if memo is None:
        pk, input_pks = begin_process_tx(connection, new)
    else:
        pk, input_pks, outcome = checkpoint_rows.begin_memoised_tx(connection, new, memo)
        if outcome != "new":
            return pk, [data.pk for _, data in new.inputs]  # type: ignore[misc]
    checkpoint_rows.write_checkpoint(connection, pk, 0, checkpoint(input_pks))
    set_computer_tx(connection, pk, computer_uuid)
    if enqueue:
        broker_rows.enqueue(connection, pk, f"start:{pk}", time.time())
    return pk, input_pks


def calcjob_commit_tx(connection: Connection, commit: CalcJobCommit) -> tuple[list[int], bool]:
    """Write a stage's state, attributes, checkpoint, outputs (CREATE links) and logs, fenced.

    Returns the output pks and whether the process has been paused meanwhile (from the fenced
    UPDATE, which holds the row until the commit).
    """
    now = time.time()
    output_pks, paused = checkpoint_rows.write_progress(connection, commit, "create", now)
    merge_attributes(connection, commit.pk, commit.attributes)
    if commit.job is not None:
        # sqlite's INSERT OR REPLACE: a new row, every other column back to its default
        connection.execute(
            "INSERT INTO calcjob_jobs (process_pk, computer_uuid, job_id, created) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (process_pk) DO UPDATE SET "
            "computer_uuid = excluded.computer_uuid, job_id = excluded.job_id, "
            "created = excluded.created, owner = NULL, lease_expires = NULL, done = 0, "
            "scheduler_state = NULL, detailed_info = NULL",
            (commit.pk, commit.job[0], commit.job[1], now),
        )
    if commit.drop_job:
        connection.execute("DELETE FROM calcjob_jobs WHERE process_pk = %s", (commit.pk,))
    if commit.evict:
        checkpoint_rows.evict(connection, commit.pk, commit.task_pk)
        # the job may have ended (and been seen) before this commit: wake the process now
        done = connection.execute(
            "SELECT job_id FROM calcjob_jobs WHERE process_pk = %s AND done = 1", (commit.pk,)
        ).fetchone()
        if done is not None:
            broker_rows.enqueue(connection, commit.pk, f"job:{commit.pk}:{done[0]}", now)
    return output_pks, paused


def pause_stage_tx(connection: Connection, pk: int, owner: str, epoch: int, message: str,
                   release: bool, task_pk: int | None) -> None:  # fmt: skip
    """Pause a CalcJob whose transport stage kept failing; ``message`` names stage and error.

    With ``release`` (the daemon) its lease is freed and its task acknowledged.  Fenced.
    """
    now = time.time()
    cursor = connection.execute(
        "UPDATE nodes SET paused = 1, process_status = %s, mtime = %s "
        "WHERE pk = %s AND owner = %s AND lease_epoch = %s",
        (message, now, pk, owner, epoch),
    )
    if cursor.rowcount != 1:
        check_lease(connection, pk, owner, epoch)
    connection.execute(_INSERT_ERROR_LOG, (pk, now, message))
    if release:
        checkpoint_rows.evict(connection, pk, task_pk)


def stage_status_tx(connection: Connection, pk: int, owner: str, epoch: int,
                    status: str, logs: Sequence[LogEntry]) -> None:  # fmt: skip
    """Show what a stage is doing now (a transport retry and its backoff), fenced."""
    now = time.time()
    cursor = connection.execute(
        "UPDATE nodes SET process_status = CASE WHEN paused <> 0 THEN process_status "
        "ELSE %s END, mtime = %s WHERE pk = %s AND owner = %s AND lease_epoch = %s",
        (status, now, pk, owner, epoch),
    )
    if cursor.rowcount != 1:
        check_lease(connection, pk, owner, epoch)
    executemany(
        connection,
        "INSERT INTO logs (node_pk, time, levelname, message) VALUES (%s, %s, %s, %s)",
        log_rows(pk, logs, now),
    )


def read_job(connection: Connection, pk: int) -> JobRow | None:
    row = connection.execute(
        f"SELECT {_JOB_COLUMNS} FROM calcjob_jobs j JOIN nodes n ON n.pk = j.process_pk "
        "WHERE j.process_pk = %s",
        (pk,),
    ).fetchone()
    return _job_row(row) if row is not None else None


def claim_jobs_tx(connection: Connection, owner: str, expires: float, now: float) -> int:
    """Take every job that nobody watches (new, or its watcher's lease expired); jobs another
    watcher is claiming at this moment are skipped, not waited for."""
    return connection.execute(
        f"UPDATE calcjob_jobs SET owner = %s, lease_expires = {SERVER_NOW} + %s "
        "WHERE process_pk IN (SELECT process_pk FROM calcjob_jobs WHERE done = 0 AND "
        f"(owner IS NULL OR lease_expires < {SERVER_NOW}) FOR UPDATE SKIP LOCKED)",
        (owner, lease_seconds(expires, now)),
    ).rowcount


def pause_watched_tx(connection: Connection, pks: Sequence[int], message: str) -> None:
    """Pause evicted CalcJobs whose scheduler could not be asked (``message`` says why); their
    watcher leaves paused ones alone until ``play``."""
    now = time.time()
    for pk in pks:
        cursor = connection.execute(
            "UPDATE nodes SET paused = 1, process_status = %s, mtime = %s WHERE pk = %s "
            "AND process_state IN ('created', 'running', 'waiting') AND owner IS NULL",
            (message, now, pk),
        )
        if cursor.rowcount == 1:
            connection.execute(_INSERT_ERROR_LOG, (pk, now, message))


#: ``(connection, now)``: whether a job waits for a watcher (cheap: the watcher writes only
#: when one does; ``now`` is the server's clock, as for every lease)
has_unwatched_jobs: OneQuery[[float], bool] = OneQuery(
    "has_unwatched_jobs",
    "SELECT 1 FROM calcjob_jobs WHERE done = 0 AND "
    f"(owner IS NULL OR lease_expires < {SERVER_NOW}) LIMIT 1",
    bool,
    lambda now: (),
)


def _job_rows(rows: Sequence[Sequence[Any]]) -> list[JobRow]:
    return [_job_row(row) for row in rows]


#: ``(connection, owner)``: the jobs ``owner`` watches that are not known to be done
read_watched_jobs: OneQuery[[str], list[JobRow]] = OneQuery(
    "read_watched_jobs",
    f"SELECT {_JOB_COLUMNS} FROM calcjob_jobs j JOIN nodes n ON n.pk = j.process_pk "
    "WHERE j.owner = %s AND j.done = 0 AND n.paused = 0 "
    "ORDER BY j.computer_uuid, j.process_pk",
    _job_rows,
)


def job_done_tx(connection: Connection, pk: int, job_id: str, owner: str,
                scheduler_state: str | None, detailed_info: Any) -> bool:  # fmt: skip
    """The job ended: record the scheduler's last word and enqueue the process's continuation
    (unless it is still held by the run that committed the job: it wakes itself then).  False
    if another watcher took the row over meanwhile."""
    now = time.time()
    cursor = connection.execute(
        "UPDATE calcjob_jobs SET done = 1, owner = NULL, lease_expires = NULL, "
        "scheduler_state = %s, detailed_info = %s WHERE process_pk = %s AND job_id = %s "
        "AND owner = %s AND done = 0",
        (scheduler_state, pack_attributes(detailed_info), pk, job_id, owner),
    )
    if cursor.rowcount != 1:
        return False
    merge_attributes(connection, pk, {"scheduler_state": scheduler_state})
    row = connection.execute(
        "SELECT process_state, owner, lease_expires FROM nodes WHERE pk = %s FOR NO KEY UPDATE",
        (pk,),
    ).fetchone()
    if row is not None and row[0] in broker_rows.ACTIVE_STATES and row[1] is None:
        broker_rows.enqueue(connection, pk, f"job:{pk}:{job_id}", now)
    return True


def job_states_tx(connection: Connection, owner: str,
                  changes: Sequence[JobStateChange]) -> None:  # fmt: skip
    """Record what the scheduler says of jobs that are still running: the state on the job's
    row and on its node, the status text on the node unless it was paused or taken over
    meanwhile.  One transaction per poll."""
    now = time.time()
    for pk, job_id, state, status in changes:
        cursor = connection.execute(
            "UPDATE calcjob_jobs SET scheduler_state = %s WHERE process_pk = %s "
            "AND job_id = %s AND owner = %s AND done = 0",
            (state, pk, job_id, owner),
        )
        if cursor.rowcount != 1:
            continue
        merge_attributes(connection, pk, {"scheduler_state": state})
        connection.execute(
            "UPDATE nodes SET process_status = %s, mtime = %s WHERE pk = %s AND owner IS NULL "
            "AND paused = 0 AND process_state = 'waiting'",
            (status, now, pk),
        )


def drop_job_tx(connection: Connection, pk: int, owner: str) -> None:
    """Forget a job that its watcher cancelled (its process was killed while evicted)."""
    connection.execute("DELETE FROM calcjob_jobs WHERE process_pk = %s AND owner = %s", (pk, owner))


def renew_jobs(connection: Connection, owner: str, expires: float) -> None:
    """Heartbeat: extend the leases of the jobs ``owner`` watches."""
    connection.execute(
        f"UPDATE calcjob_jobs SET lease_expires = {SERVER_NOW} + %s WHERE owner = %s AND done = 0",
        (lease_seconds(expires), owner),
    )


def release_jobs_tx(connection: Connection, owner: str) -> None:
    """A worker stops: its jobs are watched by whoever claims them next."""
    connection.execute(
        "UPDATE calcjob_jobs SET owner = NULL, lease_expires = NULL WHERE owner = %s", (owner,)
    )


def finish_calcjob_tx(connection: Connection, finish: Any) -> list[int]:
    """Terminate a CalcJob (``rows.finish_process_tx``) and forget its job in the same commit."""
    from miniengine.storage.postgres.rows import finish_process_tx

    output_pks = finish_process_tx(connection, finish)
    connection.execute("DELETE FROM calcjob_jobs WHERE process_pk = %s", (finish.pk,))
    return output_pks


def set_computer_tx(connection: Connection, pk: int, computer_uuid: str) -> None:
    """Record the computer a CalcJob runs on (``nodes.computer_pk``)."""
    connection.execute(
        "UPDATE nodes SET computer_pk = (SELECT pk FROM computers WHERE uuid = %s) WHERE pk = %s",
        (computer_uuid, pk),
    )


# what the command line shows ---------------------------------------------------------------


def calcjob_info(connection: Connection, pk: int) -> CalcJobInfo | None:
    """The CalcJob ``pk`` with its computer, or None if ``pk`` is not a CalcJob."""
    row = connection.execute(
        "SELECT n.pk, n.process_state, n.mtime, n.attributes, c.pk, c.label, c.uuid "
        "FROM nodes n LEFT JOIN computers c ON c.pk = n.computer_pk "
        "WHERE n.pk = %s AND n.node_type = %s",
        (pk, CALCJOB_TYPE),
    ).fetchone()
    if row is None:
        return None
    return CalcJobInfo(row[0], row[1], row[2], _unpack_dict(row[3]), row[4], row[5], row[6])


def output_tree(connection: Connection, pk: int, label: str) -> dict[str, Any] | None:
    """The file tree of the output ``label`` (``retrieved``) of ``pk``, or None if it has none."""
    row = connection.execute(
        "SELECT n.attributes FROM links l JOIN nodes n ON n.pk = l.out_pk "
        "WHERE l.in_pk = %s AND l.link_type = 'create' AND l.label = %s ORDER BY l.pk LIMIT 1",
        (pk, label),
    ).fetchone()
    if row is None:
        return None
    tree = _unpack_dict(row[0]).get("_repository")
    return tree if isinstance(tree, dict) else {}


def active_stages(connection: Connection, pks: Sequence[int]) -> dict[int, str]:
    """The stage (``uploading``, ``withscheduler``, ...) of each CalcJob among ``pks``."""
    stages: dict[int, str] = {}
    if not pks:
        return stages
    for pk, blob in connection.execute(
        "SELECT pk, attributes FROM nodes WHERE pk = ANY(%s) AND node_type = %s",
        (list(pks), CALCJOB_TYPE),
    ):
        stage = _unpack_dict(blob).get("state")
        if stage is not None:
            stages[int(pk)] = str(stage)
    return stages


def cleanable_calcjobs(
    connection: Connection,
    pks: Sequence[int] | None,
    newer_than: float | None,
    older_than: float | None,
    computers: Sequence[str] | None,
) -> list[CleanableCalcJob]:
    """The CalcJobs with a remote folder: those in ``pks`` (all if None), modified after
    ``newer_than`` and before ``older_than`` (epoch seconds), on a computer whose label is in
    ``computers``; oldest first."""
    query = (
        "SELECT n.pk, n.process_state, r.pk FROM nodes n "
        "JOIN links l ON l.in_pk = n.pk AND l.link_type = 'create' AND l.label = 'remote_folder' "
        "JOIN nodes r ON r.pk = l.out_pk LEFT JOIN computers c ON c.pk = n.computer_pk "
        "WHERE n.node_type = %s"
    )
    params: list[Any] = [CALCJOB_TYPE]
    if pks is not None:
        query += " AND n.pk = ANY(%s)"
        params.append(list(pks))
    if newer_than is not None:
        query += " AND n.mtime > %s"
        params.append(newer_than)
    if older_than is not None:
        query += " AND n.mtime < %s"
        params.append(older_than)
    if computers is not None:
        query += " AND c.label = ANY(%s)"
        params.append(list(computers))
    query += " ORDER BY n.pk"
    return [
        CleanableCalcJob(int(pk), state, int(remote))
        for pk, state, remote in connection.execute(query, params)
    ]
