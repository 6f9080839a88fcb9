"""The options every command shares: ``--db PATH`` and ``--json``."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_db_option", "add_json_option", "db_location", "db_path"]


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="database file or postgresql:// URL (default: $MINIENGINE_DB, else "
        "~/.miniengine/engine.sqlite)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def db_path(args: argparse.Namespace) -> Path:
    """The database of this command: ``--db``, else ``$MINIENGINE_DB``, else the default."""
    from miniengine.storage.paths import resolve_db_path

    path = resolve_db_path(args.db)
    args.db_path = path  # for error messages
    return path


def db_location(args: argparse.Namespace) -> Path | str:
    """:func:`db_path`, or the URL of a PostgreSQL database, for the commands that serve both."""
    from miniengine.storage.paths import resolve_db, url_without_password

    location = resolve_db(args.db)
    # for error messages: a URL without its password
    args.db_path = location if isinstance(location, Path) else url_without_password(location)
    return location
