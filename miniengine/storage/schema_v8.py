"""Schema version 8: the host of each worker.

- ``workers.host``: the host a worker runs on (its hostname, or ``$MINIENGINE_HOST``), so that
  ``daemon status`` lists the workers of every host that serves a database (PostgreSQL is shared
  by daemons on several machines) and ``process show`` says on which host a process runs.
  Workers registered before the upgrade are shown with the empty host until they register again.
"""

from __future__ import annotations

__all__ = ["SCHEMA_V8"]

SCHEMA_V8 = """
ALTER TABLE workers ADD COLUMN host TEXT NOT NULL DEFAULT '';
"""
