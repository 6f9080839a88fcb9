"""The operator's command line: ``miniengine process ...`` and ``miniengine db ...``.

:func:`register` adds both commands to the ``miniengine`` parser (``miniengine/__main__.py``).
Each subcommand lives in a module of this package that defines ``add_commands(subparsers)``;
its handler imports what it needs when it runs, so that a read-only command starts without the
engine's event-loop machinery (it opens the database to read only, see
:mod:`miniengine.cli.connection`).  Handlers return the exit status: 0 ok, 1 error (one line on
stderr, see :mod:`miniengine.cli.errors`); argparse exits with 2 on a usage error.
"""

from __future__ import annotations

import argparse

__all__ = ["add_process_commands", "register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``process`` and ``db`` commands to the subparsers of the ``miniengine`` parser.

    More ``process`` subcommands (pause, play, kill, watch, repair) join through
    :func:`add_process_commands`.
    """
    process = commands.add_parser(
        "process",
        help="list, show and inspect processes",
        description="Inspect the processes of a database (as `verdi process`).",
    )
    add_process_commands(
        process.add_subparsers(dest="process_command", metavar="COMMAND", required=True)
    )
    db = commands.add_parser(
        "db",
        help="describe, migrate, vacuum, back up or copy the database",
        description="Look after the database file.",
    )
    from miniengine.cli import db as db_commands

    db_commands.add_commands(db.add_subparsers(dest="db_command", metavar="COMMAND", required=True))
    from miniengine.cli import computers

    computer = commands.add_parser(
        "computer",
        help="set up, configure, test and list the computers jobs run on",
        description="Manage computers (as `verdi computer`).",
    )
    computers.add_computer_commands(
        computer.add_subparsers(dest="computer_command", metavar="COMMAND", required=True)
    )
    code = commands.add_parser(
        "code",
        help="create, list and show codes",
        description="Manage codes (as `verdi code`).",
    )
    computers.add_code_commands(
        code.add_subparsers(dest="code_command", metavar="COMMAND", required=True)
    )
    from miniengine.cli import calcjob as calcjob_commands

    calcjob = commands.add_parser(
        "calcjob",
        help="inspect the files of CalcJobs and clean their remote working folders",
        description="Inspect and manage CalcJobs (as `verdi calcjob`).",
    )
    calcjob_commands.add_commands(
        calcjob.add_subparsers(dest="calcjob_command", metavar="COMMAND", required=True)
    )
    from miniengine.cli import groups as group_commands
    from miniengine.cli import nodes as node_commands

    node = commands.add_parser(
        "node",
        help="show, delete and draw nodes: fields, attributes, extras, provenance graphs",
        description="Inspect any node, Data or process (as `verdi node`).",
    )
    node_commands.add_commands(
        node.add_subparsers(dest="node_command", metavar="COMMAND", required=True)
    )
    group = commands.add_parser(
        "group",
        help="create, list, show and delete groups of nodes",
        description="Manage groups of nodes (as `verdi group`).",
    )
    group_commands.add_commands(
        group.add_subparsers(dest="group_command", metavar="COMMAND", required=True)
    )
    from miniengine.cli import archive as archive_commands

    archive = commands.add_parser(
        "archive",
        help="create, import and inspect archives: provenance in one portable file",
        description="Export provenance to one portable file and import it elsewhere "
        "(as `verdi archive`).",
    )
    archive_commands.add_commands(
        archive.add_subparsers(dest="archive_command", metavar="COMMAND", required=True)
    )
    from miniengine.cli import caching as caching_command

    caching_command.add_command(commands)
    from miniengine.cli import web as web_command

    web_command.add_command(commands)


def add_process_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The subcommands of ``miniengine process``: add a module's ``add_commands`` here."""
    from miniengine.cli import control, process

    process.add_commands(commands)
    control.add_commands(commands)
