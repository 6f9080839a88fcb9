"""``miniengine computer setup|configure|list|show|test|delete`` and ``miniengine code ...``.

As ``verdi computer`` and ``verdi code``, without prompts: every field is a flag, and what is
not given takes AiiDA's default.  ``configure TRANSPORT`` takes that transport plugin's
settings as flags.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniengine.cli.connection import require_file
from miniengine.cli.errors import EXIT_ERROR, CliError, Handler, guarded
from miniengine.cli.options import add_db_option, add_json_option, db_location
from miniengine.cli.table import emit, format_pairs, format_table, json_array, json_object

if TYPE_CHECKING:
    from miniengine.storage.interfaces import Backend

__all__ = ["add_code_commands", "add_computer_commands"]


def _run_with_store(
    function: Callable[[argparse.Namespace, Any], int], args: argparse.Namespace, create: bool
) -> int:
    """Run ``function`` with the database (a file, which must exist unless ``create``, or a
    PostgreSQL URL) as the current one, so that nodes made by the command (a code) are stored
    there; close it after."""
    import os

    location = db_location(args)
    if not create and isinstance(location, Path):
        require_file(location)
    from miniengine.storage.open import close_all_backends, shared_backend
    from miniengine.storage.paths import ENV_VAR

    os.environ[ENV_VAR] = str(location)
    try:
        return function(args, shared_backend(location))
    finally:
        close_all_backends()


def _with_store(
    function: Callable[[argparse.Namespace, Any], int], create: bool = False
) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        return _run_with_store(function, args, create)

    return guarded(handler)


def _bool_flag(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    parser.add_argument(
        f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help_text
    )


# computer ---------------------------------------------------------------------------------


def add_computer_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``setup``, ``configure``, ``list``, ``show``, ``test`` and ``delete``."""
    setup = commands.add_parser(
        "setup",
        help="store a new computer (every field a flag; nothing is asked)",
        description="Store a new computer.  Fields not given take AiiDA's defaults; the "
        "transport is configured separately with `miniengine computer configure`.",
    )
    setup.add_argument("-L", "--label", required=True, help="a unique name for the computer")
    setup.add_argument("-H", "--hostname", required=True, help="its host name (or localhost)")
    setup.add_argument("-D", "--description", default="", help="a description")
    setup.add_argument("-T", "--transport", default="core.local", help="transport plugin")
    setup.add_argument("-S", "--scheduler", default="core.direct", help="scheduler plugin")
    setup.add_argument(
        "-w",
        "--work-dir",
        default="/scratch/{username}/miniengine/",
        help="absolute path of the jobs' folders; {username} is replaced by the remote user",
    )
    setup.add_argument(
        "--mpirun-command",
        default="mpirun -np {tot_num_mpiprocs}",
        help="how to start an MPI program ({tot_num_mpiprocs}, {num_machines}, ...)",
    )
    setup.add_argument(
        "--mpiprocs-per-machine", type=int, default=None, help="default MPI processes per machine"
    )
    setup.add_argument(
        "--default-memory-per-machine", type=int, default=None, help="memory per machine (kB)"
    )
    setup.add_argument("--shebang", default="#!/bin/bash", help="first line of submit scripts")
    setup.add_argument("--prepend-text", default="", help="script lines before each job")
    setup.add_argument("--append-text", default="", help="script lines after each job")
    _bool_flag(setup, "use-double-quotes", "quote paths in scripts with double quotes")
    setup.add_argument(
        "-n",
        "--non-interactive",
        action="store_true",
        help="accepted for verdi's sake: this command never asks",
    )
    add_db_option(setup)
    setup.set_defaults(handler=_with_store(_setup, create=True))

    configure = commands.add_parser(
        "configure",
        help="set how a computer's transport connects (user, port, key, ...)",
        description="Record the transport settings of a computer; settings not given take "
        "the plugin's defaults.",
    )
    # The transport's flags are added when the command runs: building them here would import
    # the transport plugins (and the event loop machinery) for every command line.
    configure.add_argument(
        "transport", metavar="TRANSPORT", help="the computer's transport: core.local, core.ssh, ..."
    )
    configure.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        metavar="COMPUTER [SETTINGS]",
        help="the computer (label, pk or uuid) and the transport's settings; "
        "`miniengine computer configure TRANSPORT --help` lists them",
    )
    configure.set_defaults(handler=guarded(_configure_entry))

    listing = commands.add_parser("list", help="list the computers")
    add_json_option(listing)
    add_db_option(listing)
    listing.set_defaults(handler=_with_store(_list))

    show = commands.add_parser("show", help="show a computer's fields and configuration")
    show.add_argument("computer", metavar="COMPUTER", help="label, pk or uuid")
    add_json_option(show)
    add_db_option(show)
    show.set_defaults(handler=_with_store(_show))

    test = commands.add_parser(
        "test",
        help="connect, run whoami, write the work folder, query the scheduler",
        description="Open the computer's transport and check, printing each check: the "
        "remote user (whoami), that the work folder can be created and written, and that "
        "the scheduler's job list command runs.  Exit status 1 if any check fails.",
    )
    test.add_argument("computer", metavar="COMPUTER", help="label, pk or uuid")
    add_db_option(test)
    test.set_defaults(handler=_with_store(_test))

    delete = commands.add_parser(
        "delete", help="delete a computer (refused while codes or RemoteData use it)"
    )
    delete.add_argument("computer", metavar="COMPUTER", help="label, pk or uuid")
    add_db_option(delete)
    delete.set_defaults(handler=_with_store(_delete))


