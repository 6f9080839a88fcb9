"""``miniengine calcjob inputls|inputcat|outputls|outputcat|remotecat|gotocomputer|cleanworkdir``.

As ``verdi calcjob``.  The files of a CalcJob are in three places: the input files it submitted
(kept on its node), the files it retrieved (its ``retrieved`` output) and its remote working
folder on the computer.  The first two are read from the database and the repository beside it
with a read-only connection and no event loop; only ``remotecat``, ``gotocomputer`` and
``cleanworkdir`` load the computer and its transport.  File contents go to stdout byte for byte.
"""

from __future__ import annotations

import argparse
import posixpath
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, TypeVar

from miniengine.cli.calcjob_queries import require_calcjob
from miniengine.cli.connection import open_readonly
from miniengine.cli.errors import CliError, guarded
from miniengine.cli.identify import IDENTIFIER_HELP, find_process, process_identifier
from miniengine.cli.options import add_db_option, db_location
from miniengine.cli.render import printable
from miniengine.cli.table import emit

if TYPE_CHECKING:
    from miniengine.storage.interfaces.calcjobs import CalcJobInfo, CalcJobs, CleanableCalcJob
    from miniengine.storage.interfaces.queries import Reader
    from miniengine.storage.repository import Repository

__all__ = [
    "add_commands",
    "calcjob_properties",
    "calcjob_rows",
    "gotocomputer_command",
    "list_status",
]

_T = TypeVar("_T")

