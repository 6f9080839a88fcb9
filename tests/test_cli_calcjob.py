"""``miniengine calcjob ...`` and what ``process show|list`` say of CalcJobs, run as real
subprocesses on real CalcJobs: ``bash`` programs run through ``core.local`` + ``core.direct``,
a daemon for a job that is still with its scheduler, and a private OpenSSH server for
``core.ssh``."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from miniengine import Computer, InstalledCode, Int, Str, await_node, load_node, run, submit
from miniengine.runtime.computers import localhost_computer
from miniengine.schedulers import JobState
from miniengine.storage.open import close_all_backends
from miniengine.storage.store import close_all_stores
from tests.services.sshd import SshServer, running_sshd
from tests.test_cli import ROOT, cli
from tests.workchains.calcjob_cli_plugins import BINARY, FILES_SCRIPT, FilesCalculation
from tests.workchains.calcjob_plugins import ADD_SCRIPT, ArithmeticAddCalculation
from tests.workchains.daemon_chains import DaemonGuard, add, python_env, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses core.direct")

OPTIONS = {"options": {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}}}
TIMEOUT = 60


@dataclass(frozen=True)
class Jobs:
    db: Path | str
    add: int  # ArithmeticAddCalculation(x=4, y=5), finished
    add_uuid: str
    files: int  # FilesCalculation, finished
    workdir: str  # the add job's remote working folder
    function: int  # a calcfunction
    data: int  # an Int
    waiting: int  # a CalcJob submitted with no daemon: created, never uploaded


def _set_db(db: Path | str) -> str | None:
    previous = os.environ.get("MINIENGINE_DB")
    os.environ["MINIENGINE_DB"] = str(db)
    return previous


def _restore_db(previous: str | None) -> None:
    close_all_stores()
    if previous is None:
        os.environ.pop("MINIENGINE_DB", None)
    else:
        os.environ["MINIENGINE_DB"] = previous


def local_bash(root: Path) -> InstalledCode:
    (root / "work").mkdir(parents=True, exist_ok=True)
    computer = localhost_computer(root / "work")
    return InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash").store()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def jobs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Jobs]:
    """The jobs of one database of each backend, run once for the module's commands (a test that
    needs the sqlite file narrows it with an indirect ``jobs`` parameter)."""
    root = tmp_path_factory.mktemp("calcjob-cli")
    db: Path | str = root / "engine.sqlite"
    repository = os.environ.get("MINIENGINE_REPOSITORY")
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        db = server.create_database()
        name = db.rsplit("/", 1)[1]
        request.addfinalizer(lambda: server.drop_database(name))
        # file contents go to a folder of the module (the commands' subprocesses inherit it)
        os.environ["MINIENGINE_REPOSITORY"] = str(root / "repository")
    previous = _set_db(db)
    try:
        code = local_bash(root)
        _, job = run.get_node(
            ArithmeticAddCalculation, code=code, x=Int(4), y=Int(5), metadata=OPTIONS
        )
        _, files = run.get_node(FilesCalculation, code=code)
        _, function = run.get_node(add, Int(1), Int(2))
        waiting = submit(ArithmeticAddCalculation, code=code, x=Int(1), y=Int(1), metadata=OPTIONS)
        assert job.is_finished_ok and files.is_finished_ok, (files.exit_status, files.exit_message)
        yield Jobs(
            db,
            job.pk,
            job.uuid,
            files.pk,
            job.get_remote_workdir(),
            function.pk,
            job.inputs.x.pk,
            waiting.pk,
        )
    finally:
        _restore_db(previous)
        close_all_backends()
        if repository is None:
            os.environ.pop("MINIENGINE_REPOSITORY", None)
        else:
            os.environ["MINIENGINE_REPOSITORY"] = repository


def raw(
    *args: str, db: Path | str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``python -m miniengine ARGS --db DB`` with its output as bytes."""
    env = python_env()
    env.pop("MINIENGINE_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "miniengine", *args, "--db", str(db)],
        capture_output=True,
        input=stdin if stdin is not None else b"",
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


# inputls / inputcat ------------------------------------------------------------------------------


def test_inputls_lists_the_submitted_input_files(jobs: Jobs) -> None:
    assert cli("calcjob", "inputls", str(jobs.add), db=jobs.db).ok().split() == [
        "_aiidasubmit.sh",
        "add.sh",
        "aiida.in",
    ]
    # named by its uuid as well, and a folder in the files
    listed = cli("calcjob", "inputls", jobs.add_uuid, db=jobs.db).ok()
    assert "aiida.in" in listed
    files = cli("calcjob", "inputls", str(jobs.files), db=jobs.db).ok().split()
    assert files == ["_aiidasubmit.sh", "data.bin", "run.sh", "sub"]
    assert cli("calcjob", "inputls", str(jobs.files), "sub", db=jobs.db).ok() == "nested.txt\n"
    coloured = cli("calcjob", "inputls", str(jobs.files), "--color", db=jobs.db).ok()
    assert "\x1b[1;34msub/\x1b[0m" in coloured


def test_inputcat_prints_the_input_file_or_the_one_named(jobs: Jobs) -> None:
    assert cli("calcjob", "inputcat", str(jobs.add), db=jobs.db).ok() == "4 5\n"
    assert cli("calcjob", "inputcat", str(jobs.add), "add.sh", db=jobs.db).ok() == ADD_SCRIPT
    nested = cli("calcjob", "inputcat", str(jobs.files), "sub/nested.txt", db=jobs.db).ok()
    assert nested == "inside\n"


def test_binary_files_reach_stdout_unchanged(jobs: Jobs) -> None:
    for command, path in (("inputcat", "data.bin"), ("outputcat", "out.bin")):
        completed = raw("calcjob", command, str(jobs.files), path, db=jobs.db)
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout == BINARY and completed.stderr == b""


def test_a_reader_that_stops_early_is_not_an_error(jobs: Jobs) -> None:
    env = python_env()
    env.pop("MINIENGINE_DB", None)
    command = (
        f"{sys.executable} -m miniengine calcjob inputcat {jobs.add} add.sh --db {jobs.db} "
        "| head -c 3"
    )
    completed = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert completed.stdout == ADD_SCRIPT.encode()[:3]
    assert b"Traceback" not in completed.stderr and b"Broken pipe" not in completed.stderr


# outputls / outputcat ----------------------------------------------------------------------------


def test_outputls_and_outputcat_read_the_retrieved_folder(jobs: Jobs) -> None:
    listed = cli("calcjob", "outputls", str(jobs.add), db=jobs.db).ok().split()
    assert "aiida.out" in listed
    assert cli("calcjob", "outputcat", str(jobs.add), db=jobs.db).ok() == "9\n"
    assert cli("calcjob", "outputls", str(jobs.files), db=jobs.db).ok().split() == [
        "_scheduler-stderr.txt",
        "_scheduler-stdout.txt",
        "out.bin",
        "outdir",
    ]
    assert cli("calcjob", "outputls", str(jobs.files), "outdir", db=jobs.db).ok() == "inner.txt\n"
    inner = cli("calcjob", "outputcat", str(jobs.files), "outdir/inner.txt", db=jobs.db).ok()
    assert inner == "nested\n"


# errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("inputcat", "{add}", "missing.txt"), "'missing.txt' does not exist in the input files"),
        (("inputls", "{add}", "nowhere"), "'nowhere' does not exist in the input files"),
        (("inputls", "{add}", "aiida.in"), "'aiida.in' is a file, not a folder"),
        (("inputcat", "{files}", "sub"), "'sub' is a folder, not a file"),
        (("inputcat", "{files}"), "has no input_filename option: give the PATH"),
        (("outputcat", "{files}"), "has no output_filename option: give the PATH"),
        (("outputcat", "{add}", "aiida.in"), "'aiida.in' does not exist in the retrieved files"),
        (("outputls", "{waiting}"), "has no 'retrieved' output"),
        (("outputcat", "{waiting}"), "has no 'retrieved' output"),
        (("inputcat", "{function}"), "is not a CalcJob (its type is CalcFunctionNode)"),
        (("outputls", "{function}"), "is not a CalcJob (its type is CalcFunctionNode)"),
        (("remotecat", "{function}", "x"), "is not a CalcJob"),
        (("gotocomputer", "{function}"), "is not a CalcJob"),
        (("cleanworkdir", "{function}", "-f"), "is not a CalcJob"),
        (("inputls", "{data}"), "is not a process (its type is Int)"),
        (("outputcat", "987654"), "no process with pk 987654"),
        (("remotecat", "{waiting}", "aiida.out"), "has no remote working folder yet"),
        (("gotocomputer", "{waiting}"), "has no remote working folder yet"),
        (("remotecat", "{add}", "missing.txt"), "'missing.txt' does not exist in the remote"),
        (("remotecat", "{add}", "/etc/passwd"), "must be relative to the remote working folder"),
    ],
)
def test_each_failure_is_one_line_naming_what_is_missing(
    jobs: Jobs, args: tuple[str, ...], message: str
) -> None:
    pks = {"add": jobs.add, "files": jobs.files, "waiting": jobs.waiting}
    pks |= {"function": jobs.function, "data": jobs.data}
    line = cli("calcjob", *(arg.format(**pks) for arg in args), db=jobs.db).failed()
    assert line.startswith("error: ") and message in line, line


