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

#: the source and the outputs it created (one row per output; one with NULLs for none), in one
#: round trip
_SOURCE_AND_OUTPUTS = (
    f"SELECT s.pk, s.uuid, s.exit_message, l.out_pk, l.label FROM ({_SOURCE}) s "
    "LEFT JOIN links l ON l.in_pk = s.pk AND l.link_type = 'create' ORDER BY l.pk"
)


def begin_cached_tx(connection: Connection, new: NewProcess, hash_: str) -> CachedBegin:
    source = connection.execute(_SOURCE_AND_OUTPUTS, (new.process_type, hash_)).fetchall()
    pk, input_pks = begin_process_tx(connection, new)
    if not source:
        connection.execute("UPDATE nodes SET node_hash = %s WHERE pk = %s", (hash_, pk))
        return CachedBegin(pk, input_pks, None)
    return _copy(connection, pk, input_pks, source, hash_)


def copy_cached_tx(connection: Connection, new: NewProcess, hash_: str) -> CachedBegin | None:
    source = connection.execute(_SOURCE_AND_OUTPUTS, (new.process_type, hash_)).fetchall()
    if not source:
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


#: :func:`_copy_statement` by the number of outputs (a few sizes in practice)
_COPY: dict[int, str] = {}


def _copy_statement(count: int) -> str:
    """The clones of ``count`` outputs, their links (in the source's order) and the end of the
    process in one round trip, returning the rows of the process and of its new outputs."""
    values = ", ".join(f"(%s, %s::bigint, %s, {position})" for position in range(count))
    given = f"SELECT * FROM (VALUES {values}) AS v (uuid, source, label, ord)"
    done = (
        "UPDATE nodes SET process_state = 'finished', exit_status = 0, exit_message = %s, "
        "owner = NULL, lease_expires = NULL, node_hash = %s, extras = %s::jsonb, mtime = %s "
        f"WHERE pk = %s RETURNING {NODE_COLUMNS}"
    )
    if count == 0:
        return done
    return (
        f"WITH v AS ({given}), done AS ({done}), "
        "cloned AS (INSERT INTO nodes (uuid, node_type, label, description, attributes, ctime, "
        "mtime, computer_pk, attributes_json) SELECT v.uuid, n.node_type, n.label, "
        "n.description, n.attributes, %s, %s, n.computer_pk, n.attributes_json "
        "FROM v JOIN nodes n ON n.pk = v.source ORDER BY v.ord "
        f"RETURNING {NODE_COLUMNS}), "
        "linked AS (INSERT INTO links (in_pk, out_pk, link_type, label) SELECT n.pk, c.pk, "
        "'create', v.label FROM cloned c JOIN v ON v.uuid = c.uuid, done n ORDER BY v.ord) "
        "SELECT * FROM done UNION ALL SELECT * FROM cloned"
    )


def _copy(
    connection: Connection, pk: int, input_pks: list[int], source: list[Any], hash_: str
) -> CachedBegin:
    """Finish the new process ``pk`` as a copy of ``source`` (rows of
    :data:`_SOURCE_AND_OUTPUTS`)."""
    _, source_uuid, exit_message = source[0][:3]
    outputs = [(out_pk, label) for *_, out_pk, label in source if out_pk is not None]
    uuids = [new_uuid() for _ in outputs]
    statement = _COPY.get(len(outputs))
    if statement is None:
        statement = _COPY[len(outputs)] = _copy_statement(len(outputs))
    now = time.time()
    given = [
        v
        for uuid, (out_pk, label) in zip(uuids, outputs, strict=True)
        for v in (uuid, out_pk, label)
    ]
    extras = json.dumps({CACHED_FROM_EXTRA: str(source_uuid)})
    done = (exit_message, hash_, extras, now, pk)
    clones = (now, now) if outputs else ()
    rows = connection.execute(statement, (*given, *done, *clones)).fetchall()
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
