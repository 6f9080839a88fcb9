"""Schema version 6: computers, and the nodes that run on them.

- ``computers``: one row per computer (AiiDA's ``db_dbcomputer``), not a provenance node: a
  computer is edited and configured, never linked.  ``metadata`` holds the settings a job needs
  (work folder, ``mpirun`` command, shebang, prepend/append text, ...) as msgpack;
  ``configuration`` holds the transport's settings (``Computer.configure``), NULL until the
  computer is configured.  A database has one user, so this column is its only "auth info".
- ``nodes.computer_pk``: the computer of a code or a ``RemoteData`` (AiiDA's ``dbcomputer_id``),
  so that a computer still in use cannot be deleted.
"""

from __future__ import annotations

__all__ = ["SCHEMA_V6"]

SCHEMA_V6 = """
CREATE TABLE computers (
    pk              INTEGER PRIMARY KEY,
    uuid            TEXT NOT NULL UNIQUE,
    label           TEXT NOT NULL UNIQUE,
    hostname        TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    transport_type  TEXT NOT NULL,
    scheduler_type  TEXT NOT NULL,
    metadata        BLOB NOT NULL,
    configuration   BLOB,
    ctime           REAL NOT NULL,
    mtime           REAL NOT NULL
);

ALTER TABLE nodes ADD COLUMN computer_pk INTEGER REFERENCES computers (pk);
CREATE INDEX nodes_computer ON nodes (computer_pk) WHERE computer_pk IS NOT NULL;
"""