def test_a_missing_database_is_one_line(tmp_path: Path) -> None:
    line = cli("calcjob", "inputls", "1", db=tmp_path / "none.sqlite").failed()
    assert "no database at" in line


# remotecat ---------------------------------------------------------------------------------------


def test_remotecat_reads_a_file_of_the_working_folder_through_the_transport(jobs: Jobs) -> None:
    assert cli("calcjob", "remotecat", str(jobs.add), db=jobs.db).ok() == "9\n"  # output_filename
    assert cli("calcjob", "remotecat", str(jobs.add), "add.sh", db=jobs.db).ok() == ADD_SCRIPT
    # a file that was never retrieved, and a binary one
    only_remote = cli("calcjob", "remotecat", str(jobs.files), "remote-only.txt", db=jobs.db)
    assert only_remote.ok() == "only-remote\n"
    binary = raw("calcjob", "remotecat", str(jobs.files), "out.bin", db=jobs.db)
    assert binary.returncode == 0 and binary.stdout == BINARY
    line = cli("calcjob", "remotecat", str(jobs.files), "outdir", db=jobs.db).failed()
    assert "'outdir' is a folder in the remote working folder" in line
    script = cli("calcjob", "remotecat", str(jobs.files), "run.sh", db=jobs.db).ok()
    assert script == FILES_SCRIPT


