"""The exceptions of the database drivers, for the edges that report them in one line."""

from __future__ import annotations

import sys

__all__ = ["driver_errors"]


def driver_errors() -> tuple[type[Exception], ...]:
    """The base exception classes of the database drivers loaded in this process.

    A failing query that storage did not map to a :class:`~miniengine.exceptions.StoreError`
    surfaces as one of these; the command line prints it as one line naming the database.
    """
    import sqlite3

    errors: list[type[Exception]] = [sqlite3.Error]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        errors.append(psycopg.Error)
    return tuple(errors)
