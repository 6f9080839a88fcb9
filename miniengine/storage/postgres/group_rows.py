"""The statements of extras, comments and groups on PostgreSQL (see
:mod:`miniengine.storage.interfaces.groups`).

Extras are ``jsonb``: set is ``||`` (top-level keys replaced, ``null`` values kept), delete is
``-`` with the keys, each one statement.
"""

from __future__ import annotations

import json
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
from miniengine.storage.postgres.rows import Connection
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


def _loaded(value: Any) -> dict[str, Any]:
    """A ``jsonb`` value as a dictionary (psycopg parses it, unless told to give the text)."""
    loaded: dict[str, Any] = json.loads(value) if isinstance(value, str | bytes) else value
    return loaded


def _missing_node(pk: int) -> NotExistent:
    return NotExistent(f"no node with the pk {pk}")


def _pks(pks: Sequence[int]) -> list[int]:
    """The distinct pks that a column can hold (others name nothing), in order."""
    return [pk for pk in dict.fromkeys(pks) if pk in SQL_INTEGERS]


#: The tables whose rows have extras, and what a row of each is called in messages.
_EXTRAS_OF = {"nodes": "node", "groups": "group"}


def _missing(table: str, pk: int) -> NotExistent:
    return NotExistent(f"no {_EXTRAS_OF[table]} with the pk {pk}")


def extras_query(table: str, lock: bool = False) -> str:
    """The extras of the row of ``table`` with a pk (the parameter), locked for an update."""
    return f"SELECT extras FROM {table} WHERE pk = %s{' FOR UPDATE' if lock else ''}"


def read_extras_row(table: str, pk: int, row: Sequence[Any] | None) -> dict[str, Any]:
    """The extras in ``row`` of :func:`extras_query` (``NotExistent`` for no row)."""
    if row is None:
        raise _missing(table, pk)
    return _loaded(row[0])


def _read(connection: Connection, table: str, pk: int, lock: bool = False) -> dict[str, Any]:
    if pk not in SQL_INTEGERS:  # no row has it
        raise _missing(table, pk)
    row = connection.execute(extras_query(table, lock).encode(), (pk,)).fetchone()
    return read_extras_row(table, pk, row)


def _set(connection: Connection, table: str, pk: int, extras: Mapping[str, Any]) -> None:
    if pk not in SQL_INTEGERS:
        raise _missing(table, pk)
    cursor = connection.execute(
        f"UPDATE {table} SET extras = extras || %s::jsonb WHERE pk = %s".encode(),
        (dump_extras(extras), pk),
    )
    if cursor.rowcount == 0:
        raise _missing(table, pk)


def _reset(connection: Connection, table: str, pk: int, extras: Mapping[str, Any]) -> None:
    if pk not in SQL_INTEGERS:
        raise _missing(table, pk)
    cursor = connection.execute(
        f"UPDATE {table} SET extras = %s::jsonb WHERE pk = %s".encode(), (dump_extras(extras), pk)
    )
    if cursor.rowcount == 0:
        raise _missing(table, pk)


def _delete(connection: Connection, table: str, pk: int, keys: Sequence[str]) -> list[str]:
    extras = _read(connection, table, pk, lock=True)
    missing = [key for key in keys if key not in extras]
    if missing:
        return missing
    connection.execute(
        f"UPDATE {table} SET extras = extras - %s::text[] WHERE pk = %s".encode(), (list(keys), pk)
    )
    return []


def read_extras(connection: Connection, pk: int) -> dict[str, Any]:
    return _read(connection, "nodes", pk)


def set_extras_tx(connection: Connection, pk: int, extras: Mapping[str, Any]) -> None:
    _set(connection, "nodes", pk, extras)


def reset_extras_tx(connection: Connection, pk: int, extras: Mapping[str, Any]) -> None:
    _reset(connection, "nodes", pk, extras)


def delete_extras_tx(connection: Connection, pk: int, keys: Sequence[str]) -> list[str]:
    return _delete(connection, "nodes", pk, keys)


