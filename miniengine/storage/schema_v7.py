"""Schema version 7: the scheduler jobs that daemon workers watch for waiting CalcJobs.

- ``calcjob_jobs``: one row per CalcJob whose job is with the scheduler.  A waiting CalcJob is
  evicted to its checkpoint (no lease, no slot, no Python object): this row is all that is left of
  it in a worker.  A worker's job watcher leases rows like tasks (``owner``, ``lease_expires``,
  renewed by its heartbeat), so the jobs of a worker that died are watched by another one.
  ``done`` is set, with the scheduler's last word, in the transaction that enqueues the
  process's continuation; the row goes with the commit that ends the retrieval (or with a kill,
  once the job is cancelled).
"""

from __future__ import annotations

__all__ = ["SCHEMA_V7"]

SCHEMA_V7 = """
CREATE TABLE calcjob_jobs (
    process_pk      INTEGER PRIMARY KEY REFERENCES nodes (pk),
    computer_uuid   TEXT NOT NULL,
    job_id          TEXT NOT NULL,
    owner           TEXT,
    lease_expires   REAL,
    done            INTEGER NOT NULL DEFAULT 0,
    scheduler_state TEXT,
    detailed_info   BLOB,
    created         REAL NOT NULL
);
CREATE INDEX calcjob_jobs_owner ON calcjob_jobs (owner, computer_uuid);
"""
