"""The operator's commands (issue 6): ``python -m miniengine process ...`` and ``... db ...``.

Every command runs as a subprocess against a real database filled by running real processes
(the seed's scenario 1, a nested WorkChain, a calcfunction that raises, a WorkChain that returns
an exit code, a submitted process that is paused and one that is killed), and the texts, JSON
and exit codes it prints are checked.  The daemon test starts a real daemon.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from miniengine import ExitCode, Int, WorkChain, calcfunction, find_processes, run, workfunction
from miniengine.storage.open import close_all_backends
from miniengine.storage.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from miniengine.storage.store import close_all_stores
from tests.workchains.daemon_chains import (
    ROOT,
    AddWorkChain,
    DaemonGuard,
    NestedWorkChain,
    python_env,
    wait_until,
)

# the processes ---------------------------------------------------------------------------------


# the seed's scenario 1
@calcfunction
def add(x: Int, y: Int) -> Int:
    return Int(x + y)


@calcfunction
def multiply(x: Int, y: Int) -> Int:
    return Int(x * y)


@workfunction
def add_and_multiply(x: Int, y: Int, z: Int) -> Int:
    return multiply(add(x, y), z)


@calcfunction
def explode(x: Int) -> Int:
    raise ValueError(f"boom: x is {x.value}")


class TooSmallWorkChain(WorkChain):
    """Reports, then stops with its exit code 300."""

    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.exit_code(300, "ERROR_TOO_SMALL", message="the input is too small")
        spec.outline(cls.check_input)

    def check_input(self) -> ExitCode:
        self.report(f"checking x = {self.inputs.x.value}")
        return self.exit_codes.ERROR_TOO_SMALL  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Filled:
    """The database and the pks of what was run into it."""

    db: Path | str
    workfunction: int
    add: int
    multiply: int
    nested: tuple[int, int, int]  # inp=2, its child, its grandchild
    excepted: int
    too_small: int
    paused: int
    killed: int
    result: int  # the output `result` of the workfunction (9)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Filled:
    """One database of each backend filled once for the module's read-only commands (a test
    that needs the sqlite file itself narrows it with an indirect ``filled`` parameter)."""
    db: Path | str = tmp_path_factory.mktemp("cli") / "engine.sqlite"
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        db = server.create_database()
        name = db.rsplit("/", 1)[1]
        request.addfinalizer(lambda: server.drop_database(name))
    previous = os.environ.get("MINIENGINE_DB")
    os.environ["MINIENGINE_DB"] = str(db)
    try:
        from miniengine import submit
        from miniengine.control import kill, pause

        result, workfunction_node = run.get_node(add_and_multiply, 1, 2, 3)
        assert result == 9
        add_node, multiply_node = workfunction_node.called
        outputs, nested = run.get_node(NestedWorkChain, inp=Int(2))
        assert outputs["output"] == 2
        child = nested.called[0]
        grandchild = child.called[0]
        with pytest.raises(ValueError, match="boom"):
            run(explode, 7)
        (excepted,) = find_processes(state="excepted", process_label="explode")
        _, too_small = run.get_node(TooSmallWorkChain, x=Int(1))
        assert too_small.exit_status == 300
        paused = submit(AddWorkChain, x=Int(1), y=Int(2))
        pause(paused)
        killed = submit(AddWorkChain, x=Int(3), y=Int(4))
        kill(killed, "no longer needed")
        filled = Filled(
            db=db,
            workfunction=workfunction_node.pk,
            add=add_node.pk,
            multiply=multiply_node.pk,
            nested=(nested.pk, child.pk, grandchild.pk),
            excepted=excepted.pk,  # type: ignore[arg-type]
            too_small=too_small.pk,  # type: ignore[arg-type]
            paused=paused.pk,  # type: ignore[arg-type]
            killed=killed.pk,  # type: ignore[arg-type]
            result=workfunction_node.outputs.result.pk,
        )
    finally:
        close_all_stores()  # the file is complete (its log checkpointed) and can be copied
        close_all_backends()
        if previous is None:
            os.environ.pop("MINIENGINE_DB", None)
        else:
            os.environ["MINIENGINE_DB"] = previous
    return filled


def cli(*args: str, db: Path | str | None = None, env: dict[str, str] | None = None) -> Completed:
    """``python -m miniengine ARGS [--db DB]`` in a fresh interpreter."""
    command = [sys.executable, "-m", "miniengine", *args]
    if db is not None:
        command += ["--db", str(db)]
    if env is None:
        env = python_env()
        env.pop("MINIENGINE_DB", None)
    completed = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False
    )
    return Completed(completed.returncode, completed.stdout, completed.stderr)


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str

    def ok(self) -> str:
        assert self.returncode == 0, f"exit {self.returncode}: {self.stderr}"
        assert self.stderr == ""
        return self.stdout

    def failed(self) -> str:
        """The one line on stderr of a command that failed with exit status 1."""
        assert self.returncode == 1, (self.returncode, self.stdout, self.stderr)
        assert "Traceback" not in self.stderr
        assert self.stderr.endswith("\n") and self.stderr.count("\n") == 1, self.stderr
        return self.stderr.strip()


def copy_database(source: Path, target: Path) -> None:
    """Copy with sqlite's backup API: the file alone may lack what its write-ahead log holds."""
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as reader:
        writer = sqlite3.connect(target)
        try:
            reader.backup(writer)
        finally:
            writer.close()


