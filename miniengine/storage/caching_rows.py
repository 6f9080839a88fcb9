"""The statements of the caching concern on sqlite (see
:mod:`miniengine.storage.interfaces.caching`)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from miniengine.core.ids import new_uuid
from miniengine.storage.calcjob_rows import create_calcjob_tx, set_computer_tx
from miniengine.storage.checkpoint_rows import begin_memoised_tx
from miniengine.storage.interfaces.caching import CACHED_FROM_EXTRA, VALID_CACHE_EXTRA, CachedBegin
from miniengine.storage.interfaces.checkpoints import MemoKey
from miniengine.storage.interfaces.provenance import NewProcess, NodeRow, pack_attributes
from miniengine.storage.rows import (
    NODE_COLUMNS,
    begin_process_tx,
    check_lease,
    insert_new_data,
)

__all__ = [
    "begin_cached_tx",
    "cache_source",
    "create_calcjob_cached_tx",
    "node_hash",
    "set_settings_tx",
    "settings",
]

#: the oldest valid source of a (process type, hash): finished OK, not marked invalid
_SOURCE = (
    "SELECT pk, uuid, exit_message FROM nodes WHERE process_type = ? AND node_hash = ? "
    "AND process_state = 'finished' AND exit_status = 0 "
    f"AND coalesce(json_extract(extras, '$.{VALID_CACHE_EXTRA}'), 1) != 0 "
    "ORDER BY pk LIMIT 1"
)

#: the source and the outputs it created (one row per output; one with NULLs for none), in one
#: statement
_SOURCE_AND_OUTPUTS = (
    f"SELECT s.pk, s.uuid, s.exit_message, l.out_pk, l.label FROM ({_SOURCE}) s "
    "LEFT JOIN links l ON l.in_pk = s.pk AND l.link_type = 'create' ORDER BY l.pk"
)

_CLONE = (
    "INSERT INTO nodes (uuid, node_type, label, description, attributes, ctime, mtime, "
    "computer_pk) SELECT ?, node_type, label, description, attributes, ?, ?, computer_pk "
    f"FROM nodes WHERE pk = ? RETURNING {NODE_COLUMNS}"
)


def begin_cached_tx(
    connection: sqlite3.Connection, new: NewProcess, memo: MemoKey | None
) -> CachedBegin:
    assert new.node_hash is not None
    if memo is None:
        source = connection.execute(
            _SOURCE_AND_OUTPUTS, (new.process_type, new.node_hash)
        ).fetchall()
        if source:  # created finished, as the copy: no INSERT then UPDATE
            return _create_copy(connection, new, source)
        pk, input_pks = begin_process_tx(connection, new)
        return CachedBegin(pk, input_pks, None)
    # a call of a WorkChain step: created first, as its memo says
    pk, input_pks, outcome = begin_memoised_tx(connection, new, memo)
    if outcome != "new":  # a replayed step's call: nothing to look up
        return _replayed(new, pk, outcome)
    source = connection.execute(_SOURCE_AND_OUTPUTS, (new.process_type, new.node_hash)).fetchall()
    if not source:
        return CachedBegin(pk, input_pks, None)
    return _copy(connection, pk, input_pks, source)


def create_calcjob_cached_tx(
    connection: sqlite3.Connection,
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


def _create_copy(connection: sqlite3.Connection, new: NewProcess, source: list[Any]) -> CachedBegin:
    """Create the new process finished as a copy of ``source`` (the rows of
    :data:`_SOURCE_AND_OUTPUTS`), with its inputs, its links and clones of the source's
    outputs."""
    if new.parent is not None:
        check_lease(connection, *new.parent)
    source_uuid, exit_message = source[0][1], source[0][2]
    now = time.time()
    input_pks = insert_new_data(connection, (data for _, data in new.inputs), now)
    process = connection.execute(
        "INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, label, "
        "description, attributes, owner, lease_epoch, lease_expires, ctime, mtime, submitted, "
        "node_hash, exit_status, exit_message, extras) "
        "VALUES (?, ?, ?, ?, 'finished', ?, ?, ?, NULL, 0, NULL, ?, ?, ?, ?, 0, ?, ?) "
        f"RETURNING {NODE_COLUMNS}",
        (
            new.uuid,
            new.node_type,
            new.process_type,
            new.process_label,
            new.label,
            new.description,
            pack_attributes(new.attributes) if new.attributes else None,
            now,
            now,
            int(new.submitted),
            new.node_hash,
            exit_message,
            json.dumps({CACHED_FROM_EXTRA: source_uuid}),
        ),
    ).fetchone()
    pk = process[0]
    links = [
        (input_pk, pk, new.input_link_type, label)
        for input_pk, (label, _) in zip(input_pks, new.inputs, strict=True)
    ]
    if new.parent is not None:
        links.append((new.parent[0], pk, new.call_link_type, new.call_link_label))
    outs: list[tuple[str, NodeRow]] = []
    for *_, out_pk, label in source:
        if out_pk is None:
            continue  # (a source without outputs)
        row = connection.execute(_CLONE, (new_uuid(), now, now, out_pk)).fetchone()
        outs.append((label, NodeRow._make(row)))
        links.append((pk, row[0], "create", label))
    connection.executemany(
        "INSERT INTO links (in_pk, out_pk, link_type, label) VALUES (?, ?, ?, ?)", links
    )
    return CachedBegin(pk, input_pks, source_uuid, NodeRow._make(process), outs)


def _copy(
    connection: sqlite3.Connection, pk: int, input_pks: list[int], source: list[Any]
) -> CachedBegin:
    """Finish the new process ``pk`` as a copy of ``source`` (the rows of
    :data:`_SOURCE_AND_OUTPUTS`); the rows of the process and its clones come back from the
    statements that write them (no read after)."""
    source_uuid, exit_message = source[0][1], source[0][2]
    now = time.time()
    outs: list[tuple[str, NodeRow]] = []
    for *_, out_pk, label in source:
        if out_pk is None:
            continue  # (a source without outputs)
        row = connection.execute(_CLONE, (new_uuid(), now, now, out_pk)).fetchone()
        outs.append((label, NodeRow._make(row)))
    connection.executemany(
        "INSERT INTO links (in_pk, out_pk, link_type, label) VALUES (?, ?, ?, ?)",
        [(pk, row.pk, "create", label) for label, row in outs],
    )
    process = connection.execute(
        "UPDATE nodes SET process_state = 'finished', exit_status = 0, exit_message = ?, "
        "owner = NULL, lease_expires = NULL, extras = ?, mtime = ? WHERE pk = ? "
        f"RETURNING {NODE_COLUMNS}",
        (exit_message, json.dumps({CACHED_FROM_EXTRA: source_uuid}), now, pk),
    ).fetchone()
    return CachedBegin(pk, input_pks, source_uuid, NodeRow._make(process), outs)


def node_hash(connection: sqlite3.Connection, pk: int) -> str | None:
    row = connection.execute("SELECT node_hash FROM nodes WHERE pk = ?", (pk,)).fetchone()
    return None if row is None else row[0]


def cache_source(connection: sqlite3.Connection, process_type: str, hash_: str) -> str | None:
    row = connection.execute(_SOURCE, (process_type, hash_)).fetchone()
    return None if row is None else str(row[1])


def settings(connection: sqlite3.Connection, names: Sequence[str]) -> dict[str, Any]:
    marks = ", ".join("?" * len(names))
    rows = connection.execute(
        f"SELECT name, value FROM settings WHERE name IN ({marks})", tuple(names)
    ).fetchall()
    return {name: json.loads(value) for name, value in rows}


def set_settings_tx(connection: sqlite3.Connection, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        if value is None:
            connection.execute("DELETE FROM settings WHERE name = ?", (name,))
        else:
            connection.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, json.dumps(value)),
            )
