"""The SQL of the operator's reads on PostgreSQL (the port of ``storage/query_rows.py``).

Rows come back as the named tuples of the interface.  PostgreSQL has no counterpart of sqlite's
header pragmas: the schema version is read from ``miniengine_meta``, and the integrity check is
the server's own business (it verifies pages as it reads them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from miniengine.storage.interfaces.queries import (
    LinkedNode,
    LogLine,
    NodeView,
    ProcessOwner,
    ProcessRow,
    TreeRow,
)
from miniengine.storage.postgres.schema import read_schema_version
from miniengine.storage.query_rows import (
    _CALL_TYPES,
    _CALLER,
    _SQL_INTEGERS,
    SUBTREE_SELECT,
    Dialect,
    _state_literal,
    bucket_rows_query,
    callers_query,
    changes_query,
    finished_per_minute_query,
    groups_of_label_query,
    partial_index_condition,
    process_page_query,
    queue_counts_query,
    reports_query,
)
from miniengine.storage.query_rows import _tree as _sqlite_tree

if TYPE_CHECKING:
    from miniengine.storage.postgres.rows import Connection

# The web view's statements (``*_query``) are one text for both backends, imported from the
# sqlite module and spelled with :data:`POSTGRES`.
__all__ = [
    "POSTGRES",
    "bucket_rows_query",
    "callers_query",
    "changes_query",
    "count_nodes",
    "finished_per_minute_query",
    "groups_of_label_query",
    "integrity_check",
    "linked_nodes",
    "linked_nodes_query",
    "list_processes",
    "log_count",
    "node",
    "process_owner",
    "process_page_query",
    "queue_counts_query",
    "reports_query",
    "schema_version",
    "subtree",
    "subtree_logs",
]


def list_processes(
    connection: Connection,
    states: Sequence[str] | None,
    since: float | None,
    limit: int | None,
) -> list[ProcessRow]:
    """Process nodes newest first, in ``states`` (all if None), created at or after ``since``.

    The states are literals, so that the planner can match the partial index of the active
    processes (``nodes_active``); ``process_state IS NOT NULL`` matches ``nodes_process_ctime``.
    """
    query = (
        "SELECT n.pk, n.uuid, n.ctime, n.process_label, n.process_state, n.exit_status, "
        f"n.process_status, n.paused, {_CALLER} FROM nodes n WHERE n.process_state IS NOT NULL"
    )
    params: list[object] = []
    if states is not None:
        query += f" AND n.process_state IN ({', '.join(_state_literal(s) for s in states)})"
        query += partial_index_condition(states)
    if since is not None:
        query += " AND n.ctime >= %s"
        params.append(since)
    query += " ORDER BY n.ctime DESC, n.pk DESC"
    if limit is not None and limit >= 0:
        query += " LIMIT %s"
        params.append(limit)
    return [ProcessRow._make(row) for row in connection.execute(query, params)]


def node(connection: Connection, pk: int) -> NodeView | None:
    if pk not in _SQL_INTEGERS:  # beyond a bigint: no node has it
        return None
    row = connection.execute(
        f"SELECT {', '.join(NodeView._fields)} FROM nodes WHERE pk = %s", (pk,)
    ).fetchone()
    return None if row is None else NodeView._make(row)


def process_owner(connection: Connection, pk: int) -> ProcessOwner | None:
    """The lease holder of process ``pk`` and, if it is a registered worker, its host."""
    if pk not in _SQL_INTEGERS:
        return None
    row = connection.execute(
        "SELECT n.owner, n.lease_expires, w.host FROM nodes n LEFT JOIN workers w "
        "ON w.id = n.owner WHERE n.pk = %s AND n.owner IS NOT NULL",
        (pk,),
    ).fetchone()
    return None if row is None else ProcessOwner._make(row)


def linked_nodes(
    connection: Connection, pk: int, *, incoming: bool, link_types: Sequence[str]
) -> list[LinkedNode]:
    """The nodes linked into (or out of) ``pk`` by links of ``link_types``, oldest link first."""
    rows = connection.execute(linked_nodes_query(incoming), (pk, list(link_types)))
    return [LinkedNode._make(row) for row in rows]


def linked_nodes_query(incoming: bool) -> str:
    """The statement of :func:`linked_nodes` (parameters: the pk, the list of link types)."""
    mine, other = ("out_pk", "in_pk") if incoming else ("in_pk", "out_pk")
    return (
        "SELECT l.label, l.link_type, n.pk, n.node_type, n.attributes, n.process_label, "
        f"n.process_state, n.exit_status, n.paused FROM links l JOIN nodes n ON n.pk = l.{other} "
        f"WHERE l.{mine} = %s AND l.link_type = ANY(%s) ORDER BY l.pk"
    )


#: How PostgreSQL spells what the shared query texts of the web view leave open.
POSTGRES = Dialect(
    "%s",
    "ILIKE",
    "= ANY(%s)",
    lambda pks: list(pks),
    "CAST(floor({} / 60) AS bigint)",
    "string_agg({}, ';' ORDER BY n.pk)",
)


def log_count(connection: Connection, pk: int) -> int:
    row = connection.execute("SELECT count(*) FROM logs WHERE node_pk = %s", (pk,)).fetchone()
    assert row is not None
    return int(row[0])


def _tree(max_depth: int | None) -> tuple[str, int]:
    """The recursive CTE ``tree(pk, parent, depth)`` of ``pk`` and the processes it called."""
    cte = (
        "WITH RECURSIVE tree(pk, parent, depth) AS (SELECT %s::bigint, NULL::bigint, 0 "
        "UNION ALL SELECT l.out_pk, l.in_pk, tree.depth + 1 FROM links l "
        f"JOIN tree ON l.in_pk = tree.pk WHERE l.link_type IN ({_CALL_TYPES}) "
        "AND tree.depth < %s) "
    )
    return cte, _sqlite_tree(max_depth)[1]


def subtree(connection: Connection, pk: int, max_depth: int | None) -> list[TreeRow]:
    """``pk`` and its descendants in the call tree (down to ``max_depth``), in pk order."""
    cte, depth = _tree(max_depth)
    rows = connection.execute(cte + SUBTREE_SELECT, (pk, depth))
    return [TreeRow._make(row) for row in rows]


def subtree_logs(connection: Connection, pk: int, max_depth: int | None) -> list[LogLine]:
    """The log lines of ``pk`` and its descendants, oldest first, each with its depth."""
    cte, depth = _tree(max_depth)
    rows = connection.execute(
        cte + "SELECT g.time, g.levelname, g.message, g.node_pk, tree.depth, n.process_label "
        "FROM tree JOIN logs g ON g.node_pk = tree.pk JOIN nodes n ON n.pk = tree.pk "
        "ORDER BY g.time, g.pk",
        (pk, depth),
    )
    return [LogLine._make(row) for row in rows]


def count_nodes(connection: Connection) -> tuple[int, dict[str, int], int]:
    """All nodes, the process nodes by state, and the paused processes that have not ended."""
    row = connection.execute(
        "SELECT count(*), count(*) FILTER (WHERE process_state IN ('created', 'running', "
        "'waiting') AND paused <> 0) FROM nodes"
    ).fetchone()
    assert row is not None
    counts = {
        str(state): int(count)
        for state, count in connection.execute(
            "SELECT process_state, count(*) FROM nodes WHERE process_state IS NOT NULL "
            "GROUP BY process_state"
        )
    }
    return int(row[0]), counts, int(row[1])


def schema_version(connection: Connection) -> int:
    """The schema version recorded in ``miniengine_meta`` (0 without a schema)."""
    return read_schema_version(connection) or 0


def integrity_check(connection: Connection) -> str:
    """``"ok"``: the server checks its pages itself (and their checksums, where the cluster has
    them) whenever it reads them, and reports a corrupt one as an error of that query; there is
    nothing like sqlite's quick check for a client to run."""
    connection.execute("SELECT 1")
    return "ok"