def table_rows(text: str) -> list[list[str]]:
    """The rows of the first table in ``text`` (below its dashes), split on 2+ spaces."""
    lines = text.splitlines()
    start = next(index for index, line in enumerate(lines) if set(line) <= {"-", " "}) + 1
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append([cell for cell in line.strip().split("  ") if cell.strip()])
    return [[cell.strip() for cell in row] for row in rows]


# process list ----------------------------------------------------------------------------------


def test_list_shows_the_active_processes_by_default_with_paused_in_plain_words(
    filled: Filled,
) -> None:
    out = cli("process", "list", db=filled.db).ok()
    header = out.splitlines()[0].split()
    assert header == ["PK", "Age", "Label", "State", "Status"]
    rows = table_rows(out)
    assert [row[0] for row in rows] == [str(filled.paused)]
    _, age, label, state, *status = rows[0]
    assert age.endswith("s ago") or age.endswith("m ago")
    assert (label, state) == ("AddWorkChain", "Created (paused)")
    assert status and "pause" in status[0].lower()
    assert out.rstrip().endswith("Total results: 1")


def test_list_all_is_every_process_newest_first_with_states_and_exit_status(
    filled: Filled,
) -> None:
    out = cli("process", "list", "--all", db=filled.db).ok()
    rows = {int(row[0]): row for row in table_rows(out)}
    pks = [int(row[0]) for row in table_rows(out)]
    assert pks == sorted(pks, reverse=True)
    assert set(pks) == {
        filled.workfunction,
        filled.add,
        filled.multiply,
        *filled.nested,
        filled.excepted,
        filled.too_small,
        filled.paused,
        filled.killed,
    }
    assert rows[filled.workfunction][2:4] == ["add_and_multiply", "Finished [0]"]
    assert rows[filled.add][2:4] == ["add", "Finished [0]"]
    assert rows[filled.excepted][2:4] == ["explode", "Excepted"]
    assert rows[filled.too_small][2:4] == ["TooSmallWorkChain", "Finished [300]"]
    assert rows[filled.killed][2:4] == ["AddWorkChain", "Killed"]
    assert out.rstrip().endswith(f"Total results: {len(pks)}")


def test_list_json_is_one_array_of_objects_with_the_documented_keys(filled: Filled) -> None:
    out = cli("process", "list", "--all", "--json", db=filled.db).ok()
    objects = json.loads(out)
    assert isinstance(objects, list) and len(objects) == 10
    keys = {
        "pk",
        "uuid",
        "ctime",
        "process_label",
        "process_state",
        "exit_status",
        "process_status",
        "caller",
        "paused",
    }
    assert all(set(obj) == keys for obj in objects)
    by_pk = {obj["pk"]: obj for obj in objects}
    assert [obj["pk"] for obj in objects] == sorted(by_pk, reverse=True)
    add_row = by_pk[filled.add]
    assert add_row["caller"] == filled.workfunction
    assert add_row["process_state"] == "finished" and add_row["exit_status"] == 0
    assert datetime.fromisoformat(add_row["ctime"]).utcoffset() is not None
    assert by_pk[filled.workfunction]["caller"] is None
    assert by_pk[filled.nested[2]]["caller"] == filled.nested[1]
    assert by_pk[filled.paused]["paused"] is True and by_pk[filled.add]["paused"] is False
    assert by_pk[filled.too_small]["exit_status"] == 300
    assert by_pk[filled.excepted]["process_state"] == "excepted"
    assert by_pk[filled.excepted]["exit_status"] is None


