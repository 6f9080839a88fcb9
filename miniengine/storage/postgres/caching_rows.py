"""The statements of the caching concern on PostgreSQL (as
:mod:`miniengine.storage.caching_rows` on sqlite)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import psycopg

from miniengine.core.ids import new_uuid
from miniengine.storage.interfaces.caching import CACHED_FROM_EXTRA, VALID_CACHE_EXTRA, CachedBegin
from miniengine.storage.interfaces.checkpoints import MemoKey
from miniengine.storage.interfaces.provenance import NewProcess, NodeRow
from miniengine.storage.postgres.calcjob_rows import create_calcjob_tx
from miniengine.storage.postgres.rows import begin_process_tx
from miniengine.storage.rows import NODE_COLUMNS

__all__ = [
    "begin_cached_tx",
    "cache_source",
    "copy_cached_tx",
    "create_calcjob_hashed_tx",
    "node_hash",
]

Connection = psycopg.Connection[Any]

_SOURCE = (
    "SELECT pk, uuid, exit_message FROM nodes WHERE process_type = %s AND node_hash = %s "
    "AND process_state = 'finished' AND exit_status = 0 "
    f"AND (extras -> '{VALID_CACHE_EXTRA}') IS DISTINCT FROM 'false'::jsonb "
    "ORDER BY pk LIMIT 1"
)


def begin_cached_tx(connection: Connection, new: NewProcess, hash_: str) -> CachedBegin:
    source = connection.execute(_SOURCE, (new.process_type, hash_)).fetchone()
    pk, input_pks = begin_process_tx(connection, new)
    if source is None:
        connection.execute("UPDATE nodes SET node_hash = %s WHERE pk = %s", (hash_, pk))
        return CachedBegin(pk, input_pks, None)
    return _copy(connection, pk, input_pks, source, hash_)


def copy_cached_tx(connection: Connection, new: NewProcess, hash_: str) -> CachedBegin | None:
    source = connection.execute(_SOURCE, (new.process_type, hash_)).fetchone()
    if source is None:
        return None
    pk, input_pks = begin_process_tx(connection, new)
    return _copy(connection, pk, input_pks, source, hash_)


def create_calcjob_hashed_tx(
    connection: Connection,
    new: NewProcess,
    computer_uuid: str,
    checkpoint: Callable[[list[int]], bytes],
    enqueue: bool,
    memo: MemoKey | None,
    hash_: str,
) -> tuple[int, list[int]]:
    pk, input_pks = create_calcjob_tx(connection, new, computer_uuid, checkpoint, enqueue, memo)
    connection.execute("UPDATE nodes SET node_hash = %s WHERE pk = %s", (hash_, pk))
    return pk, input_pks


#: the clones of the outputs, their links (in the source's order) and the end of the process in
#: one round trip, returning the rows of the process and of its new outputs
_COPY = (
    "WITH v AS (SELECT * FROM unnest(%(uuids)s::text[], %(sources)s::bigint[], "
    "%(labels)s::text[]) WITH ORDINALITY AS v (uuid, source, label, ord)), "
    "cloned AS (INSERT INTO nodes (uuid, node_type, label, description, attributes, ctime, "
    "mtime, computer_pk) SELECT v.uuid, n.node_type, n.label, n.description, n.attributes, "
    "%(now)s, %(now)s, n.computer_pk FROM v JOIN nodes n ON n.pk = v.source ORDER BY v.ord "
    f"RETURNING {NODE_COLUMNS}), "
    "linked AS (INSERT INTO links (in_pk, out_pk, link_type, label) SELECT %(pk)s, c.pk, "
    "'create', v.label FROM cloned c JOIN v ON v.uuid = c.uuid ORDER BY v.ord), "
    "done AS (UPDATE nodes SET process_state = 'finished', exit_status = 0, "
    "exit_message = %(message)s, owner = NULL, lease_expires = NULL, node_hash = %(hash)s, "
    f"extras = %(extras)s::jsonb, mtime = %(now)s WHERE pk = %(pk)s RETURNING {NODE_COLUMNS}) "
    "SELECT * FROM done UNION ALL SELECT * FROM cloned"
)


def _copy(
    connection: Connection, pk: int, input_pks: list[int], source: Any, hash_: str
) -> CachedBegin:
    """Finish the new process ``pk`` as a copy of ``source`` (pk, uuid, exit message)."""
    source_pk, source_uuid, exit_message = source
    outputs = connection.execute(
        "SELECT out_pk, label FROM links WHERE in_pk = %s AND link_type = 'create' ORDER BY pk",
        (source_pk,),
    ).fetchall()
    uuids = [new_uuid() for _ in outputs]
    rows = connection.execute(
        _COPY,
        {
            "uuids": uuids,
            "sources": [out_pk for out_pk, _ in outputs],
            "labels": [label for _, label in outputs],
            "now": time.time(),
            "pk": pk,
            "message": exit_message,
            "hash": hash_,
            "extras": json.dumps({CACHED_FROM_EXTRA: str(source_uuid)}),
        },
    ).fetchall()
    by_uuid = {row[1]: NodeRow._make(row) for row in rows}
    process = next(NodeRow._make(row) for row in rows if row[0] == pk)
    outs = [(label, by_uuid[uuid]) for uuid, (_, label) in zip(uuids, outputs, strict=True)]
    return CachedBegin(pk, input_pks, str(source_uuid), process, outs)


def node_hash(connection: Connection, pk: int) -> str | None:
    row = connection.execute("SELECT node_hash FROM nodes WHERE pk = %s", (pk,)).fetchone()
    return None if row is None else row[0]


def cache_source(connection: Connection, process_type: str, hash_: str) -> str | None:
    row = connection.execute(_SOURCE, (process_type, hash_)).fetchone()
    return None if row is None else str(row[1])
