"""Schema version 10: the caching hash of a process (AiiDA's ``_aiida_hash``).

- ``nodes.node_hash``: the hash of a process's class, version and inputs, set only when it
  was launched with caching enabled for its class (``NULL`` otherwise, so a run without
  caching writes nothing more).  A process is a cache source once it finished with exit
  status 0 and unless its ``_miniengine_valid_cache`` extra is ``false``.
- ``nodes_hash``: finds the sources of one hash of one process type.
"""

from __future__ import annotations

__all__ = ["SCHEMA_V10"]

SCHEMA_V10 = """
ALTER TABLE nodes ADD COLUMN node_hash TEXT;
CREATE INDEX nodes_hash ON nodes (process_type, node_hash) WHERE node_hash IS NOT NULL;
"""