@pytest.mark.parametrize("filled", ["sqlite"], indirect=True)  # copies the file
def test_list_filters_by_state_limit_and_age(filled: Filled, tmp_path: Path) -> None:
    def pks(*args: str, db: Path = filled.db) -> list[int]:
        return [
            obj["pk"] for obj in json.loads(cli("process", "list", *args, "--json", db=db).ok())
        ]

    assert pks("--state", "excepted") == [filled.excepted]
    assert pks("-S", "KILLED", "--state", "excepted") == [filled.killed, filled.excepted]
    assert pks("--all", "--state", "killed") == [filled.killed]  # --state wins over --all
    assert pks("--all", "--limit", "2") == [filled.killed, filled.paused]
    assert pks("--all", "--limit", "0") == []
    assert len(pks("--all", "--past", "1d")) == 10
    # a copy in which the workfunction and its children were created three days ago
    old = tmp_path / "old.sqlite"
    copy_database(filled.db, old)
    with sqlite3.connect(old) as connection:
        connection.execute(
            "UPDATE nodes SET ctime = ctime - 3 * 86400 WHERE pk IN (?, ?, ?)",
            (filled.workfunction, filled.add, filled.multiply),
        )
    recent = pks("--all", "--past", "2d", db=old)
    assert len(recent) == 7 and filled.add not in recent
    assert len(pks("--all", "--past", "4", db=old)) == 10  # a bare number is days
    assert pks("--past", "30m", db=old) == [filled.paused]
    assert "3d ago" in cli("process", "list", "--all", db=old).ok()


def test_list_reads_the_database_named_by_the_environment(filled: Filled) -> None:
    env = python_env(filled.db)
    out = cli("process", "list", "--json", env=env).ok()
    assert [obj["pk"] for obj in json.loads(out)] == [filled.paused]


# process show ----------------------------------------------------------------------------------


def test_show_lists_inputs_outputs_called_and_times(filled: Filled) -> None:
    out = cli("process", "show", str(filled.workfunction), db=filled.db).ok()
    properties = dict(
        (line[:15].strip(), line[15:].strip()) for line in out.split("\n\n")[0].splitlines()[2:]
    )
    assert properties["type"] == "WorkFunctionNode"
    assert properties["state"] == "Finished [0]"
    assert properties["pk"] == str(filled.workfunction)
    assert properties["process label"] == "add_and_multiply"
    assert properties["process type"].endswith("add_and_multiply")
    assert properties["ctime"].endswith("s ago)")
    blocks = {block.split()[0]: block for block in out.split("\n\n")[1:]}
    inputs = table_rows(blocks["Inputs"])
    assert [(row[0], row[2], row[3]) for row in inputs] == [
        ("x", "Int", "1"),
        ("y", "Int", "2"),
        ("z", "Int", "3"),
    ]
    assert table_rows(blocks["Outputs"]) == [["result", str(filled.result), "Int", "9"]]
    called = table_rows(blocks["Called"])
    assert [(row[1], row[2], row[3]) for row in called] == [
        (str(filled.add), "add", "Finished [0]"),
        (str(filled.multiply), "multiply", "Finished [0]"),
    ]
    assert "Caller" not in blocks and "Exception:" not in out

    child = cli("process", "show", str(filled.add), db=filled.db).ok()
    caller = table_rows(child.split("\n\n")[-2])
    assert child.split("\n\n")[-2].startswith("Caller")
    assert caller == [["CALL", str(filled.workfunction), "add_and_multiply", "Finished [0]"]]
    outputs = [block for block in child.split("\n\n") if block.startswith("Outputs")]
    assert table_rows(outputs[0])[0][0] == "result"