# gotocomputer ------------------------------------------------------------------------------------


def test_gotocomputer_on_core_local_prints_a_cd_and_exec_opens_a_shell_there(jobs: Jobs) -> None:
    assert cli("calcjob", "gotocomputer", str(jobs.add), db=jobs.db).ok() == f"cd {jobs.workdir}\n"
    shell = raw("calcjob", "gotocomputer", str(jobs.add), "--exec", db=jobs.db, stdin=b"pwd\n")
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.decode().strip() == str(Path(jobs.workdir).resolve())


def test_gotocomputer_command_quotes_what_the_shell_would_split() -> None:
    from miniengine.cli.calcjob import gotocomputer_command
    from miniengine.transports.local import LocalTransport
    from miniengine.transports.ssh import SshTransport

    local = LocalTransport("localhost", use_login_shell=False)
    assert gotocomputer_command(local, "/scratch/a b") == "cd '/scratch/a b'"
    ssh = SshTransport(
        "login.example.org",
        username="alice",
        port=2222,
        proxy_command="ssh -W %h:%p bastion",
    )
    words = shlex.split(gotocomputer_command(ssh, "/scratch/it's"))
    assert words[:-1] == [
        "ssh",
        "-t",
        "alice@login.example.org",
        "-p",
        "2222",
        "-o",
        "ProxyCommand=ssh -W %h:%p bastion",
    ]
    assert shlex.split(words[-1]) == ["cd", "/scratch/it's", "&&", "bash", "-l"]
    jump = SshTransport("h", proxy_jump="bastion:2200", proxy_command="ignored")
    assert (
        gotocomputer_command(jump, "/w")
        == "ssh -t h -p 22 -o ProxyJump=bastion:2200 'cd /w && bash -l'"
    )


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def test_gotocomputer_on_core_ssh_prints_the_ssh_command(sshd: SshServer, tmp_path: Path) -> None:
    db = tmp_path / "ssh.sqlite"
    previous = _set_db(db)
    try:
        workdir = tmp_path / "remote-work"
        workdir.mkdir()
        computer = Computer(
            "sshhost", sshd.host, transport_type="core.ssh", workdir=str(workdir)
        ).store()
        computer.configure(**sshd.transport_params())
        computer.set_minimum_job_poll_interval(0.1)
        code = InstalledCode(computer=computer, filepath_executable="/bin/bash", label="bash")
        _, job = run.get_node(
            ArithmeticAddCalculation, code=code.store(), x=Int(20), y=Int(22), metadata=OPTIONS
        )
        assert job.is_finished_ok
        remote = job.get_remote_workdir()
    finally:
        _restore_db(previous)
    expected = (
        f"ssh -t {sshd.username}@{sshd.host} -p {sshd.port} -i {sshd.key_filename} "
        f"-o UserKnownHostsFile={sshd.known_hosts} 'cd {remote} && bash'"
    )
    assert cli("calcjob", "gotocomputer", str(job.pk), db=db).ok() == expected + "\n"
    # --exec runs it: ssh reaches the server and the shell starts in the working folder
    shell = raw("calcjob", "gotocomputer", str(job.pk), "--exec", db=db, stdin=b"pwd\n")
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.decode().strip() == remote
    # remotecat goes through the same transport
    assert cli("calcjob", "remotecat", str(job.pk), db=db).ok() == "42\n"
    line = cli("calcjob", "remotecat", str(job.pk), "nothing.txt", db=db).failed()
    assert "'nothing.txt' does not exist in the remote working folder" in line


