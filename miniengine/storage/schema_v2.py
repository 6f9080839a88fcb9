"""Schema version 2: the broker's tables, in the same file as the provenance.

Keeping the queue next to the nodes makes "store the process" and "enqueue it" one transaction,
so nothing is ever enqueued without its node or stored without its task.

- ``tasks``: work for the daemon (start or continue a process), ready -> leased -> done, with a
  unique ``dedup_key`` so that the same wake-up is never enqueued twice.
- ``awaited`` and ``waits``: which children a waiting parent still needs, and how many; a child's
  terminal transaction decrements the count and, at zero, enqueues the parent in that same
  transaction (nobody polls for children; a fan-out of N costs O(N)).
- ``call_memo``: the children a step launched, by (parent, step sequence number, call index),
  so that a step replayed after a crash reuses them instead of duplicating them.
- ``workers``: the live workers and their heartbeats, for ``daemon status``.
"""

from __future__ import annotations

__all__ = ["SCHEMA_V2"]

SCHEMA_V2 = """
ALTER TABLE nodes ADD COLUMN submitted INTEGER NOT NULL DEFAULT 0;

CREATE TABLE tasks (
    pk             INTEGER PRIMARY KEY,
    process_pk     INTEGER NOT NULL REFERENCES nodes (pk),
    dedup_key      TEXT NOT NULL UNIQUE,
    status         TEXT NOT NULL DEFAULT 'ready',
    worker         TEXT,
    lease_expires  REAL,
    not_before     REAL NOT NULL DEFAULT 0,
    attempts       INTEGER NOT NULL DEFAULT 0,
    ctime          REAL NOT NULL
);
CREATE INDEX tasks_ready ON tasks (not_before, pk) WHERE status = 'ready';
CREATE INDEX tasks_leased ON tasks (worker) WHERE status = 'leased';
CREATE INDEX tasks_process ON tasks (process_pk);

CREATE TABLE waits (
    parent_pk      INTEGER PRIMARY KEY REFERENCES nodes (pk),
    seq            INTEGER NOT NULL,
    outstanding    INTEGER NOT NULL
);

CREATE TABLE awaited (
    child_pk       INTEGER NOT NULL REFERENCES nodes (pk),
    parent_pk      INTEGER NOT NULL REFERENCES nodes (pk),
    PRIMARY KEY (child_pk, parent_pk)
) WITHOUT ROWID;

CREATE TABLE call_memo (
    parent_pk      INTEGER NOT NULL REFERENCES nodes (pk),
    seq            INTEGER NOT NULL,
    call_index     INTEGER NOT NULL,
    process_type   TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    child_pk       INTEGER NOT NULL REFERENCES nodes (pk),
    PRIMARY KEY (parent_pk, seq, call_index)
) WITHOUT ROWID;

CREATE TABLE workers (
    id             TEXT PRIMARY KEY,
    pid            INTEGER NOT NULL,
    hostname       TEXT NOT NULL,
    slots          INTEGER NOT NULL,
    busy           INTEGER NOT NULL DEFAULT 0,
    started        REAL NOT NULL,
    heartbeat      REAL NOT NULL
);
"""
