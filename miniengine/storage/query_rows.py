"""The SQL of the operator's reads (:class:`~miniengine.storage.interfaces.queries.Queries`).

Each function is one or two statements whose plan uses an index (see ``schema_v3``); rows come
back as the named tuples of the interface, so the commands never index into positional rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from miniengine.core.links import CALL_LINK_TYPES
from miniengine.core.states import ProcessState
from miniengine.storage.interfaces.queries import (
    UNLIMITED_DEPTH,
    LinkedNode,
    LogLine,
    NodeView,
    ProcessOwner,
    ProcessRow,
    TreeRow,
)

#: The ints sqlite takes as parameters.
_SQL_INTEGERS = range(-(2**63), 2**63)

__all__ = [
    "count_nodes",
    "integrity_check",
    "linked_nodes",
    "list_processes",
    "log_count",
    "node",
    "process_owner",
    "schema_version",
    "subtree",
    "subtree_logs",
]

_STATES = frozenset(state.value for state in ProcessState)
_CALL_TYPES = ", ".join(f"'{link_type}'" for link_type in CALL_LINK_TYPES)

_CALLER = (
    f"(SELECT l.in_pk FROM links l WHERE l.out_pk = n.pk AND l.link_type IN ({_CALL_TYPES}) "
    "ORDER BY l.pk LIMIT 1)"
)


def list_processes(
    connection: sqlite3.Connection,
    states: Sequence[str] | None,
    since: float | None,
    limit: int | None,
) -> list[ProcessRow]:
    """Process nodes newest first, in ``states`` (all if None), created at or after ``since``.

    ``process_state IS NOT NULL`` is spelled out even with a state filter: it lets sqlite use
    the partial index of process nodes by ctime (``nodes_process_ctime``).
    """
    query = (
        "SELECT n.pk, n.uuid, n.ctime, n.process_label, n.process_state, n.exit_status, "
        f"n.process_status, n.paused, {_CALLER} FROM nodes n WHERE n.process_state IS NOT NULL"
    )
    params: list[object] = []
    if states is not None:
        # Literals, not parameters, and the partial index's own condition: sqlite uses the
        # index of the active processes (``nodes_active``) or of those that ended badly
        # (``nodes_ended_badly``) only when it sees the index's condition in the WHERE.
        query += f" AND n.process_state IN ({', '.join(_state_literal(s) for s in states)})"
        query += partial_index_condition(states)
    if since is not None:
        query += " AND n.ctime >= ?"
        params.append(since)
    query += " ORDER BY n.ctime DESC, n.pk DESC"
    if limit is not None:
        query += " LIMIT ?"
        params.append(limit)
    return [ProcessRow._make(row) for row in connection.execute(query, params)]


def _state_literal(state: str) -> str:
    if state not in _STATES:
        raise ValueError(f"unknown process state {state!r}")
    return f"'{state}'"


def node(connection: sqlite3.Connection, pk: int) -> NodeView | None:
    if pk not in _SQL_INTEGERS:  # a pk sqlite cannot even take names no node
        return None
    row = connection.execute(
        f"SELECT {', '.join(NodeView._fields)} FROM nodes WHERE pk = ?", (pk,)
    ).fetchone()
    return None if row is None else NodeView._make(row)


def process_owner(connection: sqlite3.Connection, pk: int) -> ProcessOwner | None:
    """The lease holder of process ``pk`` and, if it is a registered worker, its host."""
    if pk not in _SQL_INTEGERS:
        return None
    row = connection.execute(
        "SELECT n.owner, n.lease_expires, w.host FROM nodes n LEFT JOIN workers w "
        "ON w.id = n.owner WHERE n.pk = ? AND n.owner IS NOT NULL",
        (pk,),
    ).fetchone()
    return None if row is None else ProcessOwner._make(row)


def linked_nodes(
    connection: sqlite3.Connection, pk: int, *, incoming: bool, link_types: Sequence[str]
) -> list[LinkedNode]:
    """The nodes linked into (or out of) ``pk`` by links of ``link_types``, oldest link first."""
    mine, other = ("out_pk", "in_pk") if incoming else ("in_pk", "out_pk")
    marks = ", ".join("?" * len(link_types))
    rows = connection.execute(
        "SELECT l.label, l.link_type, n.pk, n.node_type, n.attributes, n.process_label, "
        f"n.process_state, n.exit_status, n.paused FROM links l JOIN nodes n ON n.pk = l.{other} "
        f"WHERE l.{mine} = ? AND l.link_type IN ({marks}) ORDER BY l.pk",
        (pk, *link_types),
    )
    return [LinkedNode._make(row) for row in rows]


def log_count(connection: sqlite3.Connection, pk: int) -> int:
    return int(
        connection.execute("SELECT count(*) FROM logs WHERE node_pk = ?", (pk,)).fetchone()[0]
    )


def _tree(max_depth: int | None) -> tuple[str, int]:
    """The recursive CTE ``tree(pk, parent, depth)`` of ``pk`` and the processes it called."""
    cte = (
        "WITH RECURSIVE tree(pk, parent, depth) AS (SELECT ?, NULL, 0 UNION ALL "
        "SELECT l.out_pk, l.in_pk, tree.depth + 1 FROM links l JOIN tree ON l.in_pk = tree.pk "
        f"WHERE l.link_type IN ({_CALL_TYPES}) AND tree.depth < ?) "
    )
    return cte, UNLIMITED_DEPTH if max_depth is None else max_depth


#: The rows of a call tree after the CTE of :func:`_tree` (the same on every backend).
SUBTREE_SELECT = (
    "SELECT tree.pk, tree.parent, tree.depth, n.process_label, n.process_state, "
    "n.exit_status, n.process_status, n.paused FROM tree JOIN nodes n ON n.pk = tree.pk "
    "ORDER BY tree.pk"
)


def subtree(connection: sqlite3.Connection, pk: int, max_depth: int | None) -> list[TreeRow]:
    """``pk`` and its descendants in the call tree (down to ``max_depth``), in pk order."""
    cte, depth = _tree(max_depth)
    rows = connection.execute(cte + SUBTREE_SELECT, (pk, depth))
    return [TreeRow._make(row) for row in rows]


def subtree_logs(connection: sqlite3.Connection, pk: int, max_depth: int | None) -> list[LogLine]:
    """The log lines of ``pk`` and its descendants, oldest first, each with its depth."""
    cte, depth = _tree(max_depth)
    rows = connection.execute(
        cte + "SELECT g.time, g.levelname, g.message, g.node_pk, tree.depth, n.process_label "
        "FROM tree JOIN logs g ON g.node_pk = tree.pk JOIN nodes n ON n.pk = tree.pk "
        "ORDER BY g.time, g.pk",
        (pk, depth),
    )
    return [LogLine._make(row) for row in rows]


def count_nodes(connection: sqlite3.Connection) -> tuple[int, dict[str, int], int]:
    """All nodes, the process nodes by state, and the paused processes that have not ended."""
    nodes = int(connection.execute("SELECT count(*) FROM nodes").fetchone()[0])
    counts = {
        str(state): int(count)
        for state, count in connection.execute(
            "SELECT process_state, count(*) FROM nodes WHERE process_state IS NOT NULL "
            "GROUP BY process_state"
        )
    }
    paused = int(
        connection.execute(
            "SELECT count(*) FROM nodes WHERE process_state IN ('created', 'running', "
            "'waiting') AND paused"
        ).fetchone()[0]
    )
    return nodes, counts, paused


def schema_version(connection: sqlite3.Connection) -> int:
    """The schema version in the file's header."""
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def integrity_check(connection: sqlite3.Connection) -> str:
    """sqlite's quick check: ``"ok"`` or its first finding."""
    return str(connection.execute("PRAGMA quick_check").fetchone()[0])