# cleanworkdir ------------------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Path, list[tuple[int, Path]]]]:
    """A database with two finished add jobs: ``(db, [(pk, working folder), ...])``."""
    db = tmp_path / "clean.sqlite"
    previous = _set_db(db)
    try:
        code = local_bash(tmp_path)
        found = []
        for x in (1, 2):
            _, job = run.get_node(
                ArithmeticAddCalculation, code=code, x=Int(x), y=Int(1), metadata=OPTIONS
            )
            found.append((job.pk, Path(job.get_remote_workdir())))
    finally:
        _restore_db(previous)
    yield db, found


def test_cleanworkdir_removes_the_remote_folders_with_force(
    fresh: tuple[Path, list[tuple[int, Path]]],
) -> None:
    db, found = fresh
    (first, first_dir), (_, second_dir) = found
    assert (first_dir / "aiida.out").exists()
    out = cli("calcjob", "cleanworkdir", str(first), "-f", db=db).ok()
    assert out == "1 remote folder cleaned on localhost\n"
    assert not first_dir.exists() and (second_dir / "aiida.out").exists()
    line = cli("calcjob", "remotecat", str(first), db=db).failed()
    assert "does not exist in the remote working folder" in line
    # what was retrieved stays in the repository
    assert cli("calcjob", "outputcat", str(first), db=db).ok() == "2\n"


