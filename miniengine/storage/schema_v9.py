"""Schema version 9: what users add to nodes after the fact (AiiDA's extras, comments, groups).

- ``nodes.extras``: the node's extras, a JSON object as text (``'{}'`` when none), so that
  queries can filter on them with sqlite's JSON functions (PostgreSQL keeps them as ``jsonb``);
  unlike the attributes (msgpack, fixed once stored) they may change at any time.
- ``comments``: free-text notes on a node, each with its own pk, uuid and times.
- ``groups`` and ``group_nodes``: named sets of nodes; a group's type is the ``type_string``
  of its class, a (label, type_string) pair names one group, and a node may be in many groups.
  Deleting a group deletes its memberships, never its nodes.
"""

from __future__ import annotations

__all__ = ["SCHEMA_V9"]

SCHEMA_V9 = """
ALTER TABLE nodes ADD COLUMN extras TEXT NOT NULL DEFAULT '{}';

CREATE TABLE comments (
    pk         INTEGER PRIMARY KEY,
    uuid       TEXT NOT NULL UNIQUE,
    node_pk    INTEGER NOT NULL REFERENCES nodes (pk),
    ctime      REAL NOT NULL,
    mtime      REAL NOT NULL,
    content    TEXT NOT NULL
);
CREATE INDEX comments_node ON comments (node_pk);

CREATE TABLE groups (
    pk           INTEGER PRIMARY KEY,
    uuid         TEXT NOT NULL UNIQUE,
    label        TEXT NOT NULL,
    type_string  TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    extras       TEXT NOT NULL DEFAULT '{}',
    ctime        REAL NOT NULL,
    UNIQUE (label, type_string)
);

CREATE TABLE group_nodes (
    group_pk   INTEGER NOT NULL REFERENCES groups (pk),
    node_pk    INTEGER NOT NULL REFERENCES nodes (pk),
    PRIMARY KEY (group_pk, node_pk)
) WITHOUT ROWID;
CREATE INDEX group_nodes_node ON group_nodes (node_pk);
"""
