"""Which repository objects the database refers to, on PostgreSQL (the port of
``storage/repository_rows.py``): keys are found in the msgpack blobs without decoding them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from miniengine.storage.repository_rows import _KEY_IN_MSGPACK

if TYPE_CHECKING:
    from miniengine.storage.postgres.rows import Connection

__all__ = ["read_referenced_object_keys"]


def read_referenced_object_keys(connection: Connection) -> set[str]:
    """Every repository key named by a node's attributes or by a checkpoint."""
    keys: set[str] = set()
    for query, params in (
        (
            "SELECT attributes FROM nodes WHERE attributes IS NOT NULL "
            "AND position(%s::bytea IN attributes) > 0",
            (b"_repository",),
        ),
        ("SELECT data FROM checkpoints", ()),
    ):
        for (blob,) in connection.execute(query, params):
            keys.update(match.decode() for match in _KEY_IN_MSGPACK.findall(bytes(blob)))
    return keys
