"""Computers: stored in their own table, configured, loaded by label/pk/uuid, used by nodes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from miniengine import (
    Computer,
    InstalledCode,
    NotExistent,
    RemoteData,
    ValidationError,
    load_computer,
)
from miniengine.exceptions import MiniengineError
from miniengine.runtime.computers import ComputerNotConfiguredError, localhost_computer
from miniengine.schedulers.direct import DirectScheduler
from miniengine.schedulers.slurm import SlurmScheduler
from miniengine.storage.computer_rows import ComputerInUseError
from miniengine.storage.schema import SCHEMA_VERSION
from miniengine.storage.store import close_all_stores
from miniengine.transports.local import LocalTransport
from miniengine.transports.ssh import SshTransport
from tests.services import sql
from tests.workchains.daemon_chains import python_env

pytestmark = pytest.mark.backends


def computers_in(db: Path | str) -> int:
    """The computers stored in ``db`` (0 while no store has created its schema)."""
    if isinstance(db, Path) and not db.exists():
        return 0
    try:
        return sql.count(db, "SELECT count(*) FROM computers")
    except sql.errors(db):
        return 0


def test_a_stored_computer_is_read_back_by_another_process(miniengine_db: Path) -> None:
    computer = Computer(
        "cluster",
        "login.example.org",
        description="the big one",
        transport_type="core.ssh",
        scheduler_type="core.slurm",
        workdir="/scratch/{username}/jobs/",
        mpirun_command="srun -n {tot_num_mpiprocs}",
        default_mpiprocs_per_machine=48,
        default_memory_per_machine=256_000_000,
        shebang="#!/bin/bash -l",
        prepend_text="module load x",
        append_text="echo done",
        use_double_quotes=True,
    ).store()
    computer.configure(username="alice", port=2222, key_filename="/home/alice/.ssh/id")
    computer.set_minimum_job_poll_interval(2.5)
    close_all_stores()
    probe = (
        "import json\n"
        "from miniengine import load_computer\n"
        "c = load_computer('cluster')\n"
        "print(json.dumps([c.pk, c.uuid, c.hostname, c.description, c.transport_type,\n"
        "    c.scheduler_type, c.get_workdir(), c.get_mpirun_command(),\n"
        "    c.get_default_mpiprocs_per_machine(), c.get_default_memory_per_machine(),\n"
        "    c.get_shebang(), c.get_prepend_text(), c.get_append_text(),\n"
        "    c.get_use_double_quotes(), c.get_minimum_job_poll_interval(),\n"
        "    c.get_configuration(), c.is_configured, str(c.get_transport()),\n"
        "    type(c.get_scheduler()).__name__]))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        env=python_env(miniengine_db),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(completed.stdout) == [
        computer.pk,
        computer.uuid,
        "login.example.org",
        "the big one",
        "core.ssh",
        "core.slurm",
        "/scratch/{username}/jobs/",
        ["srun", "-n", "{tot_num_mpiprocs}"],
        48,
        256_000_000,
        "#!/bin/bash -l",
        "module load x",
        "echo done",
        True,
        2.5,
        {"username": "alice", "port": 2222, "key_filename": "/home/alice/.ssh/id"},
        True,
        "core.ssh(alice@login.example.org:2222)",
        "SlurmScheduler",
    ]


@pytest.mark.sqlite_only(reason="reads the sqlite file's user_version and table_info")
def test_the_schema_has_a_computers_table_and_nodes_refer_to_computers(
    miniengine_db: Path,
) -> None:
    Computer("c", "h").store()
    with sqlite3.connect(miniengine_db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in connection.execute("PRAGMA table_info(nodes)")}
    assert "computer_pk" in columns


def test_a_taken_label_is_refused_and_nothing_is_stored(miniengine_db: Path) -> None:
    Computer("same", "a").store()
    with pytest.raises(ValidationError, match="'same' exists already"):
        Computer("same", "b").store()
    assert computers_in(miniengine_db) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"transport_type": "core.telnet"}, ValidationError, "core.telnet"),
        ({"scheduler_type": "core.pbs"}, ValidationError, "core.pbs"),
        ({"workdir": "relative/{username}"}, ValidationError, "absolute"),
        ({"workdir": "/scratch/{user}"}, ValidationError, "username"),
        ({"mpirun_command": "mpirun -np {nprocs}"}, ValidationError, "nprocs"),
        ({"mpirun_command": 3}, TypeError, "mpirun_command"),
        ({"default_mpiprocs_per_machine": 0}, ValidationError, "positive"),
        ({"default_mpiprocs_per_machine": "2"}, TypeError, "default_mpiprocs_per_machine"),
        ({"shebang": "bin/bash"}, ValidationError, "shebang"),
        ({"use_double_quotes": "yes"}, TypeError, "use_double_quotes"),
        ({"hostname": ""}, ValidationError, "hostname"),
    ],
)
def test_bad_fields_are_refused_by_name_before_anything_is_stored(
    miniengine_db: Path, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    arguments: dict[str, object] = {"label": "bad", "hostname": "h", **kwargs}
    with pytest.raises(error, match=match) as raised:
        Computer(**arguments).store()  # type: ignore[arg-type]
    assert isinstance(raised.value, MiniengineError)
    assert computers_in(miniengine_db) == 0


def test_configure_is_checked_by_the_transport_plugin(miniengine_db: Path) -> None:
    computer = Computer("remote", "example.org", transport_type="core.ssh").store()
    with pytest.raises(ValidationError, match="no setting 'colour'"):
        computer.configure(colour="blue")
    with pytest.raises(ValidationError, match="port"):
        computer.configure(port=70000)
    with pytest.raises(ValidationError, match=r"'port'.*int"):
        computer.configure(port="22")
    assert not load_computer("remote").is_configured
    computer.configure(username="bob", look_for_keys=False)
    assert load_computer("remote").get_configuration() == {
        "username": "bob",
        "look_for_keys": False,
    }


def test_get_transport_needs_a_configuration_and_builds_the_plugin(miniengine_db: Path) -> None:
    local = Computer("local", "localhost").store()
    with pytest.raises(ComputerNotConfiguredError, match=r"computer configure core\.local local"):
        local.get_transport()
    assert isinstance(ComputerNotConfiguredError("x"), NotExistent)
    local.configure(use_login_shell=False)
    transport = load_computer("local").get_transport()
    assert isinstance(transport, LocalTransport)
    assert not transport.is_open
    assert transport.params["use_login_shell"] is False
    assert isinstance(local.get_scheduler(), DirectScheduler)

    remote = Computer(
        "remote", "example.org", transport_type="core.ssh", scheduler_type="core.slurm"
    ).store()
    remote.configure(username="carol", port=2200, safe_interval=0.5)
    ssh = load_computer("remote").get_transport()
    assert isinstance(ssh, SshTransport)
    assert (ssh.machine, ssh.params["username"], ssh.params["port"], ssh.safe_interval) == (
        "example.org",
        "carol",
        2200,
        0.5,
    )
    assert isinstance(remote.get_scheduler(), SlurmScheduler)


def test_an_unstored_computer_keeps_its_configuration_until_stored(miniengine_db: Path) -> None:
    computer = Computer("later", "localhost")
    computer.configure(safe_interval=1.0)
    computer.store()
    assert load_computer("later").get_configuration() == {"safe_interval": 1.0}


def test_load_computer_by_label_pk_uuid_and_prefix(miniengine_db: Path) -> None:
    first = Computer("first", "a").store()
    second = Computer("2", "b").store()  # a label of digits: a pk wins when one matches
    assert load_computer("first") == first
    assert load_computer(first.pk) == first
    assert load_computer(pk=second.pk) == second
    assert load_computer(uuid=second.uuid).label == "2"
    assert load_computer(label="2") == second
    assert load_computer(str(first.pk)) == first
    with pytest.raises(NotExistent, match="nothing-like-this"):
        load_computer("nothing-like-this")
    with pytest.raises(NotExistent):
        load_computer(pk=99)
    with pytest.raises(ValueError, match="exactly one"):
        load_computer()
    with pytest.raises(TypeError):
        load_computer(1.5)  # type: ignore[arg-type]


def test_a_uuid_prefix_loads_the_computer(miniengine_db: Path) -> None:
    computer = Computer("prefixed", "a").store()
    assert load_computer(computer.uuid[:13]) == computer
    with pytest.raises(NotExistent):
        load_computer("ffffffff-ffff")


def test_the_collection_lists_gets_and_creates(miniengine_db: Path) -> None:
    a = Computer("a", "h").store()
    b = Computer("b", "h").store()
    assert Computer.collection.all() == [a, b]
    assert Computer.collection.get(label="b") == b
    assert Computer.collection.get(pk=a.pk) == a
    assert Computer.collection.get(uuid=a.uuid) == a
    with pytest.raises(NotExistent):
        Computer.collection.get(label="c")
    created, c = Computer.collection.get_or_create("c", hostname="h3")
    again, same = Computer.collection.get_or_create("c", hostname="ignored")
    assert (created, again, same, same.hostname) == (True, False, c, "h3")


def test_setters_of_a_stored_computer_are_written_through(miniengine_db: Path) -> None:
    computer = Computer("edit", "old.example.org").store()
    computer.hostname = "new.example.org"
    computer.description = "moved"
    computer.set_workdir("/work/{username}")
    computer.set_mpirun_command(["mpiexec", "-n", "{tot_num_mpiprocs}"])
    computer.set_prepend_text("set -e")
    loaded = load_computer("edit")
    assert (loaded.hostname, loaded.description, loaded.get_workdir()) == (
        "new.example.org",
        "moved",
        "/work/{username}",
    )
    assert loaded.get_mpirun_command() == ["mpiexec", "-n", "{tot_num_mpiprocs}"]
    assert loaded.get_prepend_text() == "set -e"
    with pytest.raises(ValidationError):
        computer.set_workdir("not/absolute")
    assert load_computer("edit").get_workdir() == "/work/{username}"
    Computer("other", "h").store()
    with pytest.raises(ValidationError, match="exists already"):
        computer.label = "other"
    assert computer.label == "edit"


def test_delete_is_refused_while_a_code_uses_the_computer(miniengine_db: Path) -> None:
    used = Computer("used", "h").store()
    free = Computer("free", "h").store()
    InstalledCode(computer=used, filepath_executable="/bin/true", label="t").store()
    with pytest.raises(ComputerInUseError, match=r"1 core\.code\.installed"):
        Computer.collection.delete(used.pk)  # type: ignore[arg-type]
    only_remote = Computer("remote-only", "h").store()
    RemoteData(remote_path="/scratch/job", computer=only_remote).store()
    with pytest.raises(ComputerInUseError, match=r"1 core\.remote"):
        Computer.collection.delete(only_remote.pk)  # type: ignore[arg-type]
    Computer.collection.delete(free.pk)  # type: ignore[arg-type]
    assert [c.label for c in Computer.collection.all()] == ["used", "remote-only"]


async def test_localhost_in_one_call_runs_commands_in_its_workdir(
    miniengine_db: Path, tmp_path: Path
) -> None:
    computer = localhost_computer(tmp_path / "work")
    assert localhost_computer(tmp_path / "elsewhere") == computer  # stored once
    assert computer.is_configured and computer.transport_type == "core.local"
    async with computer.get_transport() as transport:
        await transport.makedirs(computer.get_workdir(), ignore_existing=True)
        result = await transport.exec_command_wait("pwd", workdir=computer.get_workdir())
    assert result.stdout.strip() == str(tmp_path / "work")


def test_a_stored_computer_in_a_checkpoint_is_named_by_its_uuid(
    miniengine_db: Path, tmp_path: Path
) -> None:
    from miniengine.core import codec
    from miniengine.exceptions import CheckpointError

    computer = Computer("in-ctx", "host.example").store()
    blob = codec.encode({"ctx": {"computer": computer}})
    assert computer.uuid.encode() in blob and b"host.example" not in blob
    assert codec.decode(blob)["ctx"]["computer"].hostname == "host.example"
    with pytest.raises(CheckpointError, match="not stored"):
        codec.check_encodable({"computer": Computer("unstored", "h")})
    (tmp_path / "checkpoint.bin").write_bytes(blob)
    close_all_stores()
    # a fresh interpreter decodes it as the runtime reads a checkpoint (every type registered)
    probe = (
        "from pathlib import Path\n"
        "from miniengine.runtime.registry import decode\n"
        f"state = decode(Path({str(tmp_path / 'checkpoint.bin')!r}).read_bytes())\n"
        "c = state['ctx']['computer']\n"
        "print(type(c).__name__, c.label, c.hostname, c.pk)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        env=python_env(miniengine_db),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert completed.stdout.split() == ["Computer", "in-ctx", "host.example", str(computer.pk)]


def test_get_authinfo_is_a_view_of_the_configuration(miniengine_db: Path) -> None:
    computer = Computer("auth", "localhost").store()
    with pytest.raises(NotExistent):
        computer.get_authinfo()
    computer.configure(safe_interval=2.0)
    authinfo = load_computer("auth").get_authinfo()
    assert authinfo.get_auth_params() == {"safe_interval": 2.0}
    assert authinfo.get_transport().safe_interval == 2.0
    assert authinfo.computer.label == "auth" and authinfo.enabled


@pytest.mark.sqlite_only(reason="upgrades a sqlite file of schema version 5")
def test_a_database_of_schema_5_gains_computers_and_keeps_its_nodes(tmp_path: Path) -> None:
    from miniengine.storage.schema import APPLICATION_ID, MIGRATIONS, split_statements
    from miniengine.storage.store import Store

    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as connection:
        for version in range(5):
            for statement in split_statements(MIGRATIONS[version]):
                connection.execute(statement)
        connection.execute(
            "INSERT INTO nodes (uuid, node_type, attributes, ctime, mtime) "
            "VALUES ('0190a000-0000-7000-8000-000000000001', 'core.int', X'05', 0, 0)"
        )
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("PRAGMA user_version = 5")
    connection.close()
    store = Store(db)
    try:
        computer = Computer("after-migration", "h").store(store)
        code = InstalledCode(computer=computer, filepath_executable="/bin/true", label="t")
        assert load_computer("after-migration", db=store) == computer
    finally:
        store.close()
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("SELECT node_type, computer_pk FROM nodes").fetchall() == [
            ("core.int", None)
        ]
    assert not code.is_stored