def test_show_json(filled: Filled) -> None:
    shown = json.loads(cli("process", "show", str(filled.add), "--json", db=filled.db).ok())
    assert shown["pk"] == filled.add and shown["type"] == "CalcFunctionNode"
    assert shown["process_state"] == "finished" and shown["exit_status"] == 0
    assert [(i["link_label"], i["type"], i["value"]) for i in shown["inputs"]] == [
        ("x", "Int", 1),
        ("y", "Int", 2),
    ]
    assert [(o["link_label"], o["value"]) for o in shown["outputs"]] == [("result", 3)]
    assert shown["caller"]["pk"] == filled.workfunction
    assert shown["called"] == [] and shown["exception"] is None
    assert datetime.fromisoformat(shown["mtime"]) >= datetime.fromisoformat(shown["ctime"])


def test_show_an_excepted_process_prints_its_exception(filled: Filled) -> None:
    out = cli("process", "show", str(filled.excepted), db=filled.db).ok()
    assert "Excepted" in out.splitlines()[3]
    exception = out.split("Exception:\n", 1)[1]
    assert "ValueError: boom: x is 7" in exception
    shown = json.loads(cli("process", "show", str(filled.excepted), "--json", db=filled.db).ok())
    assert "ValueError: boom: x is 7" in shown["exception"]


def test_show_an_exit_code_with_its_message_and_a_killed_process_with_its_reason(
    filled: Filled,
) -> None:
    out = cli("process", "show", str(filled.too_small), db=filled.db).ok()
    assert "Finished [300]" in out
    assert "the input is too small" in out
    assert "Log messages: 1" in out
    killed = json.loads(cli("process", "show", str(filled.killed), "--json", db=filled.db).ok())
    assert killed["process_state"] == "killed" and killed["exit_status"] is None
    assert "no longer needed" in (killed["process_status"] or "")


# process report and status ---------------------------------------------------------------------


def test_report_prints_the_logs_of_the_tree_indented_by_depth(filled: Filled) -> None:
    root, child, grandchild = filled.nested
    lines = cli("process", "report", str(root), db=filled.db).ok().splitlines()
    assert len(lines) == 5
    found = [(len(line) - len(line.lstrip(" ")), line.strip()) for line in lines]
    for _, text in found:
        date, time_of_day, level, origin, *_ = text.split(" ")
        datetime.fromisoformat(f"{date} {time_of_day}")
        assert level == "[REPORT]"
        assert origin.split("|")[1] == "NestedWorkChain" and origin.endswith("]:")
    expected = {
        (0, root, "Submitting nested workchain."),
        (2, child, "Submitting nested workchain."),
        (4, grandchild, "Bottom-level workchain reached."),
        (2, child, "Getting sub-workchain output."),
        (0, root, "Getting sub-workchain output."),
    }
    assert {
        (indent, int(text.split("[")[2].split("|")[0]), text.split("]: ", 1)[1])
        for indent, text in found
    } == expected
    assert "Bottom-level" in lines[2]  # in time order: down the tree, then back up

    shallow = cli("process", "report", str(root), "--max-depth", "0", db=filled.db).ok()
    assert len(shallow.splitlines()) == 2
    only_errors = cli("process", "report", str(root), "--levelname", "error", db=filled.db).ok()
    assert only_errors.strip() == "No log messages recorded for this entry"
    failed = cli("process", "report", str(filled.excepted), db=filled.db).ok()
    assert "[ERROR]" in failed and "ValueError" in failed


def test_status_prints_the_call_tree_with_states(filled: Filled) -> None:
    root, child, grandchild = filled.nested
    out = cli("process", "status", str(root), db=filled.db).ok()
    assert out.splitlines() == [
        f"NestedWorkChain<{root}> Finished [0]",
        f"`-- NestedWorkChain<{child}> Finished [0]",
        f"    `-- NestedWorkChain<{grandchild}> Finished [0]",
    ]
    out = cli("process", "status", str(filled.workfunction), db=filled.db).ok()
    assert out.splitlines() == [
        f"add_and_multiply<{filled.workfunction}> Finished [0]",
        f"|-- add<{filled.add}> Finished [0]",
        f"`-- multiply<{filled.multiply}> Finished [0]",
    ]
    one_level = cli("process", "status", str(root), "-m", "1", db=filled.db).ok()
    assert len(one_level.splitlines()) == 2
    paused = cli("process", "status", str(filled.paused), db=filled.db).ok()
    assert paused.startswith(f"AddWorkChain<{filled.paused}> Created (paused) [")


