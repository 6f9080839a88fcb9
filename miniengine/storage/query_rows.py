"""The SQL of the operator's reads (:class:`~miniengine.storage.interfaces.queries.Queries`).

Each function is one or two statements whose plan uses an index (see ``schema_v3``); rows come
back as the named tuples of the interface, so the commands never index into positional rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

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
        # Literals, not parameters: sqlite uses the partial index of the active processes
        # (``nodes_active``) only when it can see that the states are among those of its WHERE.
        query += f" AND n.process_state IN ({', '.join(_state_literal(s) for s in states)})"
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


def subtree(connection: sqlite3.Connection, pk: int, max_depth: int | None) -> list[TreeRow]:
    """``pk`` and its descendants in the call tree (down to ``max_depth``), in pk order."""
    cte, depth = _tree(max_depth)
    rows = connection.execute(
        cte + "SELECT tree.pk, tree.parent, tree.depth, n.process_label, n.process_state, "
        "n.exit_status, n.process_status, n.paused FROM tree JOIN nodes n ON n.pk = tree.pk "
        "ORDER BY tree.pk",
        (pk, depth),
    )
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