def _configure_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``computer configure NAME``: the settings of the transport plugin ``name``."""
    from miniengine.transports.plugins import TransportFactory

    transport = TransportFactory(name)
    parser = argparse.ArgumentParser(
        prog=f"miniengine computer configure {name}",
        description=f"Record the settings of the {name} transport of a computer.",
    )
    parser.add_argument("computer", metavar="COMPUTER", help="label, pk or uuid")
    for param, spec in sorted(transport.auth_params.items()):
        flag = "--" + param.replace("_", "-")
        help_text = spec.help + (f" (default: {spec.default})" if spec.default is not None else "")
        if spec.type is bool:
            parser.add_argument(
                flag,
                dest=param,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag, dest=param, type=spec.type, default=argparse.SUPPRESS, help=help_text
            )
    parser.add_argument(
        "-n", "--non-interactive", action="store_true", help="accepted: this command never asks"
    )
    add_db_option(parser)
    parser.set_defaults(auth_params=sorted(transport.auth_params))
    return parser


def _configure_entry(args: argparse.Namespace) -> int:
    parser = _configure_parser(args.transport)
    rest, args.rest = args.rest, None
    parsed = parser.parse_args(rest, namespace=args)
    return _run_with_store(_configure, parsed, create=False)


def _load(store: Any, identifier: str) -> Any:
    from miniengine.runtime.computers import load_computer

    return load_computer(identifier, db=store)


def _setup(args: argparse.Namespace, store: Any) -> int:
    from miniengine.runtime.computers import Computer

    computer = Computer(
        args.label,
        args.hostname,
        description=args.description,
        transport_type=args.transport,
        scheduler_type=args.scheduler,
        workdir=args.work_dir,
        mpirun_command=args.mpirun_command,
        default_mpiprocs_per_machine=args.mpiprocs_per_machine,
        default_memory_per_machine=args.default_memory_per_machine,
        shebang=args.shebang,
        prepend_text=args.prepend_text,
        append_text=args.append_text,
        use_double_quotes=bool(args.use_double_quotes),
    ).store(store)
    emit(
        f"stored computer {computer.label!r} (pk {computer.pk}); configure it with "
        f"`miniengine computer configure {computer.transport_type} {computer.label}`"
    )
    return 0


def _configure(args: argparse.Namespace, store: Any) -> int:
    computer = _load(store, args.computer)
    if computer.transport_type != args.transport:
        raise CliError(
            f"the computer {computer.label!r} uses the transport {computer.transport_type}, "
            f"not {args.transport}"
        )
    params = {name: getattr(args, name) for name in args.auth_params if hasattr(args, name)}
    computer.configure(**params)
    emit(f"configured computer {computer.label!r} ({computer.transport_type})")
    return 0


def _fields(computer: Any) -> dict[str, Any]:
    return {
        "pk": computer.pk,
        "uuid": computer.uuid,
        "label": computer.label,
        "hostname": computer.hostname,
        "description": computer.description,
        "transport_type": computer.transport_type,
        "scheduler_type": computer.scheduler_type,
        "workdir": computer.get_workdir(),
        "mpirun_command": " ".join(computer.get_mpirun_command()),
        "default_mpiprocs_per_machine": computer.get_default_mpiprocs_per_machine(),
        "default_memory_per_machine": computer.get_default_memory_per_machine(),
        "shebang": computer.get_shebang(),
        "prepend_text": computer.get_prepend_text(),
        "append_text": computer.get_append_text(),
        "use_double_quotes": computer.get_use_double_quotes(),
        "minimum_job_poll_interval": computer.get_minimum_job_poll_interval(),
        "configured": computer.is_configured,
        "configuration": computer.get_configuration(),
    }


def _list(args: argparse.Namespace, store: Any) -> int:
    from miniengine.runtime.computers import Computer

    computers = Computer.collection(store).all()
    if args.json:
        emit(json_array(_fields(computer) for computer in computers))
        return 0
    if not computers:
        emit("no computers: add one with `miniengine computer setup`")
        return 0
    emit(
        format_table(
            ("pk", "label", "hostname", "transport", "scheduler", "configured"),
            (
                (
                    str(c.pk),
                    c.label,
                    c.hostname,
                    c.transport_type,
                    c.scheduler_type,
                    "yes" if c.is_configured else "no",
                )
                for c in computers
            ),
            right=(0,),
        )
    )
    return 0


def _show(args: argparse.Namespace, store: Any) -> int:
    fields = _fields(_load(store, args.computer))
    if args.json:
        emit(json_object(fields))
        return 0
    configuration = fields.pop("configuration")
    pairs = [(name, "" if value is None else str(value)) for name, value in fields.items()]
    pairs += [(f"  {name}", str(value)) for name, value in sorted(configuration.items())]
    emit(format_pairs(pairs))
    return 0


def _test(args: argparse.Namespace, store: Any) -> int:
    import anyio

    from miniengine.runtime.computer_checks import ComputerCheck, check_computer

    computer = _load(store, args.computer)
    emit(f"testing computer {computer.label!r} ({computer.transport_type}, {computer.hostname})")

    def report(check: ComputerCheck) -> None:
        emit(f"[{' OK ' if check.ok else 'FAIL'}] {check.name}: {check.detail}")

    results = anyio.run(check_computer, computer, report)
    failed = [check for check in results if not check.ok]
    if failed:
        emit(f"{len(failed)} check(s) failed")
        return EXIT_ERROR
    emit("all checks passed")
    return 0


def _delete(args: argparse.Namespace, store: Any) -> int:
    from miniengine.runtime.computers import Computer

    computer = _load(store, args.computer)
    Computer.collection(store).delete(computer.pk)
    emit(f"deleted computer {computer.label!r} (pk {computer.pk})")
    return 0


# code -------------------------------------------------------------------------------------


def add_code_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``create``, ``list`` and ``show``."""
    create = commands.add_parser(
        "create", help="store a new code", description="Store a new code (nothing is asked)."
    )
    kinds = create.add_subparsers(dest="code_type", metavar="TYPE", required=True)
    installed = kinds.add_parser(
        "core.code.installed", help="an executable installed on a computer"
    )
    installed.add_argument("--computer", "-Y", required=True, help="label, pk or uuid")
    installed.add_argument(
        "--filepath-executable", required=True, help="absolute path of the executable there"
    )
    portable = kinds.add_parser(
        "core.code.portable", help="a local folder of files uploaded with each job"
    )
    portable.add_argument("--filepath-files", required=True, help="the local folder")
    portable.add_argument(
        "--filepath-executable", required=True, help="the executable, relative to the folder"
    )
    for parser in (installed, portable):
        parser.add_argument("--label", "-L", required=True, help="the code's label (no '@')")
        parser.add_argument("--description", "-D", default="", help="a description")
        parser.add_argument(
            "--default-calc-job-plugin", "-P", default=None, help="the CalcJob it runs by default"
        )
        parser.add_argument("--prepend-text", default="", help="script lines before the command")
        parser.add_argument("--append-text", default="", help="script lines after the command")
        _bool_flag(parser, "with-mpi", "run with mpirun (default: as the job's options say)")
        _bool_flag(parser, "use-double-quotes", "quote the command with double quotes")
        parser.add_argument(
            "-n", "--non-interactive", action="store_true", help="accepted: nothing is asked"
        )
        add_db_option(parser)
        parser.set_defaults(handler=_with_store(_code_create))

    listing = commands.add_parser("list", help="list the codes")
    add_json_option(listing)
    add_db_option(listing)
    listing.set_defaults(handler=_with_store(_code_list))

    show = commands.add_parser("show", help="show a code")
    show.add_argument("code", metavar="CODE", help="label@computer, label, pk or uuid")
    add_json_option(show)
    add_db_option(show)
    show.set_defaults(handler=_with_store(_code_show))