# errors and exit codes -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["show", "report", "status"])
def test_an_unknown_pk_is_one_line_on_stderr(filled: Filled, command: str) -> None:
    completed = cli("process", command, "999999", db=filled.db)
    assert completed.failed() == "error: no process with pk 999999"
    assert completed.stdout == ""


def test_a_data_node_is_not_a_process(filled: Filled) -> None:
    message = cli("process", "show", str(filled.result), db=filled.db).failed()
    assert message == f"error: node {filled.result} is not a process (its type is Int)"


def test_a_missing_database_is_reported_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nothing" / "here.sqlite"
    for args in (("process", "list"), ("process", "show", "1"), ("db", "info")):
        message = cli(*args, db=missing).failed()
        assert message == f"error: no database at {missing} (pass --db PATH or set $MINIENGINE_DB)"
    assert not missing.exists() and not missing.parent.exists()
    # the default path, under $HOME, is not created either
    env = {**python_env(), "HOME": str(tmp_path)}
    env.pop("MINIENGINE_DB", None)
    default = tmp_path / ".miniengine" / "engine.sqlite"
    assert cli("process", "list", env=env).failed().startswith(f"error: no database at {default}")
    assert not default.exists()


@pytest.mark.parametrize("filled", ["sqlite"], indirect=True)  # copies the file
def test_foreign_and_newer_files_are_refused_without_change(tmp_path: Path, filled: Filled) -> None:
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE t (x)")
    assert "not a miniengine database" in cli("process", "list", db=foreign).failed()
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some text that is long enough " * 20)
    assert "is not a sqlite database" in cli("db", "info", db=text).failed()
    newer = tmp_path / "newer.sqlite"
    copy_database(filled.db, newer)
    with sqlite3.connect(newer) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    assert "newer miniengine" in cli("process", "list", db=newer).failed()
    assert "newer miniengine" in cli("db", "migrate", db=newer).failed()


@pytest.mark.parametrize(
    "args",
    [
        ("process",),
        ("process", "list", "--past", "3x"),
        ("process", "list", "--limit", "-1"),
        ("process", "list", "--state", "sleeping"),
        ("process", "show", "twelve"),
        ("db", "backup"),
    ],
)
def test_usage_errors_exit_with_2(args: tuple[str, ...], tmp_path: Path) -> None:
    completed = cli(*args, db=tmp_path / "unused.sqlite")
    assert completed.returncode == 2, completed
    assert "usage:" in completed.stderr and "Traceback" not in completed.stderr


def test_help_lists_the_commands() -> None:
    out = cli("--help").ok()
    assert "process" in out and "db" in out and "demo" in out
    for group, commands in (("process", "list show report status"), ("db", "info migrate")):
        help_text = cli(group, "--help").ok()
        assert all(command in help_text for command in commands.split())


# db --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("filled", ["sqlite"], indirect=True)  # the file's size and rows
def test_db_info_reports_counts_schema_queue_and_daemon(filled: Filled) -> None:
    info = json.loads(cli("db", "info", "--json", db=filled.db).ok())
    assert info["path"] == str(filled.db)
    assert info["size_bytes"] == filled.db.stat().st_size > 0
    assert info["schema_version"] == info["current_schema_version"] == SCHEMA_VERSION
    assert info["process_nodes"] == 10
    assert info["processes"] == {
        "created": 1,
        "running": 0,
        "waiting": 0,
        "finished": 7,
        "excepted": 1,
        "killed": 1,
    }
    assert info["paused"] == 1
    with sqlite3.connect(filled.db) as connection:
        nodes = connection.execute("SELECT count(*) FROM nodes").fetchone()[0]
        ready = connection.execute("SELECT count(*) FROM tasks WHERE status = 'ready'").fetchone()
    assert info["nodes"] == nodes and info["data_nodes"] == nodes - 10
    assert info["queue"] == {"ready": ready[0], "leased": 0} and ready[0] >= 1  # paused's start
    assert info["daemon"] == {"running": False, "pid": None, "workers": []}
    text = cli("db", "info", db=filled.db).ok()
    assert f"database        {filled.db}" in text
    assert f"schema version  {SCHEMA_VERSION} (current)" in text
    assert "1 created, 7 finished, 1 excepted, 1 killed (1 paused)" in text
    assert "daemon          not running" in text


