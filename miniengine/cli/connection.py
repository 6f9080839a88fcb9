"""Opening the database a command works on: every command opens it through this module.

The read-only commands use :func:`open_readonly`, a :class:`~miniengine.storage.interfaces.
queries.Reader` that never creates, migrates or changes a file and imports none of the
event-loop machinery; the commands that act use :func:`open_backend`, the engine's own store.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from miniengine.cli.errors import CliError

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend
    from miniengine.storage.interfaces.queries import Reader

__all__ = ["open_backend", "open_readonly", "require_file"]


def require_file(path: Path) -> None:
    """Refuse a path with no database file at it, in one line that says how to pick another."""
    if path.is_dir():
        raise CliError(f"{path} is a folder, not a database file")
    if not path.exists():
        raise CliError(f"no database at {path} (pass --db PATH or set $MINIENGINE_DB)")


def open_readonly(path: Path | str, *, check: bool = True) -> Reader:
    """The database at ``path`` (or a PostgreSQL URL) opened to read only, its header checked
    (unless ``check`` is False: see
    :meth:`~miniengine.storage.sqlite.reader.SqliteReader.check`)."""
    if isinstance(path, str):
        from miniengine.storage.postgres.reader import PostgresReader

        return PostgresReader(path, check=check)
    require_file(path)
    from miniengine.storage.sqlite.reader import SqliteReader

    return SqliteReader(path, check=check)


def open_backend(path: Path | str) -> Backend:
    """The database at ``path`` (or a PostgreSQL URL) opened as the engine opens it (which
    migrates an old one)."""
    if isinstance(path, Path):
        require_file(path)
    from miniengine.storage.open import open_backend as open_database

    return open_database(path)