def read_group_extras(connection: Connection, pk: int) -> dict[str, Any]:
    return _read(connection, "groups", pk)


def set_group_extras_tx(connection: Connection, pk: int, extras: Mapping[str, Any]) -> None:
    _set(connection, "groups", pk, extras)


def reset_group_extras_tx(connection: Connection, pk: int, extras: Mapping[str, Any]) -> None:
    _reset(connection, "groups", pk, extras)


def delete_group_extras_tx(connection: Connection, pk: int, keys: Sequence[str]) -> list[str]:
    return _delete(connection, "groups", pk, keys)


# comments ------------------------------------------------------------------------------------


def read_comments(connection: Connection, node_pk: int) -> list[CommentRow]:
    if node_pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return []
    return [
        CommentRow._make(row)
        for row in connection.execute(
            f"SELECT {_COMMENT_COLUMNS} FROM comments WHERE node_pk = %s ORDER BY pk", (node_pk,)
        )
    ]


def add_comment_tx(connection: Connection, node_pk: int, content: str) -> CommentRow:
    if node_pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        raise _missing_node(node_pk)
    # FOR KEY SHARE: a concurrent deletion of the node waits for this transaction (else the
    # INSERT would fail on the foreign key, a bare error, after the check said the node is there)
    found = connection.execute("SELECT 1 FROM nodes WHERE pk = %s FOR KEY SHARE", (node_pk,))
    if found.fetchone() is None:
        raise _missing_node(node_pk)
    now = time.time()
    uuid = new_uuid()
    row = connection.execute(
        "INSERT INTO comments (uuid, node_pk, ctime, mtime, content) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING pk",
        (uuid, node_pk, now, now, content),
    ).fetchone()
    assert row is not None
    return CommentRow(int(row[0]), uuid, node_pk, now, now, content)


def update_comment_tx(connection: Connection, pk: int, content: str) -> bool:
    if pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return False
    cursor = connection.execute(
        "UPDATE comments SET content = %s, mtime = %s WHERE pk = %s", (content, time.time(), pk)
    )
    return cursor.rowcount > 0


def remove_comment_tx(connection: Connection, pk: int) -> bool:
    if pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return False
    return connection.execute("DELETE FROM comments WHERE pk = %s", (pk,)).rowcount > 0


# groups --------------------------------------------------------------------------------------


def _duplicate(label: str, type_string: str) -> DuplicateGroupError:
    return DuplicateGroupError(
        f"a group with the label {label!r} (type {type_string!r}) exists already"
    )


def _existing(connection: Connection, label: str, type_string: str) -> GroupRow | None:
    row = connection.execute(
        f"SELECT {_GROUP_COLUMNS} FROM groups WHERE label = %s AND type_string = %s",
        (label, type_string),
    ).fetchone()
    return None if row is None else GroupRow._make(row)


def create_group_tx(
    connection: Connection, label: str, type_string: str, description: str, get_existing: bool
) -> tuple[GroupRow, bool]:
    now = time.time()
    uuid = new_uuid()
    # ON CONFLICT: a group created by another session at the same moment is found, not an
    # aborted transaction
    row = connection.execute(
        "INSERT INTO groups (uuid, label, type_string, description, ctime) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (label, type_string) DO NOTHING RETURNING pk",
        (uuid, label, type_string, description, now),
    ).fetchone()
    if row is not None:
        return GroupRow(int(row[0]), uuid, label, type_string, description, now), True
    existing = _existing(connection, label, type_string)
    if existing is None or not get_existing:
        raise _duplicate(label, type_string)
    return existing, False


def update_group_tx(connection: Connection, pk: int, label: str, description: str) -> None:
    if pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        raise NotExistent(f"no group with the pk {pk}")
    row = connection.execute("SELECT type_string FROM groups WHERE pk = %s", (pk,)).fetchone()
    if row is None:
        raise NotExistent(f"no group with the pk {pk}")
    other = _existing(connection, label, str(row[0]))
    if other is not None and other.pk != pk:
        raise _duplicate(label, str(row[0]))
    connection.execute(
        "UPDATE groups SET label = %s, description = %s WHERE pk = %s", (label, description, pk)
    )


