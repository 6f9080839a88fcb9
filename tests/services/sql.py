"""Raw SQL on a test's database, whichever backend it is (a sqlite path or a PostgreSQL URL).

Tests that check or damage rows behind the engine's back use these instead of ``sqlite3``, so that
they run on both backends.  Statements are written with sqlite's ``?`` parameters; on PostgreSQL
they become ``%s``.  Each call is one transaction on a connection of its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any


def is_postgres(db: Path | str) -> bool:
    """Whether ``db`` names a PostgreSQL database (a ``postgresql://`` URL)."""
    return str(db).startswith(("postgresql://", "postgres://"))


class Connection:
    """A connection of either backend that takes ``?`` parameters."""

    def __init__(self, raw: Any, postgres: bool) -> None:
        self.raw = raw
        self.postgres = postgres

    def execute(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> Any:
        if self.postgres:
            sql = sql.replace("?", "%s")
        return self.raw.execute(sql, tuple(args))


@contextmanager
def connect(db: Path | str) -> Iterator[Connection]:
    """A connection to ``db`` whose work commits when the block ends without an error (a sqlite
    ``file:`` URI, e.g. ``file:PATH?mode=ro``, is opened as one)."""
    if is_postgres(db):
        import psycopg

        with psycopg.connect(str(db)) as raw:  # commits on a clean exit, then closes
            yield Connection(raw, True)
        return
    uri = str(db).startswith("file:")  # ``file:PATH?mode=ro``: read only
    with closing(sqlite3.connect(db, uri=uri)) as raw, raw:
        yield Connection(raw, False)


def errors(db: Path | str) -> tuple[type[Exception], ...]:
    """The exceptions the driver of ``db``'s backend raises (to tolerate a missing table)."""
    if is_postgres(db):
        import psycopg

        return (psycopg.Error,)
    return (sqlite3.Error,)


def query(db: Path | str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """The rows of one query."""
    with connect(db) as connection:
        return [tuple(row) for row in connection.execute(sql, args).fetchall()]


def count(db: Path | str, sql: str, *args: Any) -> int:
    """The single number that ``sql`` selects (``SELECT count(*) ...``)."""
    return int(query(db, sql, *args)[0][0])


def execute(db: Path | str, sql: str, *args: Any) -> None:
    """Run one statement and commit it."""
    with connect(db) as connection:
        connection.execute(sql, args)
