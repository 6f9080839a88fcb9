"""The ``jsonb`` copy of node attributes that PostgreSQL queries read (``nodes.attributes_json``).

PostgreSQL cannot decode msgpack (PL/Python is not available), so every write of a node's
attributes also writes their JSON (:func:`miniengine.storage.attribute_json.attributes_json_text`)
in the same statement.  Rows written without it (by the migration to schema version 11, or by
``db copy`` from sqlite, which has no such column, or an archive's import) are filled by
:func:`backfill`, in batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from miniengine.core.data import nul_path
from miniengine.storage.attribute_json import attributes_json_text
from miniengine.storage.interfaces.provenance import unpack_attributes

if TYPE_CHECKING:
    import psycopg

__all__ = ["DERIVED_COLUMNS", "backfill", "json_of_blob", "nul_in_blob"]

#: the columns of each table that are derived from others: not copied, but filled again
DERIVED_COLUMNS: dict[str, frozenset[str]] = {"nodes": frozenset({"attributes_json"})}

_BATCH = 2000


def json_of_blob(blob: bytes | None) -> str | None:
    """The JSON text of the attributes stored as ``blob`` (``None``: no attributes)."""
    if blob is None:
        return None
    try:
        content = unpack_attributes(bytes(blob))
    except Exception:
        return None  # not msgpack: nothing a query can name
    return attributes_json_text(content)


def nul_in_blob(blob: bytes | None) -> str | None:
    """Where the attributes stored as ``blob`` hold the character NUL, which PostgreSQL's text
    and jsonb cannot hold (:func:`miniengine.core.data.nul_path`), or ``None``.  Checked
    before rows from elsewhere (an archive, a sqlite file) are written: msgpack keeps a
    string's bytes as they are, so a blob without a zero byte is passed at once."""
    if blob is None or b"\x00" not in blob:
        return None
    try:
        content = unpack_attributes(bytes(blob))
    except Exception:
        return None  # not msgpack: nothing PostgreSQL reads as text
    return nul_path(content)


def backfill(connection: psycopg.Connection[Any], batch: int = _BATCH, after: int = 0) -> int:
    """Write the JSON copy of every node (of a pk above ``after``) that has attributes and no
    copy yet, ``batch`` rows per statement (in the caller's transaction); returns how many rows
    it wrote."""
    written = 0
    while True:
        rows = connection.execute(
            "SELECT pk, attributes FROM nodes WHERE pk > %s AND attributes IS NOT NULL "
            "AND attributes_json IS NULL ORDER BY pk LIMIT %s",
            (after, batch),
        ).fetchall()
        if not rows:
            return written
        after = int(rows[-1][0])
        pairs = [(int(pk), json_of_blob(blob)) for pk, blob in rows]
        pairs = [(pk, text) for pk, text in pairs if text is not None]
        if pairs:
            connection.execute(
                "UPDATE nodes AS n SET attributes_json = v.j FROM "
                "unnest(%s::bigint[], %s::jsonb[]) AS v(pk, j) WHERE n.pk = v.pk",
                ([pk for pk, _ in pairs], [text for _, text in pairs]),
            )
            written += len(pairs)
