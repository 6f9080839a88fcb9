"""Schema version 5: drop the index of process labels.

Every process creation wrote a page of ``nodes_process_label``: about 5% of a calcfunction's
throughput, measured A/B in one run (1,987 vs 2,070 calls/s).  What it served,
``find_processes(process_label=...)``, now walks process nodes newest first and stops at its
limit, which is fast whenever the label is not rare.
"""

from __future__ import annotations

__all__ = ["SCHEMA_V5"]

SCHEMA_V5 = """
DROP INDEX IF EXISTS nodes_process_label;
"""
