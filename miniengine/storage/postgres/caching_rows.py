"""The statements of the caching concern on PostgreSQL (as
:mod:`miniengine.storage.caching_rows` on sqlite)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg

from miniengine.core.ids import new_uuid
from miniengine.storage.interfaces.caching import CACHED_FROM_EXTRA, VALID_CACHE_EXTRA, CachedBegin
from miniengine.storage.interfaces.checkpoints import MemoKey
from miniengine.storage.interfaces.provenance import NewProcess, NodeRow
from miniengine.storage.postgres.calcjob_rows import create_calcjob_tx, set_computer_tx
from miniengine.storage.postgres.checkpoint_rows import begin_memoised_tx
from miniengine.storage.postgres.rows import begin_process_tx
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

#: the source and the outputs it created (one row per output; one with NULLs for none), in one
#: round trip
_SOURCE_AND_OUTPUTS = (
    f"SELECT s.pk, s.uuid, s.exit_message, l.out_pk, l.label FROM ({_SOURCE}) s "
    "LEFT JOIN links l ON l.in_pk = s.pk AND l.link_type = 'create' ORDER BY l.pk"
)


def begin_cached_tx(connection: Connection, new: NewProcess, memo: MemoKey | None) -> CachedBegin:
    assert new.node_hash is not None
    source = connection.execute(_SOURCE_AND_OUTPUTS, (new.process_type, new.node_hash)).fetchall()
    if memo is None:
        pk, input_pks = begin_process_tx(connection, new)
    else:
        pk, input_pks, outcome = begin_memoised_tx(connection, new, memo)
        if outcome != "new":  # a replayed step's call: nothing to look up
            return _replayed(new, pk, outcome)
    if not source:
        return CachedBegin(pk, input_pks, None)
    return _copy(connection, pk, input_pks, source)


def create_calcjob_cached_tx(
    connection: Connection,
    new: NewProcess,
    computer_uuid: str,
    checkpoint: Callable[[list[int]], bytes],
    enqueue: bool,
    memo: MemoKey | None,
) -> CachedBegin:
    assert new.node_hash is not None
    source = connection.execute(_SOURCE_AND_OUTPUTS, (new.process_type, new.node_hash)).fetchall()
    if not source:
        pk, input_pks = create_calcjob_tx(connection, new, computer_uuid, checkpoint, enqueue, memo)
        return CachedBegin(pk, input_pks, None)
    if memo is None:
        pk, input_pks = begin_process_tx(connection, new)
    else:
        pk, input_pks, outcome = begin_memoised_tx(connection, new, memo)
        if outcome != "new":
            return _replayed(new, pk, outcome)
    set_computer_tx(connection, pk, computer_uuid)
    return _copy(connection, pk, input_pks, source)


def _replayed(new: NewProcess, pk: int, outcome: str) -> CachedBegin:
    """A call a replayed step had made already (its inputs are stored)."""
    return CachedBegin(pk, [data.pk for _, data in new.inputs], None, outcome=outcome)  # type: ignore[misc]


#: :func:`_copy_statement` by the number of outputs (a few sizes in practice)
_COPY: dict[int, str] = {}


def _copy_statement(count: int) -> str:
    """The clones of ``count`` outputs, their links (in the source's order) and the end of the
    process in one round trip, returning the rows of the process and of its new outputs."""
    values = ", ".join(f"(%s, %s::bigint, %s, {position})" for position in range(count))
    given = f"SELECT * FROM (VALUES {values}) AS v (uuid, source, label, ord)"
    done = (
        "UPDATE nodes SET process_state = 'finished', exit_status = 0, exit_message = %s, "
        "owner = NULL, lease_expires = NULL, extras = %s::jsonb, mtime = %s "
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


def _copy(connection: Connection, pk: int, input_pks: list[int], source: list[Any]) -> CachedBegin:
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
    done = (exit_message, extras, now, pk)
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
