"""The SQL of computers, and what storing a code or file data needs from the database.

Computers live in a table of their own (they are configured and edited, never linked into the
provenance graph); the nodes that run on one (codes, ``RemoteData``) refer to it by
``nodes.computer_pk``, so that a computer still in use cannot be deleted.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import msgpack

from miniengine.core.data import Data, StorageNeeds
from miniengine.exceptions import MultipleObjectsError, NotExistent, ValidationError
from miniengine.storage.interfaces.computers import (
    CODE_TYPES,
    CodeRow,
    ComputerInUseError,
    ComputerRow,
)
from miniengine.storage.repository import Repository, RepositoryError

__all__ = [
    "CODE_TYPES",
    "ComputerInUseError",
    "ComputerRow",
    "check_storage_needs",
    "delete_computer_tx",
    "insert_computer_tx",
    "read_code_pks",
    "read_code_rows",
    "read_computer",
    "read_computers",
    "update_computer_tx",
]

_COLUMNS = (
    "pk, uuid, label, hostname, description, transport_type, scheduler_type, metadata, "
    "configuration, ctime, mtime"
)

#: The columns of ``computers`` that :func:`update_computer_tx` may set.
UPDATABLE = frozenset(
    {
        "label",
        "hostname",
        "description",
        "transport_type",
        "scheduler_type",
        "metadata",
        "configuration",
    }
)


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(blob: bytes | None) -> Any:
    if blob is None:
        return None
    return msgpack.unpackb(blob, raw=False)


def _row(values: Any) -> ComputerRow:
    (pk, uuid, label, hostname, description, transport, scheduler, meta, conf, ctime, mtime) = (
        values
    )
    return ComputerRow(
        pk,
        uuid,
        label,
        hostname,
        description,
        transport,
        scheduler,
        dict(_unpack(meta) or {}),
        _unpack(conf),
        ctime,
        mtime,
    )


def _label_taken(label: str) -> ValidationError:
    return ValidationError(
        f"a computer labelled {label!r} exists already; choose another label, or load it with "
        f"load_computer({label!r})"
    )


def insert_computer_tx(
    connection: sqlite3.Connection,
    uuid: str,
    label: str,
    hostname: str,
    description: str,
    transport_type: str,
    scheduler_type: str,
    metadata: dict[str, Any],
    configuration: dict[str, Any] | None,
) -> tuple[int, float]:
    """Insert a computer; return its pk and creation time.  A taken label is refused by name."""
    if connection.execute("SELECT 1 FROM computers WHERE label = ?", (label,)).fetchone():
        raise _label_taken(label)
    now = time.time()
    cursor = connection.execute(
        f"INSERT INTO computers ({_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            uuid,
            label,
            hostname,
            description,
            transport_type,
            scheduler_type,
            _pack(metadata),
            None if configuration is None else _pack(configuration),
            now,
            now,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid, now


def update_computer_tx(connection: sqlite3.Connection, pk: int, fields: dict[str, Any]) -> None:
    """Set some columns of computer ``pk`` (``metadata`` and ``configuration`` as dicts)."""
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValueError(f"computers have no updatable column(s) {', '.join(sorted(unknown))}")
    label = fields.get("label")
    if (
        label is not None
        and connection.execute(
            "SELECT 1 FROM computers WHERE label = ? AND pk != ?", (label, pk)
        ).fetchone()
    ):
        raise _label_taken(label)
    values = {
        name: (
            _pack(value) if name in ("metadata", "configuration") and value is not None else value
        )
        for name, value in fields.items()
    }
    assignments = ", ".join(f"{name} = ?" for name in values)
    cursor = connection.execute(
        f"UPDATE computers SET {assignments}, mtime = ? WHERE pk = ?",
        (*values.values(), time.time(), pk),
    )
    if cursor.rowcount != 1:
        raise NotExistent(f"no computer with the pk {pk} (was it deleted?)")


def delete_computer_tx(connection: sqlite3.Connection, pk: int) -> None:
    """Delete computer ``pk``, refused while any node (a code, a ``RemoteData``) refers to it."""
    row = connection.execute("SELECT label FROM computers WHERE pk = ?", (pk,)).fetchone()
    if row is None:
        raise NotExistent(f"no computer with the pk {pk}")
    users = connection.execute(
        "SELECT node_type, count(*) FROM nodes WHERE computer_pk = ? GROUP BY node_type "
        "ORDER BY node_type",
        (pk,),
    ).fetchall()
    if users:
        what = ", ".join(f"{count} {node_type}" for node_type, count in users)
        raise ComputerInUseError(
            f"the computer {row[0]!r} is used by {what} node(s); it cannot be deleted while "
            "nodes refer to it"
        )
    connection.execute("DELETE FROM computers WHERE pk = ?", (pk,))


def read_computer(connection: sqlite3.Connection, identifier: int | str) -> ComputerRow:
    """A computer by pk (an int), or by label, uuid or unique uuid prefix (a str).

    ``NotExistent`` when nothing matches; ``MultipleObjectsError`` for an ambiguous prefix.
    """
    if isinstance(identifier, int):
        found = connection.execute(
            f"SELECT {_COLUMNS} FROM computers WHERE pk = ?", (identifier,)
        ).fetchone()
        if found is None:
            raise NotExistent(f"no computer with the pk {identifier}")
        return _row(found)
    found = connection.execute(
        f"SELECT {_COLUMNS} FROM computers WHERE label = ? OR uuid = ?",
        (identifier, identifier.lower()),
    ).fetchone()
    if found is not None:
        return _row(found)
    prefix = identifier.lower()
    if prefix and not prefix.strip("0123456789abcdef-"):
        matches = connection.execute(
            f"SELECT {_COLUMNS} FROM computers WHERE substr(uuid, 1, ?) = ? LIMIT 2",
            (len(prefix), prefix),
        ).fetchall()
        if len(matches) == 1:
            return _row(matches[0])
        if len(matches) > 1:
            raise MultipleObjectsError(
                f"the uuid prefix {identifier!r} matches more than one computer: give more of it"
            )
    raise NotExistent(f"no computer with the label, uuid or uuid prefix {identifier!r}")


def read_computers(connection: sqlite3.Connection) -> list[ComputerRow]:
    return [
        _row(found) for found in connection.execute(f"SELECT {_COLUMNS} FROM computers ORDER BY pk")
    ]


def repository(connection: sqlite3.Connection) -> Repository:
    """The repository of the connection's database: the folder beside its file."""
    for _, name, path in connection.execute("PRAGMA database_list"):
        if name == "main":
            return Repository.for_database(str(path))
    raise RepositoryError("the connection has no main database file")  # pragma: no cover


