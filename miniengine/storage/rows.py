"""The SQL of the provenance graph: transaction bodies and read queries.

Each ``*_tx`` function is the body of one transaction, run by :meth:`Store.write` on the writer
connection; each ``read_*`` function is a query run on a reader connection.  Writes made for a
process check its ``owner`` and ``lease_epoch`` in the same transaction and raise
:class:`LeaseLostError` (rolling everything back) when they no longer match.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from miniengine.core.data import Data, check_no_nul
from miniengine.exceptions import LeaseLostError, NotExistent
from miniengine.storage import broker_rows
from miniengine.storage.interfaces.provenance import (
    AMBIGUOUS_SHOWN,
    FinishProcess,
    LinkRow,
    LogEntry,
    LogRow,
    NewProcess,
    NodeRow,
    ambiguous_prefix,
    pack_attributes,
    unpack_attributes,
)

__all__ = [
    "AMBIGUOUS_SHOWN",
    "NODE_COLUMNS",
    "FinishProcess",
    "LogEntry",
    "NewProcess",
    "ambiguous_prefix",
    "begin_process_tx",
    "finish_process_tx",
    "pack_attributes",
    "unpack_attributes",
]


#: The ints sqlite can take as a parameter: a pk beyond them names no node (and would make the
#: query raise a bare ``OverflowError``).
SQL_INTEGERS = range(-(2**63), 2**63)


NODE_COLUMNS = (
    "pk, uuid, node_type, process_type, process_label, process_state, process_status, "
    "exit_status, exit_message, exception, paused, label, description, attributes, owner, "
    "lease_epoch, lease_expires, ctime, mtime"
)

_INSERT_DATA = (
    "INSERT INTO nodes (uuid, node_type, label, description, attributes, ctime, mtime, "
    "computer_pk) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_data(connection: sqlite3.Connection, data: Data, now: float) -> int:
    """Insert one unstored Data node and return its pk (the caller marks it stored on commit).

    A node with this uuid and the same type and content is already the one being stored: an
    unstored value is checkpointed with its uuid, so a step replayed after a crash stores again
    what the cut-off attempt had stored (e.g. as the input of an inline call).  That node's pk
    is returned; a different node under the uuid is still refused by the UNIQUE constraint.
    """
    computer_pk = None
    needs = data._storage_needs()  # a computer, repository objects: codes and file data
    if needs is not None:
        from miniengine.storage.computer_rows import check_storage_needs

        computer_pk = check_storage_needs(connection, data, needs)
    content = data._to_attributes()
    attributes = pack_attributes(content)
    if b"\x00" in attributes:  # msgpack keeps a string's bytes: no zero byte, no NUL
        check_no_nul(content, f"the {type(data).__name__} node")
    cursor = connection.execute(
        _INSERT_DATA + " ON CONFLICT (uuid) DO NOTHING",
        (
            data.uuid,
            data.type_name,
            data.label,
            data.description,
            attributes,
            now,
            now,
            computer_pk,
        ),
    )
    if cursor.rowcount == 0:
        existing = connection.execute(
            "SELECT pk, node_type, attributes FROM nodes WHERE uuid = ?", (data.uuid,)
        ).fetchone()
        if existing is None or (existing[1], existing[2]) != (data.type_name, attributes):
            raise sqlite3.IntegrityError("UNIQUE constraint failed: nodes.uuid")
        return int(existing[0])
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def insert_new_data(connection: sqlite3.Connection, nodes: Iterable[Data], now: float) -> list[int]:
    """The pk of each node in ``nodes``, inserting every unstored one once.

    The same unstored object given twice (two inputs, two outputs, twice in a namespace) is one
    node linked twice, as in AiiDA, not two rows with one uuid.  Keyed by uuid, so two copies
    of one node (the same unstored value restored twice from a checkpoint) are one node too.
    """
    inserted: dict[str, int] = {}
    pks: list[int] = []
    for data in nodes:
        if data.pk is not None:
            pks.append(data.pk)
            continue
        pk = inserted.get(data.uuid)
        if pk is None:
            pk = inserted[data.uuid] = insert_data(connection, data, now)
        pks.append(pk)
    return pks


def store_data_tx(connection: sqlite3.Connection, data: Data) -> int:
    return insert_data(connection, data, time.time())


def check_lease(connection: sqlite3.Connection, pk: int, owner: str, epoch: int) -> None:
    """Raise ``LeaseLostError`` unless ``owner`` still holds process ``pk`` at ``epoch``."""
    row = connection.execute("SELECT owner, lease_epoch FROM nodes WHERE pk = ?", (pk,)).fetchone()
    if row is None or row[0] != owner or row[1] != epoch:
        raise LeaseLostError(
            f"process {pk} is no longer owned by {owner} at epoch {epoch}"
            + (f" (owner now {row[0]}, epoch {row[1]})" if row else " (no such process)")
        )


def end_values(finish: FinishProcess, now: float) -> tuple[Any, ...]:
    """The parameters of a fenced end's UPDATE on every backend: the new state's columns
    (state, exit status and message, exception, status, ``mtime``), then pk, owner and epoch."""
    return (
        finish.process_state,
        finish.exit_status,
        finish.exit_message,
        finish.exception,
        finish.process_status,
        now,
        finish.pk,
        finish.owner,
        finish.epoch,
    )


def log_rows(pk: int, logs: Iterable[LogEntry], now: float) -> list[tuple[int, float, str, str]]:
    """``(node_pk, time, levelname, message)`` rows; an entry without a time is dated ``now``."""
    return [(pk, entry[2] if len(entry) == 3 else now, entry[0], entry[1]) for entry in logs]


def begin_process_tx(connection: sqlite3.Connection, new: NewProcess) -> tuple[int, list[int]]:
    """Create (and start) a process with its inputs and links; return its pk and the input pks."""
    if new.parent is not None:
        check_lease(connection, *new.parent)
    return begin_process_of_checked_parent(connection, new)


def begin_process_of_checked_parent(
    connection: sqlite3.Connection, new: NewProcess
) -> tuple[int, list[int]]:
    """:func:`begin_process_tx` once this transaction has checked the parent's lease: no
    second look."""
    now = time.time()
    input_pks = insert_new_data(connection, (data for _, data in new.inputs), now)
    cursor = connection.execute(
        "INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, label, "
        "description, attributes, owner, lease_epoch, lease_expires, ctime, mtime, submitted, "
        "node_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.uuid,
            new.node_type,
            new.process_type,
            new.process_label,
            new.process_state,
            new.label,
            new.description,
            pack_attributes(new.attributes) if new.attributes else None,
            new.owner,
            1 if new.owner is not None else 0,
            new.lease_expires,
            now,
            now,
            int(new.submitted),
            new.node_hash,
        ),
    )
    pk = cursor.lastrowid
    assert pk is not None
    links: list[tuple[int, int, str, str]] = [
        (input_pk, pk, new.input_link_type, label)
        for input_pk, (label, _) in zip(input_pks, new.inputs, strict=True)
    ]
    if new.parent is not None:
        links.append((new.parent[0], pk, new.call_link_type, new.call_link_label))
    _insert_links(connection, links)
    return pk, input_pks


def finish_process_tx(connection: sqlite3.Connection, finish: FinishProcess) -> list[int]:
    """Terminate a process (fenced by its lease) and link its outputs; return the output pks."""
    now = time.time()
    ended = connection.execute(
        "UPDATE nodes SET process_state = ?, exit_status = ?, exit_message = ?, exception = ?, "
        "process_status = ?, owner = NULL, lease_expires = NULL, control = NULL, paused = 0, "
        "mtime = ? "
        "WHERE pk = ? AND owner = ? AND lease_epoch = ? RETURNING awaited",
        end_values(finish, now),
    ).fetchone()
    if ended is None:
        check_lease(connection, finish.pk, finish.owner, finish.epoch)
    output_pks = insert_new_data(connection, (data for _, data, _ in finish.outputs), now)
    _insert_links(
        connection,
        [
            (finish.pk, out_pk, link_type, label)
            for out_pk, (label, _, link_type) in zip(output_pks, finish.outputs, strict=True)
        ],
    )
    logs = [*finish.logs, finish.log] if finish.log is not None else list(finish.logs)
    if logs:
        connection.executemany(
            "INSERT INTO logs (node_pk, time, levelname, message) VALUES (?, ?, ?, ?)",
            log_rows(finish.pk, logs, now),
        )
    if finish.resumable:
        connection.execute("DELETE FROM checkpoints WHERE node_pk = ?", (finish.pk,))
        if ended is None or ended[0]:  # (a parent waited for it once: it may wait still)
            broker_rows.notify_parents(connection, finish.pk, now)
    if finish.cascade is not None:
        from miniengine.storage import control_rows

        # the inline calls its run still holds are over with it: ended here, not asked
        broker_rows.end_inline_calls(connection, finish.pk, finish.owner, "killed", finish.cascade)
        for (child,) in connection.execute(
            "SELECT l.out_pk FROM links l JOIN nodes n ON n.pk = l.out_pk WHERE l.in_pk = ? "
            "AND l.link_type IN ('call_calc', 'call_work') "
            "AND n.process_state IN ('created', 'running', 'waiting')",
            (finish.pk,),
        ).fetchall():
            control_rows.kill_tx(connection, child, finish.cascade)
    if finish.task_pk is not None:
        broker_rows.ack_task(connection, finish.task_pk)
    return output_pks


def update_label_tx(connection: sqlite3.Connection, pk: int, label: str, description: str) -> None:
    cursor = connection.execute(
        "UPDATE nodes SET label = ?, description = ?, mtime = ? WHERE pk = ?",
        (label, description, time.time(), pk),
    )
    if cursor.rowcount == 0:  # deleted since it was loaded: say so, rather than change nothing
        raise NotExistent(f"no node with the pk {pk}")


def add_log_tx(connection: sqlite3.Connection, pk: int, levelname: str, message: str) -> None:
    connection.execute(
        "INSERT INTO logs (node_pk, time, levelname, message) VALUES (?, ?, ?, ?)",
        (pk, time.time(), levelname, message),
    )


def add_logs_tx(connection: sqlite3.Connection, pk: int, logs: Sequence[LogEntry]) -> None:
    connection.executemany(
        "INSERT INTO logs (node_pk, time, levelname, message) VALUES (?, ?, ?, ?)",
        log_rows(pk, logs, time.time()),
    )


def _insert_links(
    connection: sqlite3.Connection, links: Iterable[tuple[int, int, str, str]]
) -> None:
    connection.executemany(
        "INSERT INTO links (in_pk, out_pk, link_type, label) VALUES (?, ?, ?, ?)", links
    )


# reads -----------------------------------------------------------------------------------------


def read_node_row(connection: sqlite3.Connection, identifier: int | str) -> NodeRow:
    """The row of a node by pk, or by uuid or a unique prefix of it (see :func:`uuid_matches`).

    Raises ``NotExistent`` when nothing matches and ``MultipleObjectsError`` when a prefix
    matches more than one node, as AiiDA's ``load_node`` does.
    """
    if isinstance(identifier, int):
        row = (
            connection.execute(
                f"SELECT {NODE_COLUMNS} FROM nodes WHERE pk = ?", (identifier,)
            ).fetchone()
            if identifier in SQL_INTEGERS
            else None
        )
        if row is None:
            raise NotExistent(f"no node with the pk {identifier}")
        return NodeRow._make(row)
    row = connection.execute(
        f"SELECT {NODE_COLUMNS} FROM nodes WHERE uuid = ?", (identifier.lower(),)
    ).fetchone()
    if row is not None:
        return NodeRow._make(row)
    pks = uuid_matches(connection, identifier)
    if not pks:
        raise NotExistent(f"no node with the uuid (or uuid prefix) {identifier!r}")
    if len(pks) > 1:
        raise ambiguous_prefix(identifier, pks)
    return NodeRow._make(
        connection.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE pk = ?", (pks[0],)).fetchone()
    )


_UUID_DASHES = (8, 12, 16, 20)  # where a canonical uuid has its dashes (in its 32 hex digits)
_RANDOM_DASHES = (4, 8)  # the same in the part after the 48-bit timestamp: "7xxx-vxxx-xxxx..."


def _dashed(hex_digits: str, dashes: tuple[int, ...]) -> str:
    parts, start = [], 0
    for end in dashes:
        if len(hex_digits) <= end:
            break
        parts.append(hex_digits[start:end])
        start = end
    parts.append(hex_digits[start:])
    return "-".join(parts)


def uuid_matches(connection: sqlite3.Connection, text: str) -> list[int]:
    """The pks (at most ``AMBIGUOUS_SHOWN + 1``) of the nodes whose uuid starts with ``text``,
    or whose *random part* does.

    Node uuids are version 7: their first 12 hex digits are a millisecond timestamp, so the
    prefixes of nodes created together are the same; the part after the timestamp (from the
    third group on, ``7xxx-...``) tells them apart.  ``text`` is matched with or without its
    dashes, in either case.  Anything that is not hex digits and dashes matches nothing.
    """
    query = uuid_prefix_query(text)
    if query is None:
        return []
    return [row[0] for row in connection.execute(*query)]


def uuid_prefix_query(text: str) -> tuple[str, list[Any]] | None:
    """The query of :func:`uuid_matches` (``None``: ``text`` matches nothing), for a reader
    that runs it elsewhere (the awaitable reads)."""
    hex_digits = text.replace("-", "").lower()
    if not hex_digits or len(hex_digits) > 32 or hex_digits.strip("0123456789abcdef"):
        return None
    prefix = _dashed(hex_digits, _UUID_DASHES)
    # A range on the uuid index for the whole-uuid prefix (LIKE would not use the index).
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    params: list[Any] = [prefix, upper]
    query = "SELECT pk FROM nodes WHERE (uuid >= ? AND uuid < ?)"
    if len(hex_digits) <= 20:
        query += " OR substr(uuid, 15) GLOB ?"
        params.append(_dashed(hex_digits, _RANDOM_DASHES) + "*")
    query += f" ORDER BY pk LIMIT {AMBIGUOUS_SHOWN + 1}"
    return query, params


def read_node_rows(connection: sqlite3.Connection, pks: Sequence[int]) -> dict[int, NodeRow]:
    if not pks:
        return {}
    marks = ",".join("?" * len(pks))
    rows = connection.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE pk IN ({marks})", tuple(pks))
    return {row[0]: NodeRow._make(row) for row in rows}


def read_links(
    connection: sqlite3.Connection, pk: int, incoming: bool, link_types: Sequence[str] | None = None
) -> list[LinkRow]:
    """``(other pk, link type, label)`` for the links into (or out of) node ``pk``, oldest first."""
    mine, other = ("out_pk", "in_pk") if incoming else ("in_pk", "out_pk")
    query = f"SELECT {other}, link_type, label FROM links WHERE {mine} = ?"
    params: list[Any] = [pk]
    if link_types:
        query += f" AND link_type IN ({','.join('?' * len(link_types))})"
        params.extend(link_types)
    query += " ORDER BY pk"
    return [LinkRow._make(row) for row in connection.execute(query, params)]


def read_process_rows(
    connection: sqlite3.Connection,
    states: Sequence[str] | None,
    process_label: str | None,
    limit: int | None,
) -> list[NodeRow]:
    query, params = process_rows_query(states, process_label, limit)
    return [NodeRow._make(row) for row in connection.execute(query, params)]


def process_rows_query(
    states: Sequence[str] | None,
    process_label: str | None,
    limit: int | None,
    below_pk: int | None = None,
) -> tuple[str, list[Any]]:
    """The query of :func:`read_process_rows`; with ``below_pk``, only the rows below that pk
    (the next page of a reader that pages through them, newest first)."""
    query = f"SELECT {NODE_COLUMNS} FROM nodes WHERE process_state IS NOT NULL"
    params: list[Any] = []
    if below_pk is not None:
        query += " AND pk < ?"
        params.append(below_pk)
    if states:
        # (imported here: the query module and its records are not needed to run processes)
        from miniengine.storage.query_rows import partial_index_condition

        query += f" AND process_state IN ({','.join('?' * len(states))})"
        query += partial_index_condition(states, "process_state")  # for the planner
        params.extend(states)
    if process_label is not None:
        query += " AND process_label = ?"
        params.append(process_label)
    query += " ORDER BY pk DESC"
    if limit is not None:
        query += " LIMIT ?"
        params.append(min(int(limit), SQL_INTEGERS[-1]))  # no more rows than that anyway
    return query, params


def read_logs(connection: sqlite3.Connection, pk: int) -> list[LogRow]:
    return [
        LogRow._make(row)
        for row in connection.execute(
            "SELECT pk, node_pk, time, levelname, message FROM logs WHERE node_pk = ? ORDER BY pk",
            (pk,),
        )
    ]
