"""``miniengine computer ...`` and ``miniengine code ...`` run as real subprocesses.

``computer test`` runs against this machine (``core.local``) and a private OpenSSH server on a
free loopback port (``core.ssh``), so every check it prints talks to a real transport.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from miniengine import load_code, load_computer
from miniengine.storage.store import close_all_stores
from tests.services.sshd import SshServer, running_sshd
from tests.test_cli import cli

pytestmark = [
    pytest.mark.backends,
    pytest.mark.long_on(
        "postgresql",
        reason="half a minute of subprocesses; test_computers and test_codes cover the computers "
        "and codes of a PostgreSQL database by default",
    ),
]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def setup_localhost(db: Path | str, workdir: Path, label: str = "lh") -> None:
    cli(
        "computer",
        "setup",
        "--label",
        label,
        "--hostname",
        "localhost",
        "--work-dir",
        str(workdir),
        "--non-interactive",
        db=db,
    ).ok()
    cli("computer", "configure", "core.local", label, "--no-use-login-shell", db=db).ok()


def test_setup_takes_every_field_as_a_flag(tmp_path: Path, miniengine_db: Path | str) -> None:
    db = miniengine_db
    out = cli(
        "computer",
        "setup",
        "-L",
        "cluster",
        "-H",
        "login.example.org",
        "-D",
        "the cluster",
        "-T",
        "core.ssh",
        "-S",
        "core.slurm",
        "-w",
        "/scratch/{username}/me",
        "--mpirun-command",
        "srun -n {tot_num_mpiprocs}",
        "--mpiprocs-per-machine",
        "32",
        "--default-memory-per-machine",
        "1000000",
        "--shebang",
        "#!/bin/sh",
        "--prepend-text",
        "module load a",
        "--append-text",
        "echo end",
        "--use-double-quotes",
        "-n",
        db=db,
    ).ok()
    assert "stored computer 'cluster'" in out
    assert "miniengine computer configure core.ssh cluster" in out
    os.environ["MINIENGINE_DB"] = str(db)
    try:
        computer = load_computer("cluster")
        assert (computer.hostname, computer.description) == ("login.example.org", "the cluster")
        assert (computer.transport_type, computer.scheduler_type) == ("core.ssh", "core.slurm")
        assert computer.get_workdir() == "/scratch/{username}/me"
        assert computer.get_mpirun_command() == ["srun", "-n", "{tot_num_mpiprocs}"]
        assert computer.get_default_mpiprocs_per_machine() == 32
        assert computer.get_default_memory_per_machine() == 1_000_000
        assert computer.get_shebang() == "#!/bin/sh"
        assert (computer.get_prepend_text(), computer.get_append_text()) == (
            "module load a",
            "echo end",
        )
        assert computer.get_use_double_quotes() is True
        assert not computer.is_configured
    finally:
        close_all_stores()
        os.environ.pop("MINIENGINE_DB", None)

    shown = json.loads(cli("computer", "show", "cluster", "--json", db=db).ok())
    assert shown["label"] == "cluster" and shown["configured"] is False
    listed = cli("computer", "list", db=db).ok()
    assert "cluster" in listed and "core.slurm" in listed and "no" in listed


def test_configure_ssh_records_the_settings_given(
    tmp_path: Path, miniengine_db: Path | str
) -> None:
    db = miniengine_db
    cli("computer", "setup", "-L", "remote", "-H", "example.org", "-T", "core.ssh", db=db).ok()
    cli(
        "computer",
        "configure",
        "core.ssh",
        "remote",
        "--username",
        "alice",
        "--port",
        "2222",
        "--no-look-for-keys",
        "--key-filename",
        "/keys/id",
        "--safe-interval",
        "0.5",
        "--non-interactive",
        db=db,
    ).ok()
    shown = json.loads(cli("computer", "show", "remote", "--json", db=db).ok())
    assert shown["configuration"] == {
        "username": "alice",
        "port": 2222,
        "look_for_keys": False,
        "key_filename": "/keys/id",
        "safe_interval": 0.5,
    }
    text = cli("computer", "show", "remote", db=db).ok()
    assert "  username" in text and "alice" in text
    helped = cli("computer", "configure", "core.ssh", "--help", db=None)
    assert helped.returncode == 0 and "--proxy-command" in helped.stdout


def test_errors_are_one_line(tmp_path: Path, miniengine_db: Path | str) -> None:
    db = miniengine_db
    cli("computer", "setup", "-L", "a", "-H", "h", db=db).ok()
    assert "exists already" in cli("computer", "setup", "-L", "a", "-H", "h", db=db).failed()
    assert (
        "core.telnet"
        in cli("computer", "setup", "-L", "b", "-H", "h", "-T", "core.telnet", db=db).failed()
    )
    assert "absolute" in cli("computer", "setup", "-L", "c", "-H", "h", "-w", "rel", db=db).failed()
    assert "no computer" in cli("computer", "show", "nope", db=db).failed()
    assert "core.ssh" in cli("computer", "configure", "core.ssh", "a", db=db).failed()
    cli("computer", "setup", "-L", "s", "-H", "h", "-T", "core.ssh", db=db).ok()
    assert "port" in cli("computer", "configure", "core.ssh", "s", "--port", "0", db=db).failed()
    assert "is not configured" in cli("computer", "test", "s", db=db).failed()
    assert "no database" in cli("computer", "list", db=tmp_path / "missing.sqlite").failed()


def test_computer_test_on_localhost_prints_each_check(
    tmp_path: Path, miniengine_db: Path | str
) -> None:
    db = miniengine_db
    workdir = tmp_path / "work" / "{username}"
    setup_localhost(db, workdir)
    out = cli("computer", "test", "lh", db=db).ok()
    lines = out.splitlines()
    assert lines[0].startswith("testing computer 'lh'")
    assert [line.split(":")[0] for line in lines[1:5]] == [
        "[ OK ] open the transport",
        "[ OK ] whoami",
        "[ OK ] work folder",
        "[ OK ] scheduler",
    ]
    assert lines[-1] == "all checks passed"
    user = lines[2].rsplit(" ", 1)[-1]
    assert (tmp_path / "work" / user).is_dir()  # {username} replaced, folder created
    assert list((tmp_path / "work" / user).iterdir()) == []  # the probe file was removed


def test_computer_test_fails_on_a_work_folder_it_cannot_write(
    tmp_path: Path, miniengine_db: Path | str
) -> None:
    db = miniengine_db
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    setup_localhost(db, blocker / "work")
    completed = cli("computer", "test", "lh", db=db)
    assert completed.returncode == 1
    assert "[FAIL] work folder: cannot create or write" in completed.stdout
    assert "[ OK ] scheduler" in completed.stdout
    assert completed.stdout.splitlines()[-1] == "1 check(s) failed"


def test_computer_test_over_ssh_against_a_real_sshd(
    sshd: SshServer, tmp_path: Path, miniengine_db: Path | str
) -> None:
    db = miniengine_db
    cli(
        "computer",
        "setup",
        "-L",
        "ssh-local",
        "-H",
        sshd.host,
        "-T",
        "core.ssh",
        "-w",
        str(tmp_path / "ssh-work" / "{username}"),
        db=db,
    ).ok()
    params = sshd.transport_params()
    cli(
        "computer",
        "configure",
        "core.ssh",
        "ssh-local",
        "--username",
        str(params["username"]),
        "--port",
        str(params["port"]),
        "--key-filename",
        str(params["key_filename"]),
        "--known-hosts",
        str(params["known_hosts"]),
        "--no-look-for-keys",
        "--no-allow-agent",
        "--no-use-login-shell",
        "--safe-interval",
        "0",
        db=db,
    ).ok()
    out = cli("computer", "test", "ssh-local", db=db).ok()
    assert f"[ OK ] open the transport: core.ssh({sshd.username}@{sshd.host}:{sshd.port})" in out
    assert f"[ OK ] whoami: the remote user is {sshd.username}" in out
    assert "[ OK ] work folder" in out and "[ OK ] scheduler: core.direct" in out
    assert (tmp_path / "ssh-work" / sshd.username).is_dir()

    # a wrong port: the connection check fails and the others are not attempted
    cli("computer", "configure", "core.ssh", "ssh-local", "--port", "1", db=db).ok()
    completed = cli("computer", "test", "ssh-local", db=db)
    assert completed.returncode == 1
    assert "[FAIL] open the transport" in completed.stdout
    assert "whoami" not in completed.stdout


def test_code_create_list_show(tmp_path: Path, miniengine_db: Path | str) -> None:
    db = miniengine_db
    setup_localhost(db, tmp_path / "work")
    out = cli(
        "code",
        "create",
        "core.code.installed",
        "--computer",
        "lh",
        "--filepath-executable",
        "/bin/echo",
        "--label",
        "echo",
        "--default-calc-job-plugin",
        "core.arithmetic.add",
        "--prepend-text",
        "export X=1",
        "--with-mpi",
        db=db,
    ).ok()
    assert "stored code 'echo@lh'" in out
    files = tmp_path / "files"
    files.mkdir()
    (files / "run.sh").write_text("#!/bin/sh\n")
    cli(
        "code",
        "create",
        "core.code.portable",
        "--filepath-files",
        str(files),
        "--filepath-executable",
        "run.sh",
        "--label",
        "portable",
        db=db,
    ).ok()
    listed = cli("code", "list", db=db).ok()
    assert "echo@lh" in listed and "portable" in listed and "core.code.portable" in listed
    shown = json.loads(cli("code", "show", "echo@lh", "--json", db=db).ok())
    assert shown["filepath_executable"] == "/bin/echo" and shown["with_mpi"] is True
    assert shown["computer"] == "lh" and shown["prepend_text"] == "export X=1"
    os.environ["MINIENGINE_DB"] = str(db)
    try:
        assert load_code("portable").base.repository.get_object_content("run.sh") == "#!/bin/sh\n"
        assert str(load_code("echo@lh").get_executable()) == "/bin/echo"
    finally:
        close_all_stores()
        os.environ.pop("MINIENGINE_DB", None)

    again = cli(
        "code",
        "create",
        "core.code.installed",
        "--computer",
        "lh",
        "--filepath-executable",
        "/bin/echo",
        "--label",
        "echo",
        db=db,
    ).failed()
    assert "exists already" in again
    relative = cli(
        "code",
        "create",
        "core.code.installed",
        "--computer",
        "lh",
        "--filepath-executable",
        "echo",
        "--label",
        "e2",
        db=db,
    ).failed()
    assert "absolute" in relative
    assert "no code" in cli("code", "show", "missing", db=db).failed()


def test_computer_delete_is_refused_while_a_code_uses_it(
    tmp_path: Path, miniengine_db: Path | str
) -> None:
    db = miniengine_db
    setup_localhost(db, tmp_path / "work")
    setup_localhost(db, tmp_path / "work2", label="spare")
    cli(
        "code",
        "create",
        "core.code.installed",
        "--computer",
        "lh",
        "--filepath-executable",
        "/bin/true",
        "--label",
        "t",
        db=db,
    ).ok()
    refused = cli("computer", "delete", "lh", db=db).failed()
    assert "used by 1 core.code.installed" in refused
    assert "deleted computer 'spare'" in cli("computer", "delete", "spare", db=db).ok()
    listed = json.loads(cli("computer", "list", "--json", db=db).ok())
    assert [computer["label"] for computer in listed] == ["lh"]
