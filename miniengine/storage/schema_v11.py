"""Schema version 11: node attributes become queryable (nothing changes in a sqlite file).

sqlite reads the attributes' msgpack itself, through the SQL functions every connection of the
engine registers (:mod:`miniengine.storage.sqlite.msgpack_functions`); PostgreSQL, which cannot
run Python, gains a ``jsonb`` copy of them at this version.  The version moves on both so that
a sqlite file and a PostgreSQL database of one release always say the same number.
"""

from __future__ import annotations

__all__ = ["SCHEMA_V11"]

#: no statement: sqlite reads attributes through SQL functions
SCHEMA_V11 = ""