# the web view's reads (awaited on aiosqlite; PostgreSQL builds the same texts with its marks) ---


class Dialect(NamedTuple):
    """How a backend spells what the shared query texts leave open."""

    #: the parameter mark
    mark: str
    #: the case-insensitive LIKE
    ilike: str
    #: ``pk IN`` a list passed as one parameter, with the mark in it
    in_list: str
    #: the one parameter of :attr:`in_list` for ``pks``
    list_param: Callable[[Sequence[int]], object]
    #: the whole minute (since the epoch) of a time in seconds, ``{}`` for the time
    minute: str
    #: the fingerprints of a bucket's rows joined in pk order, ``{}`` for one row's
    aggregate: str


SQLITE = Dialect(
    "?",
    "LIKE",
    "IN (SELECT value FROM json_each(?))",
    lambda pks: json.dumps(list(pks)),
    "CAST({} / 60 AS INTEGER)",  # truncates, and times are positive
    "group_concat({}, ';')",  # in the order of the rows fed to it: pk order
)

#: What a list of processes shows of each: the columns of ``ProcessSummary`` but the caller.
SUMMARY_COLUMNS = (
    "n.pk, n.uuid, n.process_label, n.process_state, n.exit_status, n.paused, n.ctime, n.mtime"
)
#: The states of a process that has not ended (``nodes_active`` holds exactly these).
ACTIVE_STATES_SQL = "('created', 'running', 'waiting')"
_ACTIVE = frozenset({"created", "running", "waiting"})
#: The states of a process that ended badly, rare among the ended ones (``nodes_ended_badly``
#: holds exactly these, by state and pk).
ENDED_BADLY_SQL = "('excepted', 'killed')"
_ENDED_BADLY = frozenset({"excepted", "killed"})