def check_storage_needs(
    connection: sqlite3.Connection, data: Data, needs: StorageNeeds
) -> int | None:
    """Check, inside the transaction that stores ``data``, what it needs from the database;
    return the pk of its computer (or ``None``).

    Objects missing from this database's repository are copied from ``source_repository``
    (the node's content was written to another database's), before the commit, as the
    repository's rule asks.  Anything missing raises, which rolls the transaction back.
    """
    computer_pk = None
    what = f"{type(data).__name__}<{data.uuid}>"
    if needs.computer_uuid is not None:
        found = connection.execute(
            "SELECT pk FROM computers WHERE uuid = ?", (needs.computer_uuid,)
        ).fetchone()
        if found is None:
            raise NotExistent(
                f"{what} runs on the computer {needs.computer_uuid}, which is not stored in this "
                "database; store the computer (or load one from this database) first"
            )
        computer_pk = int(found[0])
    if needs.object_keys:
        target = repository(connection)
        source = Repository(needs.source_repository) if needs.source_repository else None
        for key in needs.object_keys:
            if target.has_object(key):
                continue
            if source is None or source.root == target.root or not source.has_object(key):
                raise RepositoryError(
                    f"{what} refers to the repository object {key}, which is in neither "
                    f"{target.root} nor {source.root if source else 'another repository'}"
                )
            with source.open(key) as stream:
                copied = target.put_object_from_filelike(stream)
            if copied != key:
                raise RepositoryError(f"the repository object {key} in {source.root} is corrupt")
    return computer_pk


def read_code_pks(
    connection: sqlite3.Connection, label: str, computer_label: str | None
) -> list[int]:
    """The pks of the codes labelled ``label`` (on the computer ``computer_label`` if given)."""
    query = (
        "SELECT n.pk FROM nodes n LEFT JOIN computers c ON c.pk = n.computer_pk "
        f"WHERE n.node_type IN ({','.join('?' * len(CODE_TYPES))}) AND n.label = ?"
    )
    params: list[Any] = [*CODE_TYPES, label]
    if computer_label is not None:
        query += " AND c.label = ?"
        params.append(computer_label)
    return [row[0] for row in connection.execute(query + " ORDER BY n.pk", params)]


def read_code_rows(connection: sqlite3.Connection) -> list[CodeRow]:
    """``(pk, node type, label, computer label)`` of every code, oldest first."""
    return [
        CodeRow._make(row)
        for row in connection.execute(
            "SELECT n.pk, n.node_type, n.label, c.label FROM nodes n "
            "LEFT JOIN computers c ON c.pk = n.computer_pk "
            f"WHERE n.node_type IN ({','.join('?' * len(CODE_TYPES))}) ORDER BY n.pk",
            CODE_TYPES,
        )
    ]
