"""The SQL of the provenance graph on PostgreSQL (the port of ``storage/rows.py``).

Each function has the signature and the results of its sqlite namesake, on a psycopg 3
connection inside a transaction that the caller opened (``*_tx``) or on any connection (reads).
Writes made for a process check its ``owner`` and ``lease_epoch`` in the same transaction and
raise :class:`LeaseLostError` (the caller rolls everything back) when they no longer match.

Translations: ``lastrowid`` is ``RETURNING pk``; ``IN (?, ...)`` is ``= ANY(%s)`` with one array
parameter (one statement text whatever the count, so psycopg can prepare it); sqlite's ``GLOB``
is ``LIKE`` (both case-sensitive; a uuid holds no wildcard); a negative ``limit`` means no limit,
as sqlite's ``LIMIT -1`` does (PostgreSQL would refuse it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg.errors import UniqueViolation

from miniengine.core.data import Data, check_no_nul
from miniengine.exceptions import LeaseLostError, NotExistent
from miniengine.storage.attribute_json import attributes_json_text
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
)
from miniengine.storage.postgres import broker_rows
from miniengine.storage.postgres.clock import SERVER_NOW, lease_seconds
from miniengine.storage.query_rows import partial_index_condition
from miniengine.storage.rows import (
    _RANDOM_DASHES,
    _UUID_DASHES,
    NODE_COLUMNS,
    SQL_INTEGERS,
    _dashed,
    end_values,
    log_rows,
)

__all__ = [
    "Connection",
    "Start",
    "add_log_tx",
    "add_logs_tx",
    "begin_process_of_checked_parent",
    "begin_process_tx",
    "check_lease",
    "executemany",
    "finish_process_tx",
    "insert_data",
    "insert_new_data",
    "insert_process",
    "process_rows_query",
    "read_links",
    "read_logs",
    "read_node_row",
    "read_node_rows",
    "read_process_rows",
    "store_data_tx",
    "update_label_tx",
    "uuid_matches",
    "uuid_prefix_query",
]

#: A psycopg connection with the default row factory (rows are tuples).
Connection = psycopg.Connection[Any]

#: The children a process called and that have not terminated (a kill or a failure cascades).
LIVE_CALLED = (
    "SELECT l.out_pk FROM links l JOIN nodes n ON n.pk = l.out_pk WHERE l.in_pk = %s "
    "AND l.link_type IN ('call_calc', 'call_work') "
    "AND n.process_state IN ('created', 'running', 'waiting')"
)

_LOG_MARKS = "(%s, %s, %s, %s)"
_INSERT_LOGS = "INSERT INTO logs (node_pk, time, levelname, message) VALUES "
_INSERT_LOG = _INSERT_LOGS + _LOG_MARKS


#: Rows per multi-row INSERT (PostgreSQL takes at most 65,535 parameters in a statement).
_ROWS_PER_INSERT = 1000


def executemany(connection: Connection, query: str, rows: Sequence[Sequence[Any]]) -> None:
    """``query``, an ``INSERT ... VALUES (...)``, for every row: one multi-row INSERT per
    :data:`_ROWS_PER_INSERT` rows (one round trip, rows inserted in order); nothing when empty.

    Measured here, a multi-row VALUES beats psycopg's pipelined ``executemany`` by a fifth for
    the few rows a step writes (and ``unnest`` of arrays more), and is as fast for hundreds.
    """
    if len(rows) == 1:
        connection.execute(query, rows[0])
        return
    head, _, values = query.rpartition("VALUES ")
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        connection.execute(
            f"{head}VALUES {', '.join([values] * len(chunk))}",
            [value for row in chunk for value in row],
        )


#: The columns of a Data node's row (a process node has more).
_DATA_COLUMNS = (
    "uuid, node_type, label, description, attributes, ctime, mtime, computer_pk, attributes_json"
)
#: Their placeholders (the last, the attributes' JSON copy that queries read, is ``jsonb``).
_DATA_MARKS = "(%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"


def _data_row(connection: Connection, data: Data, now: float) -> tuple[Any, ...]:
    """The ``nodes`` values of an unstored Data node (what storing it needs checked first)."""
    computer_pk = None
    needs = data._storage_needs()  # a computer, repository objects: codes and file data
    if needs is not None:
        from miniengine.storage.postgres.computer_rows import check_storage_needs

        computer_pk = check_storage_needs(connection, data, needs)
    content = data._to_attributes()
    attributes = pack_attributes(content)
    if b"\x00" in attributes:  # msgpack keeps a string's bytes: no zero byte, no NUL
        check_no_nul(content, f"the {type(data).__name__} node")
    return (data.uuid, data.type_name, data.label, data.description, attributes, now, now,
            computer_pk, attributes_json_text(content))  # fmt: skip


def _existing(connection: Connection, rows: Sequence[tuple[Any, ...]]) -> dict[str, int]:
    """The pks of nodes already stored under the uuids of ``rows``, each the same node (type
    and content) as its row; another node under one of the uuids is refused as the UNIQUE
    constraint would."""
    found = {
        str(uuid): (int(pk), node_type, bytes(attributes or b""))
        for uuid, pk, node_type, attributes in connection.execute(
            "SELECT uuid, pk, node_type, attributes FROM nodes WHERE uuid = ANY(%s)",
            ([row[0] for row in rows],),
        )
    }
    pks: dict[str, int] = {}
    for row in rows:
        existing = found.get(row[0])
        if existing is None or existing[1:] != (row[1], row[4]):
            raise UniqueViolation('duplicate key value violates unique constraint "nodes_uuid_key"')
        pks[row[0]] = existing[0]
    return pks


def insert_data(connection: Connection, data: Data, now: float) -> int:
    """Insert one unstored Data node and return its pk (the caller marks it stored on commit).

    A node with this uuid and the same type and content is already the one being stored (a
    step replayed after a crash stores again what the cut-off attempt had stored): its pk is
    returned; a different node under the uuid is refused as the UNIQUE constraint would.
    """
    row = _data_row(connection, data, now)
    inserted = connection.execute(
        f"INSERT INTO nodes ({_DATA_COLUMNS}) VALUES {_DATA_MARKS} "
        "ON CONFLICT (uuid) DO NOTHING RETURNING pk",
        row,
    ).fetchone()
    if inserted is None:
        return _existing(connection, [row])[data.uuid]
    return int(inserted[0])


def insert_new_data(connection: Connection, nodes: Iterable[Data], now: float) -> list[int]:
    """The pk of each node in ``nodes``, inserting every unstored one once (keyed by uuid).

    Several new nodes go in one multi-row INSERT (one round trip), in the order given, so
    their pks are those one insert after the other would give.
    """
    given = list(nodes)
    new: dict[str, Data] = {}
    for data in given:
        if data.pk is None:
            new.setdefault(data.uuid, data)
    if len(new) <= 1:
        inserted = {uuid: insert_data(connection, data, now) for uuid, data in new.items()}
    else:
        rows = [_data_row(connection, data, now) for data in new.values()]
        inserted = {}
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            marks = ", ".join([_DATA_MARKS] * len(chunk))
            for uuid, pk in connection.execute(
                f"INSERT INTO nodes ({_DATA_COLUMNS}) VALUES {marks} "
                "ON CONFLICT (uuid) DO NOTHING RETURNING uuid, pk",
                [value for row in chunk for value in row],
            ):
                inserted[str(uuid)] = int(pk)
        if len(inserted) < len(rows):
            inserted.update(_existing(connection, [row for row in rows if row[0] not in inserted]))
    return [data.pk if data.pk is not None else inserted[data.uuid] for data in given]


def store_data_tx(connection: Connection, data: Data) -> int:
    return insert_data(connection, data, time.time())


def check_lease(connection: Connection, pk: int, owner: str, epoch: int) -> None:
    """Raise ``LeaseLostError`` unless ``owner`` still holds process ``pk`` at ``epoch``.

    The row is locked ``FOR SHARE`` until the commit: a claim by another owner (an UPDATE of
    the row) waits, so the lease checked here still holds when what it fences commits (on
    sqlite, the write lock does that).
    """
    row = connection.execute(
        "SELECT owner, lease_epoch FROM nodes WHERE pk = %s FOR SHARE", (pk,)
    ).fetchone()
    if row is None or row[0] != owner or row[1] != epoch:
        raise LeaseLostError(
            f"process {pk} is no longer owned by {owner} at epoch {epoch}"
            + (f" (owner now {row[0]}, epoch {row[1]})" if row else " (no such process)")
        )


def begin_process_tx(connection: Connection, new: NewProcess) -> tuple[int, list[int]]:
    """Create (and start) a process with its inputs and links; return its pk and the input pks."""
    if new.parent is not None:
        check_lease(connection, *new.parent)
    return begin_process_of_checked_parent(connection, new)


def begin_process_of_checked_parent(
    connection: Connection, new: NewProcess
) -> tuple[int, list[int]]:
    """:func:`begin_process_tx` once this transaction has checked the parent's lease (and
    locked its row): no second look."""
    now = time.time()
    input_pks = insert_new_data(connection, (data for _, data in new.inputs), now)
    return insert_process(connection, new, input_pks, now), input_pks


def process_links(new: NewProcess, input_pks: Sequence[int]) -> list[tuple[int, str, str]]:
    """``(in_pk, link_type, label)`` of the links into a new process: its inputs, then its
    caller."""
    links: list[tuple[int, str, str]] = [
        (input_pk, new.input_link_type, label)
        for input_pk, (label, _) in zip(input_pks, new.inputs, strict=True)
    ]
    if new.parent is not None:
        links.append((new.parent[0], new.call_link_type, new.call_link_label))
    return links


class Start(NamedTuple):
    """What a resumable process is created with besides its row: its first checkpoint, and
    whether its start task is queued (a daemon's) or not (a run's, or a step's child, queued
    by the step's commit)."""

    checkpoint: bytes
    enqueue: bool


def insert_process(
    connection: Connection,
    new: NewProcess,
    input_pks: Sequence[int],
    now: float,
    start: Start | None = None,
) -> int:
    """The row of a process whose inputs are stored (and whose caller's lease this transaction
    checked), its links and its ``start``; its pk."""
    links = process_links(new, input_pks)
    if not links or len(links) > _ROWS_PER_INSERT:  # (no links: nothing to merge)
        pk = _insert_process(connection, new, now, _INSERT_PROCESS, ())
        _insert_links(
            connection, [(in_pk, pk, link_type, label) for in_pk, link_type, label in links]
        )
        if start is not None:
            connection.execute(_INSERT_CHECKPOINT, (pk, start.checkpoint))
            if start.enqueue:
                broker_rows.enqueue(connection, pk, f"start:{pk}", now)
        return pk
    # the process's row, its links in order, its checkpoint and its start task in one
    # statement: one round trip instead of up to four
    key = (len(links), None if start is None else start.enqueue)
    statement = _PROCESS_WITH_LINKS.get(key)
    if statement is None:
        statement = _PROCESS_WITH_LINKS[key] = _process_with_links(*key)
    more: list[Any] = [v for link in links for v in link]
    if start is not None:
        more.append(start.checkpoint)
        if start.enqueue:
            more.append(now)
    return _insert_process(connection, new, now, statement, more)


#: :func:`_process_with_links` by the number of links and the start (a few in practice).
_PROCESS_WITH_LINKS: dict[tuple[int, bool | None], str] = {}

#: A new process's first checkpoint (its pk and the checkpoint as parameters).
_INSERT_CHECKPOINT = "INSERT INTO checkpoints (node_pk, seq, data) VALUES (%s, 0, %s)"


def _process_with_links(count: int, enqueue: bool | None) -> str:
    """The statement inserting a process's row and ``count`` links to it, in their order
    (measured here: 8% faster than the two statements; ``unnest`` of arrays was slower), then,
    unless ``enqueue`` is None, its first checkpoint and, if ``enqueue``, its start task."""
    values = ", ".join([f"(%s::bigint, %s, %s, {position})" for position in range(count)])
    started = ""
    if enqueue is not None:
        started = (
            ", checkpointed AS (INSERT INTO checkpoints (node_pk, seq, data) "
            "SELECT pk, 0, %s FROM process)"
        )
    if enqueue:
        started += (
            ", queued AS (INSERT INTO tasks (process_pk, dedup_key, not_before, ctime) "
            "SELECT pk, 'start:' || pk, 0, %s FROM process)"
        )
    return (
        f"WITH process AS ({_INSERT_PROCESS}), linked AS (INSERT INTO links (in_pk, out_pk, "
        "link_type, label) SELECT given.in_pk, process.pk, given.link_type, given.label "
        f"FROM process, (VALUES {values}) AS given(in_pk, link_type, label, position) "
        f"ORDER BY given.position){started} SELECT pk FROM process"
    )


def _insert_process(connection: Connection, new: NewProcess, now: float, statement: str,
                    more: Sequence[Any]) -> int:  # fmt: skip
    """Insert the process's row by ``statement`` (its values, then ``more``); its pk."""
    row = connection.execute(
        statement,
        (
            new.uuid,
            new.node_type,
            new.process_type,
            new.process_label,
            new.process_state,
            new.label,
            new.description,
            pack_attributes(new.attributes) if new.attributes else None,
            attributes_json_text(new.attributes) if new.attributes else None,
            new.owner,
            1 if new.owner is not None else 0,
            lease_seconds(new.lease_expires, now),
            now,
            now,
            int(new.submitted),
            new.node_hash,
            *more,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


_INSERT_PROCESS = (
    "INSERT INTO nodes (uuid, node_type, process_type, process_label, process_state, label, "
    "description, attributes, attributes_json, owner, lease_epoch, lease_expires, ctime, mtime, "
    "submitted, node_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, "
    f"{SERVER_NOW} + %s, %s, %s, %s, %s) RETURNING pk"
)

#: A process's end, fenced by its lease (its parameters: :func:`end_values`).
_END = (
    "UPDATE nodes SET process_state = %s, exit_status = %s, exit_message = %s, "
    "exception = %s, process_status = %s, owner = NULL, lease_expires = NULL, "
    "control = NULL, paused = 0, mtime = %s "
    "WHERE pk = %s AND owner = %s AND lease_epoch = %s"
)

#: :data:`_END` as the first CTE of the statement that ends a process.
_FENCED = f"fenced AS ({_END} RETURNING awaited)"

#: A new output's row (NULL pk if a node with its uuid was stored already: a replayed finish)
#: and its link, written only if the end was (else the caller's LeaseLostError rolls it back).
_NEW_OUTPUT = (
    f"output AS (INSERT INTO nodes ({_DATA_COLUMNS}) VALUES {_DATA_MARKS} "
    "ON CONFLICT (uuid) DO NOTHING RETURNING pk), "
    "linked AS (INSERT INTO links (in_pk, out_pk, link_type, label) "
    "SELECT %s, output.pk, %s, %s FROM output, fenced)"
)

_INSERT_LINKS = "INSERT INTO links (in_pk, out_pk, link_type, label) VALUES "
_LINK_MARKS = "(%s, %s, %s, %s)"


def finish_process_tx(connection: Connection, finish: FinishProcess) -> list[int]:
    """Terminate a process (fenced by its lease) and link its outputs; return the output pks.

    The usual end (outputs stored already, and at most one new one) is one statement: the
    fenced end, the new output, the links, the logs, the checkpoint's removal and the task's
    acknowledgement (a worker's processes end by the dozen, and each statement is a round trip
    to the server); the waiting parents' counts follow in a statement of their own (see
    :func:`~miniengine.storage.postgres.broker_rows.notify_parents` for why), only if the
    process's row says that a parent waited for it."""
    now = time.time()
    logs = [*finish.logs, finish.log] if finish.log is not None else list(finish.logs)
    rows = log_rows(finish.pk, logs, now)
    if len(rows) > _ROWS_PER_INSERT:  # more than one statement's parameters: on their own
        executemany(connection, _INSERT_LOG, rows)
        rows = []
    tail = _finish_tail(finish, rows)
    new = [data for _, data, _ in finish.outputs if data.pk is None]
    if (
        len(new) > 1
        or (new and new[0]._storage_needs() is not None)
        or len(finish.outputs) > _ROWS_PER_INSERT
    ):
        output_pks, awaited = _finish_and_outputs(connection, finish, now)
        ctes, tail_params = tail
        if ctes:
            connection.execute(f"WITH {ctes} SELECT 1", tail_params)
    else:
        output_pks, awaited = _finish_in_one_statement(connection, finish, now, tail)
    if finish.resumable and awaited:
        broker_rows.notify_parents(connection, finish.pk, now)
    if finish.cascade is not None:
        from miniengine.storage.postgres import control_rows

        # the inline calls its run still holds are over with it: ended here, not asked
        broker_rows.end_inline_calls(connection, finish.pk, finish.owner, "killed", finish.cascade)
        for (child,) in connection.execute(LIVE_CALLED, (finish.pk,)).fetchall():
            control_rows.kill_tx(connection, child, finish.cascade)
    return output_pks


#: The CTEs of :func:`_finish_tail` and their parameters.
_Tail = tuple[str, list[Any]]


def _finish_tail(finish: FinishProcess, logs: Sequence[Sequence[Any]]) -> _Tail:
    """The common table expressions that complete a process's end (its logs, its checkpoint's
    removal, its task's acknowledgement) and their parameters."""
    ctes: list[str] = []
    params: list[Any] = []
    if logs:
        ctes.append(f"logged AS ({_INSERT_LOGS}{', '.join([_LOG_MARKS] * len(logs))})")
        params.extend(value for row in logs for value in row)
    if finish.resumable:
        ctes.append("cleared AS (DELETE FROM checkpoints WHERE node_pk = %s)")
        params.append(finish.pk)
    if finish.task_pk is not None:
        ctes.append(f"acked AS ({broker_rows.ACK_TASK})")
        params.append(finish.task_pk)
    return ", ".join(ctes), params


def _finish_in_one_statement(
    connection: Connection, finish: FinishProcess, now: float, tail: _Tail
) -> tuple[list[int], bool]:
    """The fenced end of ``finish``, its one new output if it has one, the links of all its
    outputs and its ``tail`` in one round trip; the output pks, and whether a parent ever
    waited for the process (its row's ``awaited``, as the end found it)."""
    ctes = [_FENCED]
    params: list[Any] = list(end_values(finish, now))
    new = next((output for output in finish.outputs if output[1].pk is None), None)
    row: tuple[Any, ...] = ()
    if new is not None:
        label, data, link_type = new
        row = _data_row(connection, data, now)
        ctes.append(_NEW_OUTPUT)
        params.extend((*row, finish.pk, link_type, label))
    stored = [
        (finish.pk, data.pk, link_type, label)
        for label, data, link_type in finish.outputs
        if data.pk is not None
    ]
    if stored:
        ctes.append(f"stored AS ({_INSERT_LINKS}{', '.join([_LINK_MARKS] * len(stored))})")
        params.extend(value for link in stored for value in link)
    more, tail_params = tail
    if more:
        ctes.append(more)
        params.extend(tail_params)
    output = "(SELECT pk FROM output)" if new is not None else "NULL"
    answer = connection.execute(
        f"WITH {', '.join(ctes)} SELECT (SELECT count(*) FROM fenced), {output}, "
        "(SELECT awaited FROM fenced)",
        params,
    ).fetchone()
    assert answer is not None
    fenced, out_pk, awaited = answer
    if fenced != 1:
        check_lease(connection, finish.pk, finish.owner, finish.epoch)
    if new is not None and out_pk is None:  # stored by a finish cut off before: linked now
        label, data, link_type = new
        out_pk = _existing(connection, [row])[data.uuid]
        _insert_links(connection, [(finish.pk, out_pk, link_type, label)])
    output_pks = [data.pk if data.pk is not None else out_pk for _, data, _ in finish.outputs]
    return [int(pk) for pk in output_pks], awaited != 0


def _finish_and_outputs(
    connection: Connection, finish: FinishProcess, now: float
) -> tuple[list[int], bool]:
    """The fenced end of ``finish``, then its outputs and their links; the output pks, and
    whether a parent ever waited for the process."""
    ended = connection.execute(f"{_END} RETURNING awaited", end_values(finish, now)).fetchone()
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
    return output_pks, ended is None or ended[0] != 0


def update_label_tx(connection: Connection, pk: int, label: str, description: str) -> None:
    cursor = connection.execute(
        "UPDATE nodes SET label = %s, description = %s, mtime = %s WHERE pk = %s",
        (label, description, time.time(), pk),
    )
    if cursor.rowcount == 0:  # deleted since it was loaded: say so, rather than change nothing
        raise NotExistent(f"no node with the pk {pk}")


def add_log_tx(connection: Connection, pk: int, levelname: str, message: str) -> None:
    connection.execute(_INSERT_LOG, (pk, time.time(), levelname, message))


def add_logs_tx(connection: Connection, pk: int, logs: Sequence[LogEntry]) -> None:
    executemany(connection, _INSERT_LOG, log_rows(pk, logs, time.time()))


def _insert_links(connection: Connection, links: Sequence[tuple[int, int, str, str]]) -> None:
    executemany(connection, _INSERT_LINKS + _LINK_MARKS, links)


# reads -----------------------------------------------------------------------------------------


def read_node_row(connection: Connection, identifier: int | str) -> NodeRow:
    """The row of a node by pk, or by uuid or a unique prefix of it (see :func:`uuid_matches`).

    Raises ``NotExistent`` when nothing matches and ``MultipleObjectsError`` when a prefix
    matches more than one node, as AiiDA's ``load_node`` does.
    """
    if isinstance(identifier, int):
        row = (
            connection.execute(
                f"SELECT {NODE_COLUMNS} FROM nodes WHERE pk = %s", (identifier,)
            ).fetchone()
            if identifier in SQL_INTEGERS
            else None
        )
        if row is None:
            raise NotExistent(f"no node with the pk {identifier}")
        return NodeRow._make(row)
    row = connection.execute(
        f"SELECT {NODE_COLUMNS} FROM nodes WHERE uuid = %s", (identifier.lower(),)
    ).fetchone()
    if row is not None:
        return NodeRow._make(row)
    pks = uuid_matches(connection, identifier)
    if not pks:
        raise NotExistent(f"no node with the uuid (or uuid prefix) {identifier!r}")
    if len(pks) > 1:
        raise ambiguous_prefix(identifier, pks)
    row = connection.execute(
        f"SELECT {NODE_COLUMNS} FROM nodes WHERE pk = %s", (pks[0],)
    ).fetchone()
    assert row is not None
    return NodeRow._make(row)


def uuid_matches(connection: Connection, text: str) -> list[int]:
    """The pks (at most ``AMBIGUOUS_SHOWN + 1``) of the nodes whose uuid starts with ``text``,
    or whose *random part* (after the 48-bit timestamp of a version-7 uuid) does.

    ``text`` is matched with or without its dashes, in either case.  Anything that is not hex
    digits and dashes matches nothing.
    """
    built = uuid_prefix_query(text)
    if built is None:
        return []
    query, params = built
    return [int(row[0]) for row in connection.execute(query, params)]


def uuid_prefix_query(text: str) -> tuple[str, list[Any]] | None:
    """The query of :func:`uuid_matches` (``None``: ``text`` matches nothing), for a reader
    that runs it elsewhere (the awaitable reads)."""
    hex_digits = text.replace("-", "").lower()
    if not hex_digits or len(hex_digits) > 32 or hex_digits.strip("0123456789abcdef"):
        return None
    prefix = _dashed(hex_digits, _UUID_DASHES)
    # A range on the uuid index (byte order: the column is COLLATE "C") for the whole prefix.
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    params: list[Any] = [prefix, upper]
    query = "SELECT pk FROM nodes WHERE (uuid >= %s AND uuid < %s)"
    if len(hex_digits) <= 20:
        query += " OR substr(uuid, 15) LIKE %s"
        params.append(_dashed(hex_digits, _RANDOM_DASHES) + "%")
    query += f" ORDER BY pk LIMIT {AMBIGUOUS_SHOWN + 1}"
    return query, params


def read_node_rows(connection: Connection, pks: Sequence[int]) -> dict[int, NodeRow]:
    if not pks:
        return {}
    rows = connection.execute(
        f"SELECT {NODE_COLUMNS} FROM nodes WHERE pk = ANY(%s)",
        ([pk for pk in pks if pk in SQL_INTEGERS],),
    )
    return {row[0]: NodeRow._make(row) for row in rows}


def read_links(
    connection: Connection, pk: int, incoming: bool, link_types: Sequence[str] | None = None
) -> list[LinkRow]:
    """``(other pk, link type, label)`` for the links into (or out of) node ``pk``, oldest first."""
    mine, other = ("out_pk", "in_pk") if incoming else ("in_pk", "out_pk")
    query = f"SELECT {other}, link_type, label FROM links WHERE {mine} = %s"
    params: list[Any] = [pk]
    if link_types:
        query += " AND link_type = ANY(%s)"
        params.append(list(link_types))
    query += " ORDER BY pk"
    return [LinkRow._make(row) for row in connection.execute(query, params)]


def read_process_rows(
    connection: Connection,
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
        query += " AND pk < %s"
        params.append(below_pk)
    if states:
        query += " AND process_state = ANY(%s)"
        query += partial_index_condition(states, "process_state")  # for the planner
        params.append(list(states))
    if process_label is not None:
        query += " AND process_label = %s"
        params.append(process_label)
    query += " ORDER BY pk DESC"
    if limit is not None and int(limit) >= 0:
        query += " LIMIT %s"
        params.append(min(int(limit), SQL_INTEGERS[-1]))  # no more rows than that anyway
    return query, params


def read_logs(connection: Connection, pk: int) -> list[LogRow]:
    return [
        LogRow._make(row)
        for row in connection.execute(
            "SELECT pk, node_pk, time, levelname, message FROM logs WHERE node_pk = %s ORDER BY pk",
            (pk,),
        )
    ]
