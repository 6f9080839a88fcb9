"""Schema version 14: a process's row says whether a parent ever waited for it (``awaited``).

A process that ends must decrement the counts of the parents waiting for it.  Most processes
have none (nobody waits for a top-level process), yet each end looked for them with a query of
its own: on PostgreSQL a round trip per end, inside the transaction of a worker's group of ends.
A parent that starts waiting now sets ``awaited`` on the rows of the children it waits for, in
the transaction that records the wait, and an end reads the flag from the row it updates
anyway: only an end whose flag is set looks for parents.

The flag is never cleared: one set on a process whose parent stopped waiting (it was killed, or
woken another way) costs its end one query that finds nothing.  Migrating sets it on every
process that a parent waits for at that moment.
"""

from __future__ import annotations

__all__ = ["SCHEMA_V14"]

SCHEMA_V14 = """
ALTER TABLE nodes ADD COLUMN awaited INTEGER NOT NULL DEFAULT 0;
UPDATE nodes SET awaited = 1 WHERE pk IN (SELECT child_pk FROM awaited);
"""