def partial_index_condition(states: Iterable[object], column: str = "n.process_state") -> str:
    """`` AND <column> IN (...)``: the condition of the partial index that holds every process
    in ``states`` (``nodes_active``, ``nodes_ended_badly``), word for word, or ``""``.

    sqlite uses a partial index only when the query's ``WHERE`` holds the index's own condition
    (it does not infer it from ``IN (?)`` or from other literals); with it, a filter on those
    states walks that index in pk order instead of the whole primary key.  The condition adds
    nothing to the filter, which already names a subset of those states.
    """
    chosen = list(states)
    if not chosen or not all(isinstance(state, str) for state in chosen):
        return ""
    if _ACTIVE.issuperset(chosen):
        return f" AND {column} IN {ACTIVE_STATES_SQL}"
    if _ENDED_BADLY.issuperset(chosen):
        return f" AND {column} IN {ENDED_BADLY_SQL}"
    return ""


def process_page_query(
    dialect: Dialect,
    states: Sequence[str] | None,
    label: str | None,
    group: str | None,
    since: float | None,
    until: float | None,
    before_pk: int | None,
    limit: int,
    group_pk: int | None = None,
) -> tuple[str, list[object]]:
    """One page of processes, newest (highest pk) first, below ``before_pk``.

    Walking the primary key downwards from ``before_pk`` and stopping after ``limit`` matches
    keeps a page as cheap on the millionth row as on the first whenever matches are not rare;
    the states are literals so that a filter on active states walks ``nodes_active`` instead.
    With ``group_pk`` (the one group of the label ``group``) the walk is down that group's
    members in ``group_nodes``'s primary key instead, as cheap in a group of a hundred
    thousand as in one of ten; several groups of that label are merged by a list of their
    members.  The label is a case-insensitive substring (``%`` and ``_`` in it match
    themselves).
    """
    mark = dialect.mark
    params: list[object] = []
    if group_pk is not None:
        query = (
            f"SELECT {SUMMARY_COLUMNS}, {_CALLER}, n.process_status FROM group_nodes gn "
            f"JOIN nodes n ON n.pk = gn.node_pk WHERE gn.group_pk = {mark} "
            "AND n.process_state IS NOT NULL"
        )
        params.append(group_pk)
        if before_pk is not None:  # on both sides of the join: PostgreSQL merges them
            query += f" AND gn.node_pk < {mark} AND n.pk < {mark}"
            params.extend((before_pk, before_pk))
        group = None  # the walk is the group
    else:
        query = (
            f"SELECT {SUMMARY_COLUMNS}, {_CALLER}, n.process_status FROM nodes n "
            "WHERE n.process_state IS NOT NULL"
        )
        if before_pk is not None:
            query += f" AND n.pk < {mark}"
            params.append(before_pk)
    if states:
        query += f" AND n.process_state IN ({', '.join(_state_literal(s) for s in states)})"
        # the partial index's own condition, word for word: sqlite then walks it (with the
        # pk range) instead of the whole primary key for the few active or ended-badly ones
        query += partial_index_condition(states)
    if label:
        escaped = label.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query += f" AND n.process_label {dialect.ilike} {mark} ESCAPE '\\'"
        params.append(f"%{escaped}%")
    if group is not None:
        query += (
            " AND n.pk IN (SELECT gn.node_pk FROM group_nodes gn JOIN groups g "
            f"ON g.pk = gn.group_pk WHERE g.label = {mark})"
        )
        params.append(group)
    if since is not None:
        query += f" AND n.ctime >= {mark}"
        params.append(since)
    if until is not None:
        query += f" AND n.ctime < {mark}"
        params.append(until)
    order = "gn.node_pk" if group_pk is not None else "n.pk"
    query += f" ORDER BY {order} DESC LIMIT {mark}"
    params.append(limit)
    return query, params


#: One active process's fingerprint in :func:`changes_query`: what a change of its row on a
#: page is (state, paused flag, mtime to the microsecond, status), length-prefixing the status
#: so that no two rows can read alike.
_FINGERPRINT = (
    "n.pk || ':' || n.process_state || ':' || n.paused || ':' || "
    "CAST(n.mtime * 1000000 AS BIGINT) || ':' || length(coalesce(n.process_status, '')) || "
    "':' || coalesce(n.process_status, '')"
)


