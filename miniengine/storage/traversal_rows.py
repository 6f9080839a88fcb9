"""The statements of the traversal concern, written once for both backends.

They differ only in the parameter marker (``?`` on sqlite, ``%s`` for psycopg) and in the clock a
lease is compared with (the server's on PostgreSQL), which the callers pass in.  The closure is
computed generation by generation, each one with a few batched ``IN`` queries on the link
indexes, so that it stays within any backend's parameter limit and needs no recursive CTE that
would revisit nodes reachable along many paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from miniengine.core.graph_rules import TraversalLinks
from miniengine.exceptions import InvalidOperation
from miniengine.storage.interfaces.traversal import GraphLink, LiveProcess

__all__ = ["delete_nodes", "live_processes", "neighbour_links", "traverse"]

#: Node pks per query: far below sqlite's parameter limit (32766) and PostgreSQL's (65535).
_BATCH = 500

#: The tables whose rows belong to a node, and the columns naming it (deleted with the node).
_NODE_ROWS = (
    ("links", ("in_pk", "out_pk")),
    ("logs", ("node_pk",)),
    ("checkpoints", ("node_pk",)),
    ("tasks", ("process_pk",)),
    ("waits", ("parent_pk",)),
    ("awaited", ("child_pk", "parent_pk")),
    ("call_memo", ("parent_pk", "child_pk")),
    ("events", ("node_pk",)),
    ("calcjob_jobs", ("process_pk",)),
    ("comments", ("node_pk",)),
    ("group_nodes", ("node_pk",)),
    ("nodes", ("pk",)),
)


class _Connection(Protocol):
    def execute(self, query: Any, params: Any = ..., /) -> Any: ...


def _batches(pks: Iterable[int]) -> Iterator[list[int]]:
    batch: list[int] = []
    for pk in pks:
        batch.append(pk)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _marks(mark: str, count: int) -> str:
    return ", ".join([mark] * count)


def traverse(
    connection: _Connection, pks: Sequence[int], links: TraversalLinks, mark: str
) -> set[int]:
    seen: set[int] = set()
    for batch in _batches(dict.fromkeys(int(pk) for pk in pks)):
        rows = connection.execute(
            f"SELECT pk FROM nodes WHERE pk IN ({_marks(mark, len(batch))})", batch
        ).fetchall()
        seen.update(row[0] for row in rows)
    steps = [
        ("in_pk", "out_pk", sorted(links.forward)),
        ("out_pk", "in_pk", sorted(links.backward)),
    ]
    frontier = set(seen)
    while frontier:
        reached: set[int] = set()
        for batch in _batches(sorted(frontier)):
            for source, target, types in steps:
                if not types:
                    continue
                rows = connection.execute(
                    f"SELECT DISTINCT {target} FROM links WHERE {source} IN "
                    f"({_marks(mark, len(batch))}) AND link_type IN ({_marks(mark, len(types))})",
                    [*batch, *types],
                ).fetchall()
                reached.update(row[0] for row in rows)
        frontier = reached - seen
        seen |= frontier
    return seen


def neighbour_links(
    connection: _Connection,
    pks: Sequence[int],
    incoming: bool,
    link_types: Sequence[str],
    mark: str,
) -> list[GraphLink]:
    column = "out_pk" if incoming else "in_pk"
    found: list[tuple[int, GraphLink]] = []
    for batch in _batches(dict.fromkeys(int(pk) for pk in pks)):
        query = (
            f"SELECT pk, in_pk, out_pk, link_type, label FROM links "
            f"WHERE {column} IN ({_marks(mark, len(batch))})"
        )
        params: list[Any] = list(batch)
        if link_types:
            query += f" AND link_type IN ({_marks(mark, len(link_types))})"
            params.extend(link_types)
        for row in connection.execute(query, params).fetchall():
            found.append((row[0], GraphLink(row[1], row[2], row[3], row[4])))
    found.sort(key=lambda item: item[0])
    return [link for _, link in found]


def live_processes(
    connection: _Connection, pks: Sequence[int], mark: str, now: str
) -> list[LiveProcess]:
    live: list[LiveProcess] = []
    for batch in _batches(sorted(set(pks))):
        rows = connection.execute(
            f"SELECT pk, process_label, process_state, owner FROM nodes "
            f"WHERE pk IN ({_marks(mark, len(batch))}) "
            f"AND process_state IN ('created', 'running', 'waiting') "
            f"AND owner IS NOT NULL AND lease_expires > {now} ORDER BY pk",
            batch,
        ).fetchall()
        live.extend(LiveProcess._make(row) for row in rows)
    return live


def delete_nodes(
    connection: _Connection,
    pks: Sequence[int],
    links: TraversalLinks,
    mark: str,
    now: str,
    lock_rows: bool = False,
) -> set[int]:
    """Delete ``pks`` and what ``links`` reach, refusing live processes.  With ``lock_rows``
    (PostgreSQL, whose writers do not exclude each other) the nodes are locked first, in pk
    order, so that no worker claims one of them between the check and the deletion."""
    doomed = traverse(connection, pks, links, mark)
    if lock_rows:
        for batch in _batches(sorted(doomed)):
            connection.execute(
                f"SELECT pk FROM nodes WHERE pk IN ({_marks(mark, len(batch))}) "
                f"ORDER BY pk FOR UPDATE",
                batch,
            ).fetchall()
    live = live_processes(connection, sorted(doomed), mark, now)
    if live:
        named = ", ".join(
            f"{process.pk} ({process.process_label or 'process'}, {process.process_state}, "
            f"held by {process.owner})"
            for process in live
        )
        raise InvalidOperation(
            f"refusing to delete live processes: {named}; kill them first "
            f"(miniengine process kill PK) and wait until they are killed"
        )
    for batch in _batches(sorted(doomed)):
        marks = _marks(mark, len(batch))
        for table, columns in _NODE_ROWS:
            where = " OR ".join(f"{column} IN ({marks})" for column in columns)
            connection.execute(f"DELETE FROM {table} WHERE {where}", batch * len(columns))
    return doomed
