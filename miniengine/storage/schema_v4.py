"""Schema version 4: process control and state-change broadcasts.

- ``nodes.control``: a request for the process's live owner (``kill:<message>`` or ``pause``);
  a process nobody owns is controlled directly in the database instead.
- ``events``: the changes of process states, written by triggers in the same transaction as
  the change, so subscribers (``process watch``, ``miniengine.events``) read a log instead of
  polling nodes.  Ids only grow (AUTOINCREMENT); old rows are pruned.  The triggers write only
  while someone subscribes (a row in ``watchers`` that has not expired): an events row costs a
  page in every commit, a quarter of a calcfunction's throughput, and nobody needs it then.
- ``gates``: named flags that ``miniengine.testing`` processes wait on.
"""

from __future__ import annotations

__all__ = ["SCHEMA_V4"]

SCHEMA_V4 = """
ALTER TABLE nodes ADD COLUMN control TEXT;
CREATE INDEX nodes_control ON nodes (owner) WHERE control IS NOT NULL;

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node_pk     INTEGER NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    time        REAL NOT NULL
);

CREATE TABLE watchers (
    id          INTEGER PRIMARY KEY,
    expires     REAL NOT NULL
);

CREATE TRIGGER nodes_state_event AFTER UPDATE OF process_state ON nodes
WHEN NEW.process_state IS NOT OLD.process_state
    AND EXISTS (SELECT 1 FROM watchers WHERE expires > NEW.mtime)
BEGIN
    INSERT INTO events (node_pk, from_state, to_state, time)
    VALUES (NEW.pk, OLD.process_state, NEW.process_state, NEW.mtime);
END;

CREATE TRIGGER nodes_create_event AFTER INSERT ON nodes
WHEN NEW.process_state IS NOT NULL
    AND EXISTS (SELECT 1 FROM watchers WHERE expires > NEW.ctime)
BEGIN
    INSERT INTO events (node_pk, from_state, to_state, time)
    VALUES (NEW.pk, NULL, NEW.process_state, NEW.ctime);
END;

CREATE TABLE gates (
    name        TEXT PRIMARY KEY,
    opened      REAL NOT NULL
);
"""
