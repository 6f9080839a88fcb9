"""The statements of extras, comments and groups on sqlite (see
:mod:`miniengine.storage.interfaces.groups`).

Extras are a JSON object in ``nodes.extras``; a change reads and rewrites it inside the
transaction (``BEGIN IMMEDIATE`` holds the write lock, so no change is lost).  ``json_patch``
is not used: it deletes the keys whose new value is ``null``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from miniengine.core.ids import new_uuid
from miniengine.exceptions import NotExistent
from miniengine.storage.interfaces.groups import (
    CommentRow,
    DuplicateGroupError,
    GroupRow,
    dump_extras,
)
from miniengine.storage.rows import SQL_INTEGERS

__all__ = [
    "add_comment_tx",
    "add_group_nodes_tx",
    "create_group_tx",
    "delete_extras_tx",
    "delete_group_extras_tx",
    "delete_group_tx",
    "find_groups",
    "group_count",
    "group_counts",
    "group_node_pks",
    "node_groups",
    "read_comments",
    "read_extras",
    "read_group_extras",
    "remove_comment_tx",
    "remove_group_nodes_tx",
    "reset_extras_tx",
    "reset_group_extras_tx",
    "set_extras_tx",
    "set_group_extras_tx",
    "update_comment_tx",
    "update_group_tx",
]

_COMMENT_COLUMNS = "pk, uuid, node_pk, ctime, mtime, content"
_GROUP_COLUMNS = "pk, uuid, label, type_string, description, ctime"


def _missing_node(pk: int) -> NotExistent:
    return NotExistent(f"no node with the pk {pk}")


def _pks(pks: Sequence[int]) -> list[int]:
    """The distinct pks that a column can hold (others name nothing), in order."""
    return [pk for pk in dict.fromkeys(pks) if pk in SQL_INTEGERS]


#: The tables whose rows have extras, and what a row of each is called in messages.
_EXTRAS_OF = {"nodes": "node", "groups": "group"}


def _read(connection: sqlite3.Connection, table: str, pk: int) -> dict[str, Any]:
    row = (
        connection.execute(f"SELECT extras FROM {table} WHERE pk = ?", (pk,)).fetchone()
        if pk in SQL_INTEGERS  # else no row has it (and sqlite could not even take it)
        else None
    )
    if row is None:
        raise NotExistent(f"no {_EXTRAS_OF[table]} with the pk {pk}")
    extras: dict[str, Any] = json.loads(row[0])
    return extras


def _write(connection: sqlite3.Connection, table: str, pk: int, extras: Mapping[str, Any]) -> None:
    connection.execute(f"UPDATE {table} SET extras = ? WHERE pk = ?", (dump_extras(extras), pk))


def _set(connection: sqlite3.Connection, table: str, pk: int, extras: Mapping[str, Any]) -> None:
    current = _read(connection, table, pk)
    current.update(extras)
    _write(connection, table, pk, current)


def _reset(connection: sqlite3.Connection, table: str, pk: int, extras: Mapping[str, Any]) -> None:
    _read(connection, table, pk)  # it exists
    _write(connection, table, pk, extras)


def _delete(connection: sqlite3.Connection, table: str, pk: int, keys: Sequence[str]) -> list[str]:
    current = _read(connection, table, pk)
    missing = [key for key in keys if key not in current]
    if missing:
        return missing
    for key in keys:
        del current[key]
    _write(connection, table, pk, current)
    return []


def read_extras(connection: sqlite3.Connection, pk: int) -> dict[str, Any]:
    return _read(connection, "nodes", pk)


def set_extras_tx(connection: sqlite3.Connection, pk: int, extras: Mapping[str, Any]) -> None:
    _set(connection, "nodes", pk, extras)


def reset_extras_tx(connection: sqlite3.Connection, pk: int, extras: Mapping[str, Any]) -> None:
    _reset(connection, "nodes", pk, extras)


def delete_extras_tx(connection: sqlite3.Connection, pk: int, keys: Sequence[str]) -> list[str]:
    return _delete(connection, "nodes", pk, keys)


def read_group_extras(connection: sqlite3.Connection, pk: int) -> dict[str, Any]:
    return _read(connection, "groups", pk)


def set_group_extras_tx(connection: sqlite3.Connection, pk: int, extras: Mapping[str, Any]) -> None:
    _set(connection, "groups", pk, extras)


def reset_group_extras_tx(
    connection: sqlite3.Connection, pk: int, extras: Mapping[str, Any]
) -> None:
    _reset(connection, "groups", pk, extras)


def delete_group_extras_tx(
    connection: sqlite3.Connection, pk: int, keys: Sequence[str]
) -> list[str]:
    return _delete(connection, "groups", pk, keys)


# comments ------------------------------------------------------------------------------------


def read_comments(connection: sqlite3.Connection, node_pk: int) -> list[CommentRow]:
    if node_pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return []
    return [
        CommentRow._make(row)
        for row in connection.execute(
            f"SELECT {_COMMENT_COLUMNS} FROM comments WHERE node_pk = ? ORDER BY pk", (node_pk,)
        )
    ]


def add_comment_tx(connection: sqlite3.Connection, node_pk: int, content: str) -> CommentRow:
    if node_pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        raise _missing_node(node_pk)
    if connection.execute("SELECT 1 FROM nodes WHERE pk = ?", (node_pk,)).fetchone() is None:
        raise NotExistent(f"no node with the pk {node_pk}")
    now = time.time()
    uuid = new_uuid()
    cursor = connection.execute(
        "INSERT INTO comments (uuid, node_pk, ctime, mtime, content) VALUES (?, ?, ?, ?, ?)",
        (uuid, node_pk, now, now, content),
    )
    assert cursor.lastrowid is not None
    return CommentRow(cursor.lastrowid, uuid, node_pk, now, now, content)


def update_comment_tx(connection: sqlite3.Connection, pk: int, content: str) -> bool:
    if pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return False
    cursor = connection.execute(
        "UPDATE comments SET content = ?, mtime = ? WHERE pk = ?", (content, time.time(), pk)
    )
    return cursor.rowcount > 0


def remove_comment_tx(connection: sqlite3.Connection, pk: int) -> bool:
    if pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return False
    return connection.execute("DELETE FROM comments WHERE pk = ?", (pk,)).rowcount > 0


# groups --------------------------------------------------------------------------------------


def _duplicate(label: str, type_string: str) -> DuplicateGroupError:
    return DuplicateGroupError(
        f"a group with the label {label!r} (type {type_string!r}) exists already"
    )


def create_group_tx(
    connection: sqlite3.Connection,
    label: str,
    type_string: str,
    description: str,
    get_existing: bool,
) -> tuple[GroupRow, bool]:
    row = connection.execute(
        f"SELECT {_GROUP_COLUMNS} FROM groups WHERE label = ? AND type_string = ?",
        (label, type_string),
    ).fetchone()
    if row is not None:
        if get_existing:
            return GroupRow._make(row), False
        raise _duplicate(label, type_string)
    now = time.time()
    uuid = new_uuid()
    cursor = connection.execute(
        "INSERT INTO groups (uuid, label, type_string, description, ctime) VALUES (?, ?, ?, ?, ?)",
        (uuid, label, type_string, description, now),
    )
    assert cursor.lastrowid is not None
    return GroupRow(cursor.lastrowid, uuid, label, type_string, description, now), True


def update_group_tx(connection: sqlite3.Connection, pk: int, label: str, description: str) -> None:
    if pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        raise NotExistent(f"no group with the pk {pk}")
    try:
        cursor = connection.execute(
            "UPDATE groups SET label = ?, description = ? WHERE pk = ?", (label, description, pk)
        )
    except sqlite3.IntegrityError as exc:
        (type_string,) = connection.execute(
            "SELECT type_string FROM groups WHERE pk = ?", (pk,)
        ).fetchone()
        raise _duplicate(label, type_string) from exc
    if cursor.rowcount == 0:
        raise NotExistent(f"no group with the pk {pk}")


def _uuid_pattern(text: str) -> str | None:
    text = text.lower()
    if not text or text.strip("0123456789abcdef-"):
        return None
    return text + "%"


def find_groups(
    connection: sqlite3.Connection,
    pk: int | None,
    uuid: str | None,
    label: str | None,
    type_string: str | None,
) -> list[GroupRow]:
    clauses: list[str] = []
    params: list[Any] = []
    if pk is not None:
        if pk not in SQL_INTEGERS:
            return []
        clauses.append("pk = ?")
        params.append(pk)
    if uuid is not None:
        pattern = _uuid_pattern(uuid)
        if pattern is None:
            return []
        clauses.append("uuid LIKE ?")
        params.append(pattern)
    if label is not None:
        clauses.append("label = ?")
        params.append(label)
    if type_string is not None:
        clauses.append("type_string = ?")
        params.append(type_string)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return [
        GroupRow._make(row)
        for row in connection.execute(
            f"SELECT {_GROUP_COLUMNS} FROM groups{where} ORDER BY pk", params
        )
    ]


def node_groups(connection: sqlite3.Connection, node_pk: int) -> list[GroupRow]:
    if node_pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return []
    return [
        GroupRow._make(row)
        for row in connection.execute(
            f"SELECT {_GROUP_COLUMNS} FROM groups WHERE pk IN "
            "(SELECT group_pk FROM group_nodes WHERE node_pk = ?) ORDER BY pk",
            (node_pk,),
        )
    ]


def group_node_pks(connection: sqlite3.Connection, group_pk: int) -> list[int]:
    if group_pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return []
    return [
        row[0]
        for row in connection.execute(
            "SELECT node_pk FROM group_nodes WHERE group_pk = ? ORDER BY node_pk", (group_pk,)
        )
    ]


def group_count(connection: sqlite3.Connection, group_pk: int) -> int:
    if group_pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return 0
    row = connection.execute(
        "SELECT count(*) FROM group_nodes WHERE group_pk = ?", (group_pk,)
    ).fetchone()
    return int(row[0])


def group_counts(connection: sqlite3.Connection) -> dict[int, int]:
    return {
        int(row[0]): int(row[1])
        for row in connection.execute(
            "SELECT group_pk, count(*) FROM group_nodes GROUP BY group_pk"
        )
    }


def _check_group(connection: sqlite3.Connection, group_pk: int) -> None:
    if group_pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        raise NotExistent(f"no group with the pk {group_pk}")
    if connection.execute("SELECT 1 FROM groups WHERE pk = ?", (group_pk,)).fetchone() is None:
        raise NotExistent(f"no group with the pk {group_pk}")


def add_group_nodes_tx(
    connection: sqlite3.Connection, group_pk: int, node_pks: Sequence[int]
) -> int:
    _check_group(connection, group_pk)
    given = list(dict.fromkeys(node_pks))
    if not given:
        return 0
    wanted = _pks(given)
    marks = ",".join("?" * len(wanted))
    found = {
        row[0] for row in connection.execute(f"SELECT pk FROM nodes WHERE pk IN ({marks})", wanted)
    }
    missing = [pk for pk in given if pk not in found]
    if missing:
        raise NotExistent(f"no node with the pk(s) {', '.join(map(str, missing))}")
    before = connection.total_changes
    connection.executemany(
        "INSERT OR IGNORE INTO group_nodes (group_pk, node_pk) VALUES (?, ?)",
        [(group_pk, pk) for pk in wanted],
    )
    return connection.total_changes - before


def remove_group_nodes_tx(
    connection: sqlite3.Connection, group_pk: int, node_pks: Sequence[int]
) -> int:
    _check_group(connection, group_pk)
    before = connection.total_changes
    connection.executemany(
        "DELETE FROM group_nodes WHERE group_pk = ? AND node_pk = ?",
        [(group_pk, pk) for pk in _pks(node_pks)],
    )
    return connection.total_changes - before


def delete_group_tx(connection: sqlite3.Connection, pk: int) -> bool:
    if pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return False
    connection.execute("DELETE FROM group_nodes WHERE group_pk = ?", (pk,))
    return connection.execute("DELETE FROM groups WHERE pk = ?", (pk,)).rowcount > 0
