"""Schema version 3: the index behind the operator's queries (``miniengine process list``).

``nodes_process_ctime`` holds the process nodes only (partial: data nodes, usually the majority,
are left out), ordered by creation time and pk.  It serves ``process list --all --limit N``
(walk it newest first and stop after N rows), ``--past 1d`` (a range of it) and ``--state S``
(walk it and filter), so none of them scans the table.  Its entries are written once, when a
process node is inserted: ``ctime`` never changes and ``process_state`` of a process is never
NULL, so state transitions do not touch it.  The active processes (the default of
``process list``) already have their partial index, ``nodes_active``, since version 1.
"""

from __future__ import annotations

__all__ = ["SCHEMA_V3"]

SCHEMA_V3 = """
CREATE INDEX IF NOT EXISTS nodes_process_ctime ON nodes (ctime)
    WHERE process_state IS NOT NULL;
"""
