"""The statements of the caching concern on PostgreSQL (as
:mod:`miniengine.storage.caching_rows` on sqlite)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg

from miniengine.core.ids import new_uuid
from miniengine.storage.attribute_json import attributes_json_text
from miniengine.storage.interfaces.caching import CACHED_FROM_EXTRA, VALID_CACHE_EXTRA, CachedBegin
from miniengine.storage.interfaces.checkpoints import MemoKey
from miniengine.storage.interfaces.provenance import NewProcess, NodeRow, pack_attributes
from miniengine.storage.postgres.calcjob_rows import create_calcjob_tx, set_computer_tx
from miniengine.storage.postgres.checkpoint_rows import begin_memoised_tx
from miniengine.storage.postgres.rows import (
    begin_process_tx,
    check_lease,
    insert_new_data,
    insert_process,
    process_links,
)
from miniengine.storage.rows import NODE_COLUMNS

__all__ = [
    "begin_cached_tx",
    "cache_source",
    "create_calcjob_cached_tx",
    "node_hash",
    "set_settings_tx",
    "settings",
]

Connection = psycopg.Connection[Any]

_SOURCE = (
    "SELECT pk, uuid, exit_message FROM nodes WHERE process_type = %s AND node_hash = %s "
    "AND process_state = 'finished' AND exit_status = 0 "
    f"AND (extras -> '{VALID_CACHE_EXTRA}') IS DISTINCT FROM 'false'::jsonb "
    "ORDER BY pk LIMIT 1"
)


def begin_cached_tx(connection: Connection, new: NewProcess, memo: MemoKey | None) -> CachedBegin:
    assert new.node_hash is not None
    if memo is not None:  # (a call of a WorkChain step: created first, as the memo says)
        pk, input_pks, outcome = begin_memoised_tx(connection, new, memo)
        if outcome != "new":  # a replayed step's call: nothing to look up
            return _replayed(new, pk, outcome)
        copied = _copy_if_cached(connection, pk, input_pks, new)
        return copied if copied is not None else CachedBegin(pk, input_pks, None)
    if new.parent is not None:
        check_lease(connection, *new.parent)
    now = time.time()
    input_pks = insert_new_data(connection, (data for _, data in new.inputs), now)
    copied = _create_copy(connection, new, input_pks, now)
    if copied is not None:
        return copied
    return CachedBegin(insert_process(connection, new, input_pks, now), input_pks, None)


def create_calcjob_cached_tx(
    connection: Connection,
    new: NewProcess,
    computer_uuid: str,
    checkpoint: Callable[[list[int]], bytes],
    enqueue: bool,
    memo: MemoKey | None,
) -> CachedBegin:
    assert new.node_hash is not None
    if connection.execute(_SOURCE, (new.process_type, new.node_hash)).fetchone() is None:
        pk, input_pks = create_calcjob_tx(connection, new, computer_uuid, checkpoint, enqueue, memo)
        return CachedBegin(pk, input_pks, None)
    if memo is None:
        pk, input_pks = begin_process_tx(connection, new)
    else:
        pk, input_pks, outcome = begin_memoised_tx(connection, new, memo)
        if outcome != "new":
            return _replayed(new, pk, outcome)
    set_computer_tx(connection, pk, computer_uuid)
    copied = _copy_if_cached(connection, pk, input_pks, new)
    assert copied is not None  # (the source found above is still there: same transaction)
    return copied


def _replayed(new: NewProcess, pk: int, outcome: str) -> CachedBegin:
    """A call a replayed step had made already (its inputs are stored)."""
    return CachedBegin(pk, [data.pk for _, data in new.inputs], None, outcome=outcome)  # type: ignore[misc]


def _qualified(columns: str, table: str) -> str:
    return ", ".join(f"{table}.{column.strip()}" for column in columns.split(","))


#: The parts the two copying statements share: the source's created outputs in order, the
#: uuids given for their copies, and whether they fit (``outs``, ``given``, ``fits``) ...
_OUTPUTS_OF_SOURCE = (
    "outs AS (SELECT l.out_pk, l.label, row_number() OVER (ORDER BY l.pk) AS ord FROM links l "
    "JOIN src ON l.in_pk = src.pk WHERE l.link_type = 'create'), "
    "given AS (SELECT u.uuid, u.ord FROM unnest(%s::text[]) WITH ORDINALITY AS u (uuid, ord)), "
    "fits AS (SELECT count(*) <= %s AS ok FROM outs), "
)
#: ... and, once ``done`` holds the new process, its outputs copied and linked to it, with the
#: rows returned (``cloned``, ``linked``, the final SELECT).
_CLONE_OUTPUTS = (
    "cloned AS (INSERT INTO nodes (uuid, node_type, label, description, attributes, ctime, "
    "mtime, computer_pk, attributes_json) SELECT g.uuid, n.node_type, n.label, n.description, "
    "n.attributes, %s, %s, n.computer_pk, n.attributes_json FROM outs o "
    "JOIN given g ON g.ord = o.ord JOIN nodes n ON n.pk = o.out_pk "
    f"WHERE EXISTS (SELECT 1 FROM done) ORDER BY o.ord RETURNING {NODE_COLUMNS}), "
    "linked AS (INSERT INTO links (in_pk, out_pk, link_type, label) SELECT d.pk, c.pk, "
    "'create', o.label FROM cloned c JOIN given g ON g.uuid = c.uuid JOIN outs o "
    "ON o.ord = g.ord, done d ORDER BY o.ord) "
    "SELECT (SELECT count(*) FROM outs), (SELECT uuid FROM src), r.* FROM (SELECT 1) AS one "
    "LEFT JOIN (SELECT 0::bigint AS ord, NULL::text AS label, d.* FROM done d UNION ALL "
    "SELECT o.ord, o.label, c.* FROM cloned c JOIN given g ON g.uuid = c.uuid "
    "JOIN outs o ON o.ord = g.ord) r ON true ORDER BY r.ord"
)

#: The lookup and the copy in one statement (one round trip, the same text whatever the number
#: of outputs): the oldest valid source (``src``), the outputs it created (``outs``, numbered in
#: link order), the new process finished as its copy (``done``), a clone of each output under a
#: uuid given in the array (``cloned``) and its CREATE link (``linked``).  It writes nothing when
#: there is no source, or when the source has more outputs than uuids were given (the count
#: comes back, and the caller asks again with enough).  The rows are the count, the source's
#: uuid, and then the process's row and each clone's (one row of NULLs when nothing was copied).
_COPY_IF_CACHED = (
    f"WITH src AS ({_SOURCE}), "
    + _OUTPUTS_OF_SOURCE
    + "done AS (UPDATE nodes SET process_state = 'finished', exit_status = 0, "
    "exit_message = src.exit_message, owner = NULL, lease_expires = NULL, "
    "extras = jsonb_build_object(%s::text, src.uuid), mtime = %s FROM src, fits "
    f"WHERE nodes.pk = %s AND fits.ok RETURNING {_qualified(NODE_COLUMNS, 'nodes')}), "
    + _CLONE_OUTPUTS
)

#: As :data:`_COPY_IF_CACHED`, for a process not created yet: on a hit its row is inserted
#: finished as the copy (``done``), with the links to its inputs and caller (``linked_in``, from
#: arrays), so a hit is this one statement after its inputs; on a miss nothing is written.
_CREATE_COPY = (
    f"WITH src AS ({_SOURCE}), "
    + _OUTPUTS_OF_SOURCE
    + "done AS (INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, "
    "label, description, attributes, attributes_json, owner, lease_epoch, lease_expires, ctime, "
    "mtime, submitted, node_hash, exit_status, exit_message, extras) SELECT %s, %s, %s, %s, "
    "'finished', %s, %s, %s, %s::jsonb, NULL, 0, NULL, %s, %s, %s, %s, 0, src.exit_message, "
    "jsonb_build_object(%s::text, src.uuid) FROM src, fits WHERE fits.ok "
    f"RETURNING {NODE_COLUMNS}), "
    "linked_in AS (INSERT INTO links (in_pk, out_pk, link_type, label) SELECT i.in_pk, d.pk, "
    "i.link_type, i.label FROM unnest(%s::bigint[], %s::text[], %s::text[]) WITH ORDINALITY "
    "AS i (in_pk, link_type, label, ord), done d ORDER BY i.ord), " + _CLONE_OUTPUTS
)


def _create_copy(
    connection: Connection, new: NewProcess, input_pks: list[int], now: float
) -> CachedBegin | None:
    """Create the new process (its inputs stored) finished as a copy of the oldest valid source
    with its hash, if there is one (:data:`_CREATE_COPY`); ``None`` (nothing written) if not."""
    links = process_links(new, input_pks)
    attributes = pack_attributes(new.attributes) if new.attributes else None
    attributes_json = attributes_json_text(new.attributes) if new.attributes else None
    count = _OUTPUTS.get(new.process_type, 2)
    while True:
        uuids = [new_uuid() for _ in range(count)]
        rows = connection.execute(
            _CREATE_COPY,
            (
                new.process_type,
                new.node_hash,
                uuids,
                count,
                new.uuid,
                new.node_type,
                new.process_type,
                new.process_label,
                new.label,
                new.description,
                attributes,
                attributes_json,
                now,
                now,
                int(new.submitted),
                new.node_hash,
                CACHED_FROM_EXTRA,
                [link[0] for link in links],
                [link[1] for link in links],
                [link[2] for link in links],
                now,
                now,
            ),
        ).fetchall()
        outputs, source_uuid = rows[0][0], rows[0][1]
        if source_uuid is None:
            return None
        if outputs <= count:
            break
        count = _OUTPUTS[new.process_type] = outputs  # nothing was written: again, with enough
    _OUTPUTS[new.process_type] = max(outputs, 1)
    process = NodeRow._make(rows[0][4:])
    outs = [(row[3], NodeRow._make(row[4:])) for row in rows[1:]]
    return CachedBegin(process.pk, input_pks, str(source_uuid), process, outs)


#: process type -> how many outputs its last source had (how many uuids to send next time)
_OUTPUTS: dict[str, int] = {}


def _copy_if_cached(
    connection: Connection, pk: int, input_pks: list[int], new: NewProcess
) -> CachedBegin | None:
    """Finish the new process ``pk`` as a copy of the oldest valid source with its hash, if
    there is one (:data:`_COPY_IF_CACHED`)."""
    count = _OUTPUTS.get(new.process_type, 2)
    while True:
        uuids = [new_uuid() for _ in range(count)]
        now = time.time()
        rows = connection.execute(
            _COPY_IF_CACHED,
            (new.process_type, new.node_hash, uuids, count, CACHED_FROM_EXTRA, now, pk, now, now),
        ).fetchall()
        outputs, source_uuid = rows[0][0], rows[0][1]
        if source_uuid is None:
            return None
        if outputs <= count:
            break
        count = _OUTPUTS[new.process_type] = outputs  # nothing was written: again, with enough
    _OUTPUTS[new.process_type] = max(outputs, 1)
    process = NodeRow._make(rows[0][4:])
    outs = [(row[3], NodeRow._make(row[4:])) for row in rows[1:]]
    return CachedBegin(pk, input_pks, str(source_uuid), process, outs)


def node_hash(connection: Connection, pk: int) -> str | None:
    row = connection.execute("SELECT node_hash FROM nodes WHERE pk = %s", (pk,)).fetchone()
    return None if row is None else row[0]


def cache_source(connection: Connection, process_type: str, hash_: str) -> str | None:
    row = connection.execute(_SOURCE, (process_type, hash_)).fetchone()
    return None if row is None else str(row[1])


def settings(connection: Connection, names: Sequence[str]) -> dict[str, Any]:
    rows = connection.execute(
        "SELECT name, value FROM settings WHERE name = ANY(%s)", (list(names),)
    ).fetchall()
    return {name: json.loads(value) for name, value in rows}


def set_settings_tx(connection: Connection, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        if value is None:
            connection.execute("DELETE FROM settings WHERE name = %s", (name,))
        else:
            connection.execute(
                "INSERT INTO settings (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, json.dumps(value)),
            )