def test_cleanworkdir_without_force_and_without_a_terminal_refuses(
    fresh: tuple[Path, list[tuple[int, Path]]],
) -> None:
    db, found = fresh
    pks = [str(pk) for pk, _ in found]
    line = cli("calcjob", "cleanworkdir", *pks, db=db).failed()  # stdin is not a terminal
    assert "refusing to clean 2 remote folders without asking" in line and "-f" in line
    assert all((folder / "aiida.out").exists() for _, folder in found)


def test_cleanworkdir_asks_on_a_terminal(fresh: tuple[Path, list[tuple[int, Path]]]) -> None:
    import pty

    db, found = fresh
    (first, first_dir), (second, second_dir) = found
    for answer, pk, folder in ((b"n\n", first, first_dir), (b"y\n", second, second_dir)):
        controller, terminal = pty.openpty()
        try:
            os.write(controller, answer)  # typed ahead: the terminal keeps it for the question
            env = python_env()
            env.pop("MINIENGINE_DB", None)
            command = ["calcjob", "cleanworkdir", str(pk), "--db", str(db)]
            completed = subprocess.run(
                [sys.executable, "-m", "miniengine", *command],
                stdin=terminal,
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                timeout=120,
                check=False,
            )
        finally:
            os.close(terminal)
            os.close(controller)
        assert "Are you sure you want to clean the work directory of 1 calcjobs? [y/N]" in (
            completed.stdout
        )
        if answer == b"n\n":
            assert completed.returncode == 1 and "aborted: nothing cleaned" in completed.stdout
            assert folder.exists()
        else:
            assert completed.returncode == 0, completed.stderr
            assert "1 remote folder cleaned on localhost" in completed.stdout
            assert not folder.exists()


def test_cleanworkdir_selects_by_age_when_no_calcjob_is_named(
    fresh: tuple[Path, list[tuple[int, Path]]],
) -> None:
    db, found = fresh
    assert "give the CalcJobs to clean" in cli("calcjob", "cleanworkdir", "-f", db=db).failed()
    none = cli("calcjob", "cleanworkdir", "--older-than", "1", "-f", db=db).failed()
    assert "no terminated calcjobs with a remote working folder match" in none
    assert all(folder.exists() for _, folder in found)
    other = cli("calcjob", "cleanworkdir", "-p", "1", "-Y", "elsewhere", "-f", db=db).failed()
    assert "no terminated calcjobs" in other
    out = cli("calcjob", "cleanworkdir", "--past-days", "1", "-f", db=db).ok()
    assert out == "2 remote folders cleaned on localhost\n"
    assert not any(folder.exists() for _, folder in found)


def test_cleanworkdir_refuses_an_active_calcjob(jobs: Jobs) -> None:
    line = cli("calcjob", "cleanworkdir", str(jobs.waiting), str(jobs.add), "-f", db=jobs.db)
    assert f"calcjob {jobs.waiting} is still active" in line.failed()
    assert Path(jobs.workdir).exists()  # nothing was cleaned, not even the finished one


# process show / process list ---------------------------------------------------------------------


def test_process_show_of_a_calcjob_shows_its_job(jobs: Jobs) -> None:
    text = cli("process", "show", str(jobs.add), db=jobs.db).ok()
    lines = dict(line.split(None, 1) for line in text.splitlines() if line.startswith(("job",)))
    assert lines["job"].split()[0] == "id" and lines["job"].split()[1].isdigit()
    assert "scheduler state  done" in text
    assert f"remote folder    {jobs.workdir}" in text
    assert "stage            parsing" in text
    assert "computer         [1] localhost" in text
    shown = json.loads(cli("process", "show", str(jobs.add), "--json", db=jobs.db).ok())
    assert shown["calcjob"]["computer"] == "localhost"
    assert shown["calcjob"]["remote_workdir"] == jobs.workdir
    assert shown["calcjob"]["scheduler_state"] == "done"
    assert shown["calcjob"]["job_id"].isdigit()
    assert "calcjob" not in json.loads(
        cli("process", "show", str(jobs.function), "--json", db=jobs.db).ok()
    )