def _code_create(args: argparse.Namespace, store: Backend) -> int:
    from miniengine.runtime.codes import InstalledCode, PortableCode

    common = {
        "label": args.label,
        "description": args.description,
        "default_calc_job_plugin": args.default_calc_job_plugin,
        "prepend_text": args.prepend_text,
        "append_text": args.append_text,
        "with_mpi": args.with_mpi,
        "use_double_quotes": bool(args.use_double_quotes),
    }
    code: Any
    if args.code_type == "core.code.installed":
        computer = _load(store, args.computer)
        if store.computers.code_pks(args.label, computer.label):
            raise CliError(f"a code labelled {args.label}@{computer.label} exists already")
        code = InstalledCode(
            computer=computer, filepath_executable=args.filepath_executable, **common
        )
    else:
        if store.computers.code_pks(args.label, None):
            raise CliError(f"a code labelled {args.label!r} exists already")
        code = PortableCode(
            filepath_files=Path(args.filepath_files),
            filepath_executable=args.filepath_executable,
            **common,
        )
    code.store()
    emit(f"stored code {code.full_label!r} (pk {code.pk})")
    return 0


def _code_fields(code: Any) -> dict[str, Any]:
    computer = code.computer
    return {
        "pk": code.pk,
        "uuid": code.uuid,
        "type": code.type_name,
        "label": code.label,
        "full_label": code.full_label,
        "description": code.description,
        "computer": computer.label if computer is not None else None,
        "filepath_executable": str(code.filepath_executable),
        "default_calc_job_plugin": code.default_calc_job_plugin,
        "prepend_text": code.prepend_text,
        "append_text": code.append_text,
        "with_mpi": code.with_mpi,
        "use_double_quotes": code.use_double_quotes,
    }


def _code_list(args: argparse.Namespace, store: Backend) -> int:
    rows = store.computers.code_rows()
    if args.json:
        emit(
            json_array(
                {
                    "pk": code.pk,
                    "type": code.node_type,
                    "label": code.label,
                    "computer": code.computer_label,
                }
                for code in rows
            )
        )
        return 0
    if not rows:
        emit("no codes: add one with `miniengine code create`")
        return 0
    emit(
        format_table(
            ("pk", "full label", "type"),
            (
                (
                    str(code.pk),
                    f"{code.label}@{code.computer_label}" if code.computer_label else code.label,
                    code.node_type,
                )
                for code in rows
            ),
            right=(0,),
        )
    )
    return 0


def _code_show(args: argparse.Namespace, store: Any) -> int:
    from miniengine.runtime.codes import load_code

    fields = _code_fields(load_code(args.code, db=store))
    if args.json:
        emit(json_object(fields))
        return 0
    emit(
        format_pairs((name, "" if value is None else str(value)) for name, value in fields.items())
    )
    return 0