SECONDS_PER_DAY = 86400.0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The subcommands of ``miniengine calcjob``."""

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=description)
        parser.add_argument(
            "calcjob", type=process_identifier, metavar="CALCJOB", help=IDENTIFIER_HELP
        )
        return parser

    inputls = command(
        "inputls",
        "list the input files the CalcJob submitted",
        "List the files and folders of the CalcJob's submitted input files (kept on its node), "
        "at PATH in them if given.",
    )
    outputls = command(
        "outputls",
        "list the files the CalcJob retrieved",
        "List the files and folders of the CalcJob's `retrieved` output, at PATH in it if given.",
    )
    for parser, handler in ((inputls, _inputls), (outputls, _outputls)):
        parser.add_argument("path", nargs="?", metavar="PATH", help="a folder in them")
        parser.add_argument(
            "-c", "--color", action="store_true", help="show folders in colour, with a slash"
        )
        add_db_option(parser)
        parser.set_defaults(handler=guarded(handler))

    inputcat = command(
        "inputcat",
        "print an input file the CalcJob submitted",
        "Print one of the CalcJob's submitted input files, byte for byte (default: the file "
        "of its input_filename option).",
    )
    outputcat = command(
        "outputcat",
        "print a file the CalcJob retrieved",
        "Print one of the files of the CalcJob's `retrieved` output, byte for byte (default: "
        "the file of its output_filename option).",
    )
    remotecat = command(
        "remotecat",
        "print a file of the CalcJob's remote working folder",
        "Print a file of the CalcJob's working folder on its computer, read through the "
        "computer's transport (default: the file of its output_filename option).",
    )
    for parser, handler in ((inputcat, _inputcat), (outputcat, _outputcat)):
        parser.add_argument("path", nargs="?", metavar="PATH", help="the file's relative path")
        add_db_option(parser)
        parser.set_defaults(handler=guarded(handler))
    remotecat.add_argument(
        "path", nargs="?", metavar="PATH", help="the file's path in the working folder"
    )
    add_db_option(remotecat)
    remotecat.set_defaults(handler=guarded(_remotecat))

    goto = command(
        "gotocomputer",
        "print the command that opens a shell in the CalcJob's remote working folder",
        "Print the command that opens a shell in the CalcJob's working folder on its computer "
        "(`ssh -t ... 'cd DIR && bash'` for core.ssh, `cd DIR` for core.local), or run it "
        "with --exec.",
    )
    goto.add_argument(
        "--exec", dest="execute", action="store_true", help="run the command instead of printing it"
    )
    add_db_option(goto)
    goto.set_defaults(handler=guarded(_gotocomputer))

    clean = commands.add_parser(
        "cleanworkdir",
        help="remove the remote working folders of terminated CalcJobs",
        description="Remove the remote working folders of the CalcJobs given, or of every "
        "terminated CalcJob the filters select when none is given (then --past-days or "
        "--older-than is required).  Active CalcJobs are refused.  Asks first unless -f; "
        "without a terminal to ask on, refuses unless -f.",
    )
    clean.add_argument(
        "calcjobs", nargs="*", type=process_identifier, metavar="CALCJOB", help=IDENTIFIER_HELP
    )
    clean.add_argument(
        "-p",
        "--past-days",
        type=_days,
        metavar="DAYS",
        help="only CalcJobs modified in the last DAYS days",
    )
    clean.add_argument(
        "-o",
        "--older-than",
        type=_days,
        metavar="DAYS",
        help="only CalcJobs last modified more than DAYS days ago",
    )
    clean.add_argument(
        "-Y",
        "--computers",
        nargs="+",
        action="extend",
        metavar="COMPUTER",
        help="only CalcJobs that ran on these computers (labels)",
    )
    clean.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    add_db_option(clean)
    clean.set_defaults(handler=guarded(_cleanworkdir))


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e6:
        raise argparse.ArgumentTypeError(f"expected a number of days >= 0, not {text!r}")
    return value


# reading -------------------------------------------------------------------------------------


def _read(args: argparse.Namespace, query: Callable[[Reader], _T]) -> _T:
    with open_readonly(db_location(args)) as db:
        return query(db)


def _calcjob(db: Reader, identifier: str) -> CalcJobInfo:
    row = find_process(db.queries, identifier)
    return require_calcjob(db.calcjobs, row.pk, row.node_type)


def _lookup(tree: dict[str, Any], path: str | None, what: str) -> Any:
    """The item at ``path`` in a repository tree (a dict is a folder, a str a file's key)."""
    item: Any = tree
    if path is None:
        return item
    if path.startswith("/"):
        raise CliError(f"the path {path!r} must be relative to the {what}")
    for part in (p for p in path.split("/") if p not in ("", ".")):
        if not isinstance(item, dict) or part not in item:
            raise CliError(f"the path {path!r} does not exist in the {what}")
        item = item[part]
    return item


def _list(tree: dict[str, Any], path: str | None, what: str, color: bool) -> int:
    folder = _lookup(tree, path, what)
    if not isinstance(folder, dict):
        raise CliError(f"the path {path!r} is a file, not a folder, in the {what}")
    lines = []
    for name, item in sorted(folder.items()):
        if isinstance(item, dict) and color:
            lines.append(f"\x1b[1;34m{printable(name)}/\x1b[0m")
        else:
            lines.append(printable(name))
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")  # names escaped above; the colour is ours
    return 0


def _cat(repository: Repository, tree: dict[str, Any], path: str, what: str) -> int:
    key = _lookup(tree, path, what)
    if isinstance(key, dict):
        raise CliError(f"the path {path!r} is a folder, not a file, in the {what}")
    with repository.open(str(key)) as stream:
        _copy_to_stdout(stream)
    return 0


def _copy_to_stdout(stream: IO[bytes]) -> None:
    """Write the bytes as they are; a reader that stops early (``| head``) is not an error."""
    out = sys.stdout.buffer
    try:
        while chunk := stream.read(1 << 16):
            out.write(chunk)
        out.flush()
    except BrokenPipeError:
        _quiet_stdout()


def _write_stdout(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        _quiet_stdout()


def _quiet_stdout() -> None:
    import os

    # Python would report the broken pipe again when it flushes stdout at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _default_file(info: CalcJobInfo, path: str | None, option: str) -> str:
    if path:
        return path
    default = info.option(option)
    if not default:
        raise CliError(
            f"calcjob {info.pk} has no {option} option: give the PATH of the file to print"
        )
    return str(default)


def _inputls(args: argparse.Namespace) -> int:
    info = _read(args, lambda c: _calcjob(c, args.calcjob))
    return _list(info.input_tree, args.path, f"input files of calcjob {info.pk}", args.color)


def _inputcat(args: argparse.Namespace) -> int:
    info, repository = _read(
        args, lambda db: (_calcjob(db, args.calcjob), db.provenance.repository())
    )
    path = _default_file(info, args.path, "input_filename")
    return _cat(repository, info.input_tree, path, f"input files of calcjob {info.pk}")


def _retrieved(db: Reader, identifier: str) -> tuple[CalcJobInfo, dict[str, Any]]:
    info = _calcjob(db, identifier)
    tree = db.calcjobs.output_tree(info.pk, "retrieved")
    if tree is None:
        raise CliError(
            f"calcjob {info.pk} has no 'retrieved' output: its files have not been retrieved"
        )
    return info, tree


def _outputls(args: argparse.Namespace) -> int:
    info, tree = _read(args, lambda c: _retrieved(c, args.calcjob))
    return _list(tree, args.path, f"retrieved files of calcjob {info.pk}", args.color)


def _outputcat(args: argparse.Namespace) -> int:
    (info, tree), repository = _read(
        args, lambda db: (_retrieved(db, args.calcjob), db.provenance.repository())
    )
    path = _default_file(info, args.path, "output_filename")
    return _cat(repository, tree, path, f"retrieved files of calcjob {info.pk}")


# through the computer ------------------------------------------------------------------------


def _with_computer(args: argparse.Namespace, action: Callable[[CalcJobInfo, Any], int]) -> int:
    """Run ``action(info, computer)`` for the CalcJob of ``args.calcjob``: it must have a remote
    working folder and a computer; the database is closed after."""
    info = _read(args, lambda c: _calcjob(c, args.calcjob))
    if info.remote_workdir is None:
        raise CliError(
            f"calcjob {info.pk} has no remote working folder yet (its files were not uploaded)"
        )
    uuid = info.computer_uuid or info.attributes.get("computer_uuid")
    if uuid is None:
        raise CliError(f"calcjob {info.pk} has no computer")
    from miniengine.runtime.computers import load_computer
    from miniengine.storage.open import close_all_backends, shared_backend

    try:
        computer = load_computer(uuid=str(uuid), db=shared_backend(db_location(args)))
        return action(info, computer)
    finally:
        close_all_backends()


def _remotecat(args: argparse.Namespace) -> int:
    def action(info: CalcJobInfo, computer: Any) -> int:
        path = _default_file(info, args.path, "output_filename")
        if path.startswith("/"):
            raise CliError(f"the path {path!r} must be relative to the remote working folder")
        workdir = str(info.remote_workdir)
        target = posixpath.normpath(posixpath.join(workdir, path))
        transport = computer.get_transport()

        async def read() -> bytes:
            async with transport:
                if await transport.isdir(target):
                    raise CliError(
                        f"{path!r} is a folder in the remote working folder {workdir} of "
                        f"calcjob {info.pk} on {computer.label}"
                    )
                return bytes(await transport.read_bytes(target))

        import anyio

        from miniengine.transports.errors import TransportFileNotFoundError

        try:
            content = anyio.run(read)
        except TransportFileNotFoundError:
            raise CliError(
                f"the file {path!r} does not exist in the remote working folder {workdir} of "
                f"calcjob {info.pk} on {computer.label}"
            ) from None
        _write_stdout(content)
        return 0

    return _with_computer(args, action)


def gotocomputer_command(transport: Any, remotedir: str) -> str:
    """The shell command that opens an interactive shell in ``remotedir`` through ``transport``:
    ``cd DIR`` on ``core.local``, ``ssh -t [user@]host -p PORT ... 'cd DIR && bash'`` on
    ``core.ssh``; another plugin may define ``gotocomputer_command(remotedir)`` (AiiDA's name)."""
    import shlex

    from miniengine.transports.local import LocalTransport
    from miniengine.transports.ssh import SshTransport

    if isinstance(transport, LocalTransport):
        return f"cd {shlex.quote(remotedir)}"
    if isinstance(transport, SshTransport):
        params = transport.params
        user = params.get("username")
        words = ["ssh", "-t", f"{user}@{transport.machine}" if user else transport.machine]
        words += ["-p", str(params.get("port") or 22)]
        if params.get("key_filename"):
            words += ["-i", str(params["key_filename"])]
        if params.get("known_hosts"):
            words += ["-o", f"UserKnownHostsFile={params['known_hosts']}"]
        if params.get("proxy_jump"):
            words += ["-o", f"ProxyJump={params['proxy_jump']}"]
        elif params.get("proxy_command"):
            words += ["-o", f"ProxyCommand={params['proxy_command']}"]
        shell = "bash -l" if params.get("use_login_shell", True) else "bash"
        words.append(f"cd {shlex.quote(remotedir)} && {shell}")
        return " ".join(shlex.quote(word) for word in words)
    custom = getattr(transport, "gotocomputer_command", None)
    if callable(custom):
        return str(custom(remotedir))
    raise CliError(f"the transport {type(transport).__name__} cannot open a shell on its computer")


def _gotocomputer(args: argparse.Namespace) -> int:
    def action(info: CalcJobInfo, computer: Any) -> int:
        transport = computer.get_transport()
        workdir = str(info.remote_workdir)
        command = gotocomputer_command(transport, workdir)
        if not args.execute:
            emit(command)
            return 0
        import subprocess

        from miniengine.transports.local import LocalTransport

        sys.stdout.flush()
        if isinstance(transport, LocalTransport):
            import os

            if not os.path.isdir(workdir):
                raise CliError(
                    f"the remote working folder {workdir} of calcjob {info.pk} does not exist "
                    "(any more)"
                )
            shell = ["bash", "-l"] if transport.params.get("use_login_shell", True) else ["bash"]
            return subprocess.call(shell, cwd=workdir)
        return subprocess.call(command, shell=True)

    return _with_computer(args, action)


def _cleanworkdir(args: argparse.Namespace) -> int:
    if args.calcjobs and args.past_days is not None and args.older_than is not None:
        raise CliError("give either CalcJobs or both --past-days and --older-than, not all three")
    if not args.calcjobs and args.past_days is None and args.older_than is None:
        raise CliError(
            "give the CalcJobs to clean, or select them with --past-days or --older-than"
        )
    now = time.time()
    newer = None if args.past_days is None else now - args.past_days * SECONDS_PER_DAY
    older = None if args.older_than is None else now - args.older_than * SECONDS_PER_DAY

    def query(db: Reader) -> list[CleanableCalcJob]:
        pks = None
        if args.calcjobs:
            named = [_calcjob(db, text) for text in args.calcjobs]
            pks = [info.pk for info in named]
            active = [info.pk for info in named if info.process_state not in _TERMINAL]
            if active:
                raise CliError(
                    f"calcjob {', '.join(map(str, active))} is still active: its working "
                    "folder is in use (kill it first, or wait until it ends)"
                )
        found = db.calcjobs.cleanable_calcjobs(pks, newer, older, args.computers)
        return [row for row in found if row.process_state in _TERMINAL]

    selected = _read(args, query)
    if not selected:
        raise CliError("no terminated calcjobs with a remote working folder match")
    if not args.force:
        question = f"Are you sure you want to clean the work directory of {len(selected)} calcjobs?"
        if not sys.stdin.isatty():
            raise CliError(
                f"refusing to clean {len(selected)} remote folders without asking: no terminal "
                "to ask on (pass -f to clean without asking)"
            )
        sys.stdout.write(f"{question} [y/N]: ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            emit("aborted: nothing cleaned")
            return 1
    for label, count in _clean([row.remote_folder_pk for row in selected], args):
        emit(f"{count} remote folder{'s' if count != 1 else ''} cleaned on {label}")
    return 0


_TERMINAL = ("finished", "excepted", "killed")


def _clean(remote_pks: list[int], args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    """Remove the folders of the ``RemoteData`` nodes, one transport per computer."""
    from miniengine.runtime.nodes import load_node
    from miniengine.storage.open import close_all_backends, shared_backend

    try:
        store = shared_backend(db_location(args))
        by_computer: dict[str, list[Any]] = {}
        computers: dict[str, Any] = {}
        for pk in remote_pks:
            remote = load_node(pk, db=store)
            computer = remote.computer
            if computer is None:
                raise CliError(f"the remote folder {pk} names no computer")
            computers[computer.uuid] = computer
            by_computer.setdefault(computer.uuid, []).append(remote)
        import anyio

        for uuid, remotes in by_computer.items():
            computer = computers[uuid]

            async def clean(computer: Any = computer, remotes: list[Any] = remotes) -> None:
                async with computer.get_transport() as transport:
                    for remote in remotes:
                        await remote.aclean(transport)

            anyio.run(clean)
            yield computer.label, len(remotes)
    finally:
        close_all_backends()


# process show / process list -----------------------------------------------------------------


def calcjob_properties(calcjobs: CalcJobs, pk: int) -> dict[str, Any] | None:
    """What ``process show`` adds for a CalcJob (None for another process): its computer,
    stage, job id, scheduler state and remote working folder."""
    info = calcjobs.calcjob_info(pk)
    if info is None:
        return None
    return {
        "computer": info.computer_label,
        "computer_pk": info.computer_pk,
        "stage": info.stage,
        "job_id": info.job_id,
        "scheduler_state": info.scheduler_state,
        "remote_workdir": info.remote_workdir,
    }


def calcjob_rows(properties: dict[str, Any]) -> list[tuple[str, str]]:
    """The lines of ``process show`` for :func:`calcjob_properties`."""
    computer = properties["computer"]
    if computer is not None:
        computer = f"[{properties['computer_pk']}] {computer}"
    values = (
        ("computer", computer),
        ("stage", properties["stage"]),
        ("job id", properties["job_id"]),
        ("scheduler state", properties["scheduler_state"]),
        ("remote folder", properties["remote_workdir"]),
    )
    return [(name, "" if value is None else str(value)) for name, value in values]


#: a word the status of each stage holds when it already tells the stage
_STAGE_WORDS = {
    "uploading": "upload",
    "submitting": "submit",
    "withscheduler": "scheduler",
    "retrieving": "retriev",
    "parsing": "pars",
}


def list_status(status: str | None, stage: str | None) -> str:
    """The status column of ``process list`` for an active CalcJob at ``stage``: its status,
    with the stage in front when the status does not tell it (paused, just played)."""
    status = status or ""
    if stage is None or _STAGE_WORDS.get(stage, stage) in status.lower():
        return status
    return f"{stage}: {status}" if status else stage