def find_groups(
    connection: Connection,
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
        clauses.append("pk = %s")
        params.append(pk)
    if uuid is not None:
        text = uuid.lower()
        if not text or text.strip("0123456789abcdef-"):
            return []
        clauses.append("uuid LIKE %s")
        params.append(text + "%")
    if label is not None:
        clauses.append("label = %s")
        params.append(label)
    if type_string is not None:
        clauses.append("type_string = %s")
        params.append(type_string)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return [
        GroupRow._make(row)
        for row in connection.execute(
            f"SELECT {_GROUP_COLUMNS} FROM groups{where} ORDER BY pk".encode(), params
        )
    ]


def node_groups(connection: Connection, node_pk: int) -> list[GroupRow]:
    if node_pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return []
    return [
        GroupRow._make(row)
        for row in connection.execute(
            f"SELECT {_GROUP_COLUMNS} FROM groups WHERE pk IN "
            "(SELECT group_pk FROM group_nodes WHERE node_pk = %s) ORDER BY pk",
            (node_pk,),
        )
    ]


def group_node_pks(connection: Connection, group_pk: int) -> list[int]:
    if group_pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return []
    return [
        int(row[0])
        for row in connection.execute(
            "SELECT node_pk FROM group_nodes WHERE group_pk = %s ORDER BY node_pk", (group_pk,)
        )
    ]


def group_count(connection: Connection, group_pk: int) -> int:
    if group_pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return 0
    row = connection.execute(
        "SELECT count(*) FROM group_nodes WHERE group_pk = %s", (group_pk,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def group_counts(connection: Connection) -> dict[int, int]:
    return {
        int(row[0]): int(row[1])
        for row in connection.execute(
            "SELECT group_pk, count(*) FROM group_nodes GROUP BY group_pk"
        )
    }


def _check_group(connection: Connection, group_pk: int) -> None:
    if group_pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        raise NotExistent(f"no group with the pk {group_pk}")
    # FOR SHARE: a concurrent delete of the group waits for this transaction
    if (
        connection.execute("SELECT 1 FROM groups WHERE pk = %s FOR SHARE", (group_pk,)).fetchone()
        is None
    ):
        raise NotExistent(f"no group with the pk {group_pk}")


def add_group_nodes_tx(connection: Connection, group_pk: int, node_pks: Sequence[int]) -> int:
    _check_group(connection, group_pk)
    given = list(dict.fromkeys(node_pks))
    if not given:
        return 0
    wanted = _pks(given)
    # locked FOR KEY SHARE in pk order (as a deletion locks them): a concurrent deletion of
    # one of them waits for this transaction, or has deleted it and it is reported missing
    found = {
        int(row[0])
        for row in connection.execute(
            "SELECT pk FROM nodes WHERE pk = ANY(%s) ORDER BY pk FOR KEY SHARE", (wanted,)
        )
    }
    missing = [pk for pk in given if pk not in found]
    if missing:
        raise NotExistent(f"no node with the pk(s) {', '.join(map(str, missing))}")
    cursor = connection.execute(
        "INSERT INTO group_nodes (group_pk, node_pk) SELECT %s, unnest(%s::bigint[]) "
        "ON CONFLICT DO NOTHING",
        (group_pk, wanted),
    )
    return cursor.rowcount


def remove_group_nodes_tx(connection: Connection, group_pk: int, node_pks: Sequence[int]) -> int:
    _check_group(connection, group_pk)
    cursor = connection.execute(
        "DELETE FROM group_nodes WHERE group_pk = %s AND node_pk = ANY(%s)",
        (group_pk, _pks(node_pks)),
    )
    return cursor.rowcount


def delete_group_tx(connection: Connection, pk: int) -> bool:
    if pk not in SQL_INTEGERS:  # no row has it (sqlite could not even take it)
        return False
    connection.execute("DELETE FROM group_nodes WHERE group_pk = %s", (pk,))
    return connection.execute("DELETE FROM groups WHERE pk = %s", (pk,)).rowcount > 0
