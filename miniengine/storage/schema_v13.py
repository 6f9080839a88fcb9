"""Schema version 13: the processes that ended badly, by state and pk (``nodes_ended_badly``).

A list filtered by a state that is rare among the ended processes (``excepted``, ``killed``)
walked the primary key down until it had found a page of matches: a few hundred thousand rows
among a million nodes.  This partial index holds only those processes, in pk order per state,
so such a page reads as many index entries as it shows rows.  A process's row enters it only
when it ends badly, so creating, running and finishing a process write nothing more.  A query
uses it when its ``WHERE`` spells out the index's condition (``query_rows.ENDED_BADLY_SQL``).
"""

from __future__ import annotations

__all__ = ["SCHEMA_V13"]

SCHEMA_V13 = """
CREATE INDEX nodes_ended_badly ON nodes (process_state, pk)
    WHERE process_state IN ('excepted', 'killed');
"""