def test_db_info_counts_the_live_workers_of_other_hosts(backend_db: Path | str) -> None:
    """Daemons on other hosts (or workers in applications) serve a PostgreSQL database too:
    ``db info`` says so, instead of only "not running" for this host's daemon; silent workers
    do not count.  A sqlite file is served from this host only: its rows (a backup's are its
    original's workers) are not listed."""
    from miniengine.storage.open import open_backend

    store = open_backend(backend_db)
    try:
        now = time.time()
        store.broker.register_worker("worker:beta:1", 4242, 8, now, "beta")
        store.broker.register_worker("worker:gamma:2", 4343, 8, now - 3600, "gamma")  # silent
    finally:
        store.close()
    info = json.loads(cli("db", "info", "--json", db=backend_db).ok())
    assert info["daemon"]["running"] is False  # no daemon on this host
    text = cli("db", "info", db=backend_db).ok()
    if isinstance(backend_db, Path):
        assert info["live_workers"] == [] and "daemon          not running\n" in text
        return
    assert [(w["host"], w["pid"]) for w in info["live_workers"]] == [("beta", 4242)]
    assert "not running; 1 live worker(s) elsewhere, on beta" in text


def _database_at_version(path: Path, version: int) -> None:
    with sqlite3.connect(path) as connection:
        for step in range(version):
            connection.executescript(MIGRATIONS[step])
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {version}")


def test_db_migrate_reports_the_versions_and_adds_the_list_index(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    _database_at_version(db, 2)
    assert cli("process", "list", db=db).ok().rstrip().endswith("Total results: 0")
    info = cli("db", "info", db=db).ok()  # an old database is described, and told to migrate
    assert "schema version  2 (this miniengine uses" in info and "db migrate" in info
    out = cli("db", "migrate", db=db).ok()
    assert out.strip() == f"migrated {db} from schema version 2 to {SCHEMA_VERSION}"
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        plan = connection.execute(
            "EXPLAIN QUERY PLAN SELECT pk FROM nodes WHERE process_state IS NOT NULL "
            "ORDER BY ctime DESC, pk DESC LIMIT 50"
        ).fetchall()
    assert "nodes_process_ctime" in str(plan)
    again = cli("db", "migrate", db=db).ok()
    assert "nothing to migrate" in again
    assert "no database at" in cli("db", "migrate", db=tmp_path / "missing.sqlite").failed()
    assert not (tmp_path / "missing.sqlite").exists()


@pytest.mark.parametrize("filled", ["sqlite"], indirect=True)  # a sqlite backup
def test_db_backup_writes_a_checked_copy_and_refuses_to_overwrite(
    filled: Filled, tmp_path: Path
) -> None:
    target = tmp_path / "backup.sqlite"
    out = cli("db", "backup", str(target), db=filled.db).ok()
    assert out.startswith(f"backed up {filled.db} to {target}: ")
    assert f"schema version {SCHEMA_VERSION}" in out
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)
    listed = json.loads(cli("process", "list", "--all", "--json", db=target).ok())
    assert len(listed) == 10
    before = target.read_bytes()
    message = cli("db", "backup", str(target), db=filled.db).failed()
    assert message == f"error: {target} already exists; pass --force to overwrite it"
    assert target.read_bytes() == before
    stale_log = Path(f"{target}-wal")
    stale_log.write_bytes(b"not a log of this file")
    assert cli("db", "backup", str(target), "--force", db=filled.db).returncode == 0
    assert not stale_log.exists()
    assert len(json.loads(cli("process", "list", "--all", "--json", db=target).ok())) == 10
    assert "onto itself" in cli("db", "backup", str(filled.db), "--force", db=filled.db).failed()
    assert "is a folder" in cli("db", "backup", str(tmp_path), db=filled.db).failed()
    assert not list(tmp_path.glob(".*.partial"))


@pytest.mark.parametrize("filled", ["sqlite"], indirect=True)  # copies the file
def test_db_vacuum_without_a_daemon(filled: Filled, tmp_path: Path) -> None:
    db = tmp_path / "vacuum.sqlite"
    copy_database(filled.db, db)
    with sqlite3.connect(db) as connection:
        connection.execute("DELETE FROM logs")  # leave free pages behind
    out = cli("db", "vacuum", db=db).ok()
    assert out.startswith(f"vacuumed {db}: ")
    assert len(json.loads(cli("process", "list", "--all", "--json", db=db).ok())) == 10


