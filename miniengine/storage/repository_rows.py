"""Which repository objects the database refers to, for repository maintenance.

A node with files names its objects in its attributes; an unstored file node in a checkpoint names
them in the checkpoint.  Both are msgpack, where a key is a 64-character string
(``0xd9 0x40`` and 64 hex digits), so the keys are found in the blobs without decoding them: a
string that only looks like a key keeps an object a little longer, never removes one in use.
"""

from __future__ import annotations

import re
import sqlite3

__all__ = ["read_referenced_object_keys"]

_KEY_IN_MSGPACK = re.compile(rb"\xd9\x40([0-9a-f]{64})")


def read_referenced_object_keys(connection: sqlite3.Connection) -> set[str]:
    """Every repository key named by a node's attributes or by a checkpoint."""
    keys: set[str] = set()
    for query in (
        "SELECT attributes FROM nodes WHERE attributes IS NOT NULL "
        "AND instr(attributes, CAST('_repository' AS BLOB)) > 0",
        "SELECT data FROM checkpoints",
    ):
        for (blob,) in connection.execute(query):
            keys.update(match.decode() for match in _KEY_IN_MSGPACK.findall(bytes(blob)))
    return keys