def changes_query(dialect: Dialect, with_buckets: bool = True) -> str:
    """What changed since a cursor, in one statement (one snapshot), as rows tagged by their
    first column.  Parameters: the bucket size (only ``with_buckets``), the cursor's highest
    node pk, how many nodes above it to read at most, and the pks it still waits for (gaps,
    one list parameter, see :attr:`Dialect.in_list`).

    - ``0, bucket, fingerprint``: the active processes (``nodes_active``) by buckets of pks,
      each bucket the concatenated fingerprints of its processes in pk order, so that the
      database compares a thousand rows and the reader a few strings;
    - ``1, SUMMARY_COLUMNS, process_status``: the nodes above the cursor's highest pk, the
      lowest first and at most that many (a reader behind by more reads on from the last),
      and those among the gaps (a Data node with a NULL state), to learn new processes,
      even those that ended before this read, and the new highest pk.
    """
    mark, in_list = dialect.mark, dialect.in_list
    buckets = ""
    if with_buckets:
        fingerprints = dialect.aggregate.format(_FINGERPRINT)
        buckets = (
            f"SELECT 0, n.pk / {mark}, {fingerprints}, NULL, NULL, NULL, NULL, NULL, NULL, "
            "NULL FROM (SELECT pk, process_state, paused, mtime, process_status FROM nodes "
            f"WHERE process_state IN {ACTIVE_STATES_SQL} ORDER BY pk) n GROUP BY 2 UNION ALL "
        )
    return (
        f"{buckets}SELECT * FROM (SELECT 1, {SUMMARY_COLUMNS}, n.process_status FROM nodes n "
        f"WHERE n.pk > {mark} ORDER BY n.pk LIMIT {mark}) above "
        f"UNION ALL SELECT 1, {SUMMARY_COLUMNS}, n.process_status FROM nodes n "
        f"WHERE n.pk {in_list}"
    )


def bucket_rows_query(dialect: Dialect) -> str:
    """The processes of the buckets whose fingerprint changed: the active ones now in them
    (their index holds the pk: no row is read for the others) and the ones that were active
    there before (by pk), ended or not.  Parameters: the bucket size, the buckets, the pks."""
    mark, in_list = dialect.mark, dialect.in_list
    return (
        f"SELECT {SUMMARY_COLUMNS}, n.process_status FROM nodes n "
        f"WHERE n.process_state IN {ACTIVE_STATES_SQL} AND (n.pk / {mark}) {in_list} "
        f"UNION ALL SELECT {SUMMARY_COLUMNS}, n.process_status FROM nodes n "
        f"WHERE n.pk {in_list} AND n.process_state NOT IN {ACTIVE_STATES_SQL}"
    )


def callers_query(dialect: Dialect) -> str:
    """The caller of each of a list of processes: ``(pk, caller pk)``, oldest call link first."""
    return (
        f"SELECT l.out_pk, l.in_pk FROM links l WHERE l.out_pk {dialect.in_list} "
        f"AND l.link_type IN ({_CALL_TYPES}) ORDER BY l.pk"
    )


def reports_query(dialect: Dialect) -> str:
    """The log lines of a node (first parameter) with ids above the second, oldest first."""
    mark = dialect.mark
    return (
        "SELECT pk, node_pk, time, levelname, message FROM logs "
        f"WHERE node_pk = {mark} AND pk > {mark} ORDER BY pk"
    )


def queue_counts_query(dialect: Dialect) -> str:
    """The tasks ready to be claimed at a time (the parameter), and those claimed: each count
    walks its partial index (``tasks_ready``, ``tasks_leased``)."""
    return (
        "SELECT (SELECT count(*) FROM tasks WHERE status = 'ready' AND not_before <= "
        f"{dialect.mark}), (SELECT count(*) FROM tasks WHERE status = 'leased')"
    )


def finished_per_minute_query(dialect: Dialect) -> str:
    """``(minute, count)`` of the processes that ended at or after a time (the parameter), by
    the whole minute of their last change: one grouped pass over the nodes."""
    minute = dialect.minute.format("mtime")
    return (
        f"SELECT {minute} AS minute, count(*) FROM nodes "
        "WHERE process_state IN ('finished', 'excepted', 'killed') "
        f"AND mtime >= {dialect.mark} GROUP BY minute"
    )


def groups_of_label_query(dialect: Dialect) -> str:
    """The pks of the groups of a label (any type), at most two: is there just one?"""
    return f"SELECT pk FROM groups WHERE label = {dialect.mark} ORDER BY pk LIMIT 2"