@pytest.mark.parametrize("jobs", ["sqlite"], indirect=True)  # the sqlite reader's imports
def test_read_only_commands_import_no_event_loop_machinery(jobs: Jobs) -> None:
    probe = (
        "import contextlib, io, json, sys\n"
        "from miniengine.__main__ import main\n"
        f"pk = '{jobs.add}'\n"
        "for args in (['calcjob', 'inputls', pk], ['calcjob', 'inputcat', pk],\n"
        "             ['calcjob', 'outputls', pk], ['calcjob', 'outputcat', pk],\n"
        "             ['process', 'show', pk], ['process', 'list', '--all']):\n"
        "    with contextlib.redirect_stdout(io.TextIOWrapper(io.BytesIO())):\n"
        f"        assert main([*args, '--db', {str(jobs.db)!r}]) == 0\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "    ('asyncio', 'anyio', 'aiosqlite') or m.startswith(('miniengine.runtime', "
        "'miniengine.transports')))))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        env=python_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []


def test_an_active_calcjob_on_a_daemon(tmp_path: Path) -> None:
    """While the job is with its scheduler: ``process show`` has its job id and scheduler
    state, ``process list`` its stage (also once paused), ``cleanworkdir`` refuses it; once it
    ended, ``cleanworkdir`` removes its folder."""
    db = tmp_path / "daemon.sqlite"
    gate = tmp_path / "gate"
    counter = tmp_path / "counter"
    previous = _set_db(db)
    try:
        code = local_bash(tmp_path)
        with DaemonGuard(db) as daemon:
            daemon.start("--workers", "1")
            node = submit(
                ArithmeticAddCalculation,
                code=code,
                x=Int(5),
                y=Int(6),
                gate=Str(str(gate)),
                counter=Str(str(counter)),
                metadata=OPTIONS,
            )
            wait_until(lambda: load_node(node.pk).get_state() == "withscheduler", TIMEOUT, "job")
            wait_until(counter.exists, TIMEOUT, "the program to start")
            # the watcher records that the job runs, on the node and in what list shows
            running = "Monitoring scheduler: job state running"
            wait_until(lambda: load_node(node.pk).process_status == running, TIMEOUT, "running")
            assert load_node(node.pk).get_scheduler_state() is JobState.RUNNING
            job = load_node(node.pk)
            workdir = Path(job.get_remote_workdir())
            pk = str(node.pk)

            shown = json.loads(cli("process", "show", pk, "--json", db=db).ok())["calcjob"]
            assert shown["stage"] == "withscheduler"
            assert shown["job_id"] == job.get_job_id()
            assert shown["scheduler_state"] is not None
            assert shown["remote_workdir"] == str(workdir)
            listed = cli("process", "list", db=db).ok()
            assert "job state running" in listed

            line = cli("calcjob", "cleanworkdir", pk, "-f", db=db).failed()
            assert f"calcjob {pk} is still active" in line
            assert (workdir / "aiida.in").exists()
            # the program runs in the working folder: remotecat sees it while it runs
            assert cli("calcjob", "remotecat", pk, "aiida.in", db=db).ok() == "5 6\n"

            cli("process", "pause", pk, db=db).ok()
            wait_until(lambda: load_node(node.pk).paused, TIMEOUT, "the pause")
            row = next(
                line for line in cli("process", "list", db=db).ok().splitlines() if pk in line
            )
            assert "withscheduler: " in row, row
            cli("process", "play", pk, db=db).ok()

            gate.touch()
            await_node(node, timeout=TIMEOUT)
            assert load_node(node.pk).is_finished_ok
        out = cli("calcjob", "cleanworkdir", pk, "-f", db=db).ok()
        assert out == "1 remote folder cleaned on localhost\n"
        assert not workdir.exists()
    finally:
        _restore_db(previous)
