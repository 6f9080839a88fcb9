"""The SQL of computers on PostgreSQL (the port of ``storage/computer_rows.py``), and what
storing a code or file data needs from the database.

A sqlite database finds its repository beside its file; a PostgreSQL database has no file, so
its repository folder is recorded in ``miniengine_meta`` (:data:`~miniengine.storage.postgres.
schema.REPOSITORY_KEY`), one path that every host of the database sees.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg.errors import UniqueViolation

from miniengine.exceptions import MultipleObjectsError, NotExistent
from miniengine.storage.computer_rows import _COLUMNS, UPDATABLE, _label_taken, _pack, _row
from miniengine.storage.interfaces.computers import (
    CODE_TYPES,
    CodeRow,
    ComputerInUseError,
    ComputerRow,
)
from miniengine.storage.postgres.schema import REPOSITORY_KEY, read_meta
from miniengine.storage.repository import Repository, RepositoryError

if TYPE_CHECKING:
    from miniengine.core.data import Data, StorageNeeds
    from miniengine.storage.postgres.rows import Connection

__all__ = [
    "CODE_TYPES",
    "check_storage_needs",
    "delete_computer_tx",
    "insert_computer_tx",
    "read_code_pks",
    "read_code_rows",
    "read_computer",
    "read_computers",
    "repository",
    "update_computer_tx",
]


def insert_computer_tx(
    connection: Connection,
    uuid: str,
    label: str,
    hostname: str,
    description: str,
    transport_type: str,
    scheduler_type: str,
    metadata: dict[str, Any],
    configuration: dict[str, Any] | None,
) -> tuple[int, float]:
    """Insert a computer; return its pk and creation time.  A taken label is refused by name
    (also when another transaction takes it at the same moment)."""
    if connection.execute("SELECT 1 FROM computers WHERE label = %s", (label,)).fetchone():
        raise _label_taken(label)
    now = time.time()
    row = connection.execute(
        "INSERT INTO computers (uuid, label, hostname, description, transport_type, "
        "scheduler_type, metadata, configuration, ctime, mtime) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (label) DO NOTHING RETURNING pk",
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
    ).fetchone()
    if row is None:
        raise _label_taken(label)
    return int(row[0]), now


def update_computer_tx(connection: Connection, pk: int, fields: dict[str, Any]) -> None:
    """Set some columns of computer ``pk`` (``metadata`` and ``configuration`` as dicts)."""
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValueError(f"computers have no updatable column(s) {', '.join(sorted(unknown))}")
    label = fields.get("label")
    if (
        label is not None
        and connection.execute(
            "SELECT 1 FROM computers WHERE label = %s AND pk <> %s", (label, pk)
        ).fetchone()
    ):
        raise _label_taken(label)
    values = {
        name: (
            _pack(value) if name in ("metadata", "configuration") and value is not None else value
        )
        for name, value in fields.items()
    }
    # the column names come from UPDATABLE, never from the caller's text
    assignments = ", ".join(f"{name} = %s" for name in values)
    try:
        cursor = connection.execute(
            f"UPDATE computers SET {assignments}, mtime = %s WHERE pk = %s",
            (*values.values(), time.time(), pk),
        )
    except UniqueViolation as exc:  # another transaction took the label meanwhile
        if label is None:
            raise
        raise _label_taken(label) from exc
    if cursor.rowcount != 1:
        raise NotExistent(f"no computer with the pk {pk} (was it deleted?)")


def delete_computer_tx(connection: Connection, pk: int) -> None:
    """Delete computer ``pk``, refused while any node (a code, a ``RemoteData``) refers to it.

    The computer's row is locked first; a node stored meanwhile with this computer waits for
    that lock (its foreign key) and then fails, as the computer is gone.
    """
    row = connection.execute(
        "SELECT label FROM computers WHERE pk = %s FOR UPDATE", (pk,)
    ).fetchone()
    if row is None:
        raise NotExistent(f"no computer with the pk {pk}")
    users = connection.execute(
        "SELECT node_type, count(*) FROM nodes WHERE computer_pk = %s GROUP BY node_type "
        "ORDER BY node_type",
        (pk,),
    ).fetchall()
    if users:
        what = ", ".join(f"{count} {node_type}" for node_type, count in users)
        raise ComputerInUseError(
            f"the computer {row[0]!r} is used by {what} node(s); it cannot be deleted while "
            "nodes refer to it"
        )
    connection.execute("DELETE FROM computers WHERE pk = %s", (pk,))


def read_computer(connection: Connection, identifier: int | str) -> ComputerRow:
    """A computer by pk (an int), or by label, uuid or unique uuid prefix (a str).

    ``NotExistent`` when nothing matches; ``MultipleObjectsError`` for an ambiguous prefix.
    """
    if isinstance(identifier, int):
        found = connection.execute(
            f"SELECT {_COLUMNS} FROM computers WHERE pk = %s", (identifier,)
        ).fetchone()
        if found is None:
            raise NotExistent(f"no computer with the pk {identifier}")
        return _row(found)
    found = connection.execute(
        f"SELECT {_COLUMNS} FROM computers WHERE label = %s OR uuid = %s ORDER BY pk LIMIT 1",
        (identifier, identifier.lower()),
    ).fetchone()
    if found is not None:
        return _row(found)
    prefix = identifier.lower()
    if prefix and not prefix.strip("0123456789abcdef-"):
        matches = connection.execute(
            f"SELECT {_COLUMNS} FROM computers WHERE left(uuid, %s) = %s ORDER BY pk LIMIT 2",
            (len(prefix), prefix),
        ).fetchall()
        if len(matches) == 1:
            return _row(matches[0])
        if len(matches) > 1:
            raise MultipleObjectsError(
                f"the uuid prefix {identifier!r} matches more than one computer: give more of it"
            )
    raise NotExistent(f"no computer with the label, uuid or uuid prefix {identifier!r}")


def read_computers(connection: Connection) -> list[ComputerRow]:
    return [
        _row(found) for found in connection.execute(f"SELECT {_COLUMNS} FROM computers ORDER BY pk")
    ]


#: The repository folder of a PostgreSQL database on this host; it overrides the one recorded
#: in the database (each host may mount the shared folder at a path of its own).
REPOSITORY_ENV_VAR = "MINIENGINE_REPOSITORY"


def repository(connection: Connection) -> Repository:
    """The repository of the connection's database: ``$MINIENGINE_REPOSITORY`` if set, else
    the folder recorded in ``miniengine_meta``."""
    root = os.environ.get(REPOSITORY_ENV_VAR) or read_meta(connection, REPOSITORY_KEY)
    if not root:
        raise RepositoryError(
            "this PostgreSQL database has no repository folder, so it cannot store file "
            f"contents: set ${REPOSITORY_ENV_VAR} to a folder that every host of the database "
            f"sees (or record one in miniengine_meta under the key {REPOSITORY_KEY!r})"
        )
    return Repository(Path(root).expanduser())


def check_storage_needs(connection: Connection, data: Data, needs: StorageNeeds) -> int | None:
    """Check, inside the transaction that stores ``data``, what it needs from the database;
    return the pk of its computer (or ``None``).

    Objects missing from this database's repository are copied from ``source_repository``
    before the commit.  Anything missing raises, which rolls the transaction back.
    """
    computer_pk = None
    what = f"{type(data).__name__}<{data.uuid}>"
    if needs.computer_uuid is not None:
        found = connection.execute(
            "SELECT pk FROM computers WHERE uuid = %s", (needs.computer_uuid,)
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


def read_code_pks(connection: Connection, label: str, computer_label: str | None) -> list[int]:
    """The pks of the codes labelled ``label`` (on the computer ``computer_label`` if given)."""
    query = (
        "SELECT n.pk FROM nodes n LEFT JOIN computers c ON c.pk = n.computer_pk "
        "WHERE n.node_type = ANY(%s) AND n.label = %s"
    )
    params: list[Any] = [list(CODE_TYPES), label]
    if computer_label is not None:
        query += " AND c.label = %s"
        params.append(computer_label)
    return [int(row[0]) for row in connection.execute(query + " ORDER BY n.pk", params)]


def read_code_rows(connection: Connection) -> list[CodeRow]:
    """``(pk, node type, label, computer label)`` of every code, oldest first."""
    return [
        CodeRow._make(row)
        for row in connection.execute(
            "SELECT n.pk, n.node_type, n.label, c.label FROM nodes n "
            "LEFT JOIN computers c ON c.pk = n.computer_pk "
            "WHERE n.node_type = ANY(%s) ORDER BY n.pk",
            (list(CODE_TYPES),),
        )
    ]
