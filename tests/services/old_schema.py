"""Databases of an earlier schema version, for the tests of a migration: the schema made by
that version's steps (as the miniengine of that version made it), then the test's own rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path


def make_sqlite(path: Path, version: int, statements: Sequence[str] = ()) -> None:
    """A sqlite file at schema ``version`` holding what ``statements`` write."""
    from miniengine.storage.schema import APPLICATION_ID, MIGRATIONS, split_statements

    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for step in range(version):
            for statement in split_statements(MIGRATIONS[step]):
                connection.execute(statement)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {version}")
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()


def make_postgresql(url: str, version: int, statements: Sequence[str] = ()) -> None:
    """The empty PostgreSQL database ``url`` at schema ``version``, holding what
    ``statements`` write (in the same transaction)."""
    import psycopg

    from miniengine.storage.postgres import schema

    with psycopg.connect(url, autocommit=True) as connection, connection.transaction():
        for step in schema.MIGRATIONS:
            if step.target <= version:
                connection.execute(step.sql.encode())
        connection.execute(
            "INSERT INTO miniengine_meta (key, value) VALUES ('schema_version', %s)",
            (str(version),),
        )
        for statement in statements:
            connection.execute(statement.encode())
