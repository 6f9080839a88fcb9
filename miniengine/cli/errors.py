"""How a command fails: one line on stderr and exit status 1, never a traceback."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from miniengine.exceptions import MiniengineError
from miniengine.storage.errors import driver_errors

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "CliError", "Handler", "guarded"]

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure the user can act on; its message is printed as ``error: <message>``."""


Handler = Callable[[argparse.Namespace], int]


def guarded(handler: Handler) -> Handler:
    """Wrap a command's handler so that expected failures print one line and return 1."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (CliError, MiniengineError) as exc:
            return _fail(str(exc))
        except driver_errors() as exc:  # a query failed: say which database, not where in our code
            db = getattr(args, "db_path", None) or getattr(args, "db", None) or "the database"
            return _fail(f"{db}: {exc}")
        except OSError as exc:  # a file could not be read or written: name it, no traceback
            where = exc.filename if exc.filename is not None else "a file"
            return _fail(f"{where}: {exc.strerror or exc}")
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            return EXIT_INTERRUPTED

    return run


def _fail(message: str) -> int:
    from miniengine.cli.render import printable

    sys.stdout.flush()
    sys.stderr.write(f"error: {printable(message)}\n")
    return EXIT_ERROR