#: Submits AddWorkChains until the file named by argv[1] exists; prints "started" after the
#: first and the number submitted at the end.
SUBMITTER = """
import sys, time
from pathlib import Path
from miniengine import Int, submit
from tests.workchains.daemon_chains import AddWorkChain
stop, count = Path(sys.argv[1]), 0
deadline = time.monotonic() + 60
while count < 20 or (not stop.exists() and time.monotonic() < deadline):
    submit(AddWorkChain, x=Int(count), y=Int(1))
    count += 1
    if count == 1:
        print("started", flush=True)
    time.sleep(0.002)
print(count, flush=True)
"""


def test_with_a_daemon_vacuum_is_refused_and_backups_stay_consistent(tmp_path: Path) -> None:
    """Back up while a script submits workchains and the daemon runs them: every copy is intact
    and holds whole transactions only (a finished workchain always has its output and its
    finished child)."""
    db = tmp_path / "daemon.sqlite"
    stop = tmp_path / "stop"
    with DaemonGuard(db) as daemon:
        pid = daemon.start()
        message = cli("db", "vacuum", db=db).failed()
        assert message.startswith(f"error: a daemon (pid {pid}) is running for {db}")
        assert "stop it first" in message
        info = json.loads(cli("db", "info", "--json", db=db).ok())
        assert info["daemon"]["running"] is True and info["daemon"]["pid"] == pid
        assert f"running (pid {pid}" in cli("db", "info", db=db).ok()

        submitter = subprocess.Popen(
            [sys.executable, "-c", SUBMITTER, str(stop)],
            env=python_env(db),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert submitter.stdout is not None
            assert submitter.stdout.readline().strip() == "started"
            copies = [tmp_path / f"copy{index}.sqlite" for index in range(3)]
            for copy in copies:  # all taken while the script is still submitting
                cli("db", "backup", str(copy), db=db).ok()
        finally:
            stop.touch()
            out, err = submitter.communicate(timeout=90)
        assert submitter.returncode == 0, err
        total = int(out.split()[-1])
        wait_until(lambda: _finished(db) == total, 60, "the daemon to finish the workchains")
        final = tmp_path / "final.sqlite"
        cli("db", "backup", str(final), db=db).ok()
        for copy in [*copies, final]:
            _assert_whole(copy)
        assert _finished(final) == total
        assert json.loads(cli("process", "list", "--json", db=final).ok()) == []
        daemon.cli("stop")
    assert cli("db", "vacuum", db=db).ok().startswith(f"vacuumed {db}")


def _finished(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return int(
            connection.execute(
                "SELECT count(*) FROM nodes WHERE process_label = 'AddWorkChain' "
                "AND process_state = 'finished'"
            ).fetchone()[0]
        )


def _assert_whole(copy: Path) -> None:
    with sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        broken = connection.execute(
            "SELECT w.pk FROM nodes w WHERE w.process_label = 'AddWorkChain' "
            "AND w.process_state = 'finished' AND ("
            "NOT EXISTS (SELECT 1 FROM links l WHERE l.in_pk = w.pk AND l.label = 'result') OR "
            "NOT EXISTS (SELECT 1 FROM links l JOIN nodes c ON c.pk = l.out_pk "
            "WHERE l.in_pk = w.pk AND l.link_type = 'call_calc' AND c.process_state = 'finished'))"
        ).fetchall()
    assert broken == [], f"{copy}: finished workchains without output or child: {broken}"


@pytest.mark.parametrize("filled", ["sqlite"], indirect=True)  # the sqlite reader's imports
def test_read_only_commands_import_no_event_loop_machinery(filled: Filled) -> None:
    """What keeps them fast: no asyncio, anyio or runtime behind ``process list/show``."""
    probe = (
        "import contextlib, io, json, sys\n"
        "from miniengine.__main__ import main\n"
        f"for args in (['process', 'list', '--all'], ['process', 'show', '{filled.add}'],\n"
        f"             ['process', 'status', '{filled.nested[0]}']):\n"
        f"    with contextlib.redirect_stdout(io.StringIO()):\n"
        f"        assert main([*args, '--db', {str(filled.db)!r}]) == 0\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "    ('asyncio', 'anyio', 'aiosqlite') or m.startswith('miniengine.runtime'))))\n"
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
