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
from miniengine.storage.interfaces.provenance import NewProcess
from miniengine.storage.postgres.calcjob_rows import create_calcjob_tx
from miniengine.storage.postgres.rows import begin_process_tx

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

_CLONE = (
    "INSERT INTO nodes (uuid, node_type, label, description, attributes, ctime, mtime, "
    "computer_pk) SELECT %s, node_type, label, description, attributes, %s, %s, computer_pk "
    "FROM nodes WHERE pk = %s RETURNING pk"
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


def _copy(
    connection: Connection, pk: int, input_pks: list[int], source: Any, hash_: str
) -> CachedBegin:
    """Finish the new process ``pk`` as a copy of ``source`` (pk, uuid, exit message)."""
    source_pk, source_uuid, exit_message = source
    now = time.time()
    outputs = connection.execute(
        "SELECT out_pk, label FROM links WHERE in_pk = %s AND link_type = 'create' ORDER BY pk",
        (source_pk,),
    ).fetchall()
    for out_pk, label in outputs:
        row = connection.execute(_CLONE, (new_uuid(), now, now, out_pk)).fetchone()
        assert row is not None
        connection.execute(
            "INSERT INTO links (in_pk, out_pk, link_type, label) VALUES (%s, %s, 'create', %s)",
            (pk, row[0], label),
        )
    connection.execute(
        "UPDATE nodes SET process_state = 'finished', exit_status = 0, exit_message = %s, "
        "owner = NULL, lease_expires = NULL, node_hash = %s, extras = %s::jsonb, mtime = %s "
        "WHERE pk = %s",
        (exit_message, hash_, json.dumps({CACHED_FROM_EXTRA: source_uuid}), now, pk),
    )
    return CachedBegin(pk, input_pks, str(source_uuid))


def node_hash(connection: Connection, pk: int) -> str | None:
    row = connection.execute("SELECT node_hash FROM nodes WHERE pk = %s", (pk,)).fetchone()
    return None if row is None else row[0]


def cache_source(connection: Connection, process_type: str, hash_: str) -> str | None:
    row = connection.execute(_SOURCE, (process_type, hash_)).fetchone()
    return None if row is None else str(row[1])
