"""The daemon's command line, shared by ``python -m miniengine.daemon`` and ``miniengine daemon``.

One definition of the subcommands and their options, added to either parser by
:func:`add_commands`; this module imports nothing but ``argparse``, so that building the
``miniengine`` parser stays fast.  The commands run in :func:`miniengine.daemon.__main__.run`.
"""

from __future__ import annotations

import argparse

from miniengine.storage.interfaces.broker import MAX_ATTEMPTS

__all__ = ["add_commands", "parser"]

PROG = "python -m miniengine.daemon"
DESCRIPTION = "Run submitted processes in the background."


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``start|stop|status|restart|logs|incr|decr`` to ``commands``."""

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        sub.add_argument(
            "--db",
            default=None,
            help="database file or postgresql:// URL (default: $MINIENGINE_DB or "
            "~/.miniengine/engine.sqlite)",
        )
        return sub

    start = add("start", "start the daemon (returns once its workers are ready)")
    restart = add("restart", "stop the daemon, then start it again")
    for sub in (start, restart):
        sub.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
        sub.add_argument("--slots", type=int, default=200, help="processes per worker (200)")
        sub.add_argument(
            "--lease-timeout",
            type=float,
            default=10.0,
            help="seconds without heartbeat before a worker's work is taken over",
        )
        sub.add_argument(
            "--stop-timeout",
            type=float,
            default=10.0,
            help="seconds a graceful stop waits before killing workers",
        )
        sub.add_argument(
            "--max-attempts",
            type=_at_least_one,
            default=MAX_ATTEMPTS,
            help="times a process is tried again after the worker running it died, before it "
            f"is marked excepted (default {MAX_ATTEMPTS})",
        )
    start.add_argument("--foreground", action="store_true", help="run the supervisor here")
    add("stop", "stop the daemon gracefully (SIGKILL after the timeout)")
    add("status", "show the workers, their slots and the queue")
    logs = add("logs", "print the end of the daemon's log")
    logs.add_argument("-n", "--lines", type=int, default=50)
    add("incr", "add a worker")
    add("decr", "remove a worker")


def parser() -> argparse.ArgumentParser:
    """The parser of ``python -m miniengine.daemon``."""
    top = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_commands(top.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return top


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
