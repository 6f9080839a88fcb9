"""The ``miniengine`` command line (also ``python -m miniengine``).

Subcommands import what they need when they run, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from miniengine import demo

    return demo.main(db=args.db)


def _daemon(args: argparse.Namespace) -> int:
    from miniengine.daemon.__main__ import run

    args.command = args.daemon_command  # the name the daemon's own parser gives it
    return run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="miniengine",
        description="miniengine: a durable workflow engine on one database (a sqlite file, or "
        "PostgreSQL for daemons on several hosts).",
    )
    from miniengine import __version__

    parser.add_argument("--version", action="version", version=f"miniengine {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="run two example scenarios and show their provenance",
        description="Run the example scenario 1 (add_and_multiply(1, 2, 3) == 9) and print the "
        "result and the provenance of the call; then submit scenario 2 (NestedWorkChain, "
        "inp=5) to a daemon that the demo starts and stops itself, and print its call tree "
        "and reports.",
    )
    demo.add_argument(
        "--db",
        metavar="PATH_OR_URL",
        help="database file or postgresql:// URL (default: $MINIENGINE_DB, else "
        "~/.miniengine/engine.sqlite)",
    )
    from miniengine.cli.errors import guarded

    demo.set_defaults(handler=guarded(_demo))  # a database it cannot use: one line, no traceback

    # `process ...` and `db ...`: the operator's commands, in miniengine.cli ----------------------
    from miniengine.cli import register

    register(commands)
    # -------------------------------------------------------------------------------------------
    # `daemon ...`: the same subcommands as `python -m miniengine.daemon`, from one definition
    from miniengine.daemon.commands import DESCRIPTION
    from miniengine.daemon.commands import add_commands as add_daemon_commands

    daemon = commands.add_parser(
        "daemon",
        help="start, stop and look after the daemon that runs submitted processes",
        description=DESCRIPTION,
    )
    add_daemon_commands(
        daemon.add_subparsers(dest="daemon_command", metavar="COMMAND", required=True)
    )
    daemon.set_defaults(handler=_daemon)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the subcommand; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as the Python docs recommend.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
