"""Codes: InstalledCode and PortableCode as Data nodes, AiiDA's validation, load_code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from miniengine import (
    Computer,
    InstalledCode,
    Int,
    MultipleObjectsError,
    NotExistent,
    PortableCode,
    Str,
    ValidationError,
    calcfunction,
    load_code,
    load_node,
    run_get_node,
)
from miniengine.exceptions import MiniengineError
from miniengine.runtime.computers import localhost_computer
from miniengine.storage.store import close_all_stores
from tests.services import sql
from tests.workchains.daemon_chains import python_env

pytestmark = pytest.mark.backends


def nodes_in(db: Path | str) -> int:
    """The nodes stored in ``db`` (0 while no store has created its schema)."""
    if isinstance(db, Path) and not db.exists():
        return 0
    try:
        return sql.count(db, "SELECT count(*) FROM nodes")
    except sql.errors(db):
        return 0


@pytest.fixture
def localhost(miniengine_db: Path, tmp_path: Path) -> Computer:
    return localhost_computer(tmp_path / "work")


@pytest.fixture
def code_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    (folder / "bin").mkdir(parents=True)
    script = folder / "bin" / "run.sh"
    script.write_text("#!/bin/bash\necho ran\n")
    script.chmod(0o755)
    (folder / "data.txt").write_text("parameters\n")
    return folder


def test_an_installed_code_is_stored_and_loaded_in_another_process(
    localhost: Computer, miniengine_db: Path
) -> None:
    code = InstalledCode(
        computer=localhost,
        filepath_executable="/bin/echo",
        label="echo",
        description="prints",
        default_calc_job_plugin="core.arithmetic.add",
        prepend_text="export A=1",
        append_text="echo after",
        with_mpi=False,
        use_double_quotes=True,
    ).store()
    assert code.full_label == "echo@localhost"
    assert code.get_executable() == PurePosixPath("/bin/echo")
    close_all_stores()
    probe = (
        "import json\n"
        "from miniengine import load_code\n"
        "c = load_code('echo@localhost')\n"
        "print(json.dumps([type(c).__name__, c.pk, c.label, c.description, c.full_label,\n"
        "    str(c.get_executable()), c.computer.label, c.default_calc_job_plugin,\n"
        "    c.prepend_text, c.append_text, c.with_mpi, c.use_double_quotes,\n"
        "    c.get_executable_cmdline_params(['-n', 'x']), c.base.attributes.all]))\n"
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
        "InstalledCode",
        code.pk,
        "echo",
        "prints",
        "echo@localhost",
        "/bin/echo",
        "localhost",
        "core.arithmetic.add",
        "export A=1",
        "echo after",
        False,
        True,
        ["/bin/echo", "-n", "x"],
        {
            "default_calc_job_plugin": "core.arithmetic.add",
            "prepend_text": "export A=1",
            "append_text": "echo after",
            "use_double_quotes": True,
            "with_mpi": False,
            "filepath_executable": "/bin/echo",
        },
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"filepath_executable": "bin/echo"}, ValidationError, "absolute"),
        ({"filepath_executable": ""}, ValidationError, "non-empty"),
        ({"filepath_executable": 5}, TypeError, "filepath_executable"),
        ({"label": "a@b"}, ValidationError, "'@'"),
        ({"computer": "localhost"}, TypeError, "Computer"),
        ({"with_mpi": "yes"}, TypeError, "with_mpi"),
        ({"prepend_text": None}, TypeError, "prepend_text"),
    ],
)
def test_installed_code_validation_happens_before_storing(
    localhost: Computer,
    miniengine_db: Path,
    kwargs: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    arguments: dict[str, object] = {
        "computer": localhost,
        "filepath_executable": "/bin/true",
        "label": "ok",
        **kwargs,
    }
    with pytest.raises(error, match=match) as raised:
        InstalledCode(**arguments).store()  # type: ignore[arg-type]
    assert isinstance(raised.value, MiniengineError)
    assert nodes_in(miniengine_db) == 0


def test_an_unstored_computer_is_stored_with_its_code(miniengine_db: Path) -> None:
    computer = Computer("fresh", "localhost")
    code = InstalledCode(computer=computer, filepath_executable="/bin/true", label="t").store()
    assert computer.is_stored
    assert load_code("t@fresh").computer == computer
    assert code.can_run_on_computer(computer)


def test_installed_code_executable_is_checked_on_the_computer(localhost: Computer) -> None:
    InstalledCode(computer=localhost, filepath_executable="/bin/sh").validate_filepath_executable()
    missing = InstalledCode(computer=localhost, filepath_executable="/no/such/program")
    with pytest.raises(ValidationError, match="not a file on localhost"):
        missing.validate_filepath_executable()


def test_a_portable_code_carries_its_files(
    miniengine_db: Path, code_folder: Path, tmp_path: Path
) -> None:
    code = PortableCode(
        filepath_files=code_folder, filepath_executable="bin/run.sh", label="portable"
    ).store()
    assert code.computer is None and code.full_label == "portable"
    close_all_stores()
    loaded = load_code("portable")
    assert loaded.base.repository.list_object_names() == ["bin", "data.txt"]
    assert loaded.base.repository.get_object_content("bin/run.sh") == "#!/bin/bash\necho ran\n"
    assert loaded.get_executable() == PurePosixPath("bin/run.sh")
    assert loaded.get_executable_cmdline_params(["x"]) == ["./bin/run.sh", "x"]
    upload = tmp_path / "upload"
    loaded.base.repository.copy_tree(upload)
    assert (upload / "data.txt").read_text() == "parameters\n"


@pytest.mark.parametrize(
    ("files", "executable", "match"),
    [
        ("code", "/bin/run.sh", "relative"),
        ("code", "../code/bin/run.sh", "relative"),
        ("code", "bin/missing.sh", "not a file"),
        ("code", "bin", "not a file"),
        ("no-such-folder", "run.sh", "not a folder"),
    ],
)
def test_portable_code_validation(
    miniengine_db: Path, code_folder: Path, files: str, executable: str, match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        PortableCode(filepath_files=code_folder.parent / files, filepath_executable=executable)
    assert nodes_in(miniengine_db) == 0


def test_load_code_by_full_label_label_pk_and_uuid(miniengine_db: Path, tmp_path: Path) -> None:
    first = localhost_computer(tmp_path / "a", label="first")
    second = localhost_computer(tmp_path / "b", label="second")
    on_first = InstalledCode(computer=first, filepath_executable="/bin/true", label="t").store()
    on_second = InstalledCode(computer=second, filepath_executable="/bin/true", label="t").store()
    unique = InstalledCode(computer=second, filepath_executable="/bin/ls", label="ls").store()
    assert load_code("t@first") == on_first
    assert load_code("t@second") == on_second
    assert load_code("ls") == unique
    assert load_code(label="ls") == unique
    assert load_code(unique.pk) == unique
    assert load_code(str(unique.pk)) == unique
    assert load_code(pk=on_first.pk) == on_first
    assert load_code(uuid=on_second.uuid) == on_second
    assert load_code(unique.uuid) == unique
    with pytest.raises(MultipleObjectsError, match="label@computer"):
        load_code("t")
    with pytest.raises(NotExistent):
        load_code("t@third")
    with pytest.raises(NotExistent):
        load_code("nothing")
    other = Int(3).store()
    with pytest.raises(NotExistent, match="not a code"):
        load_code(other.pk)
    with pytest.raises(ValueError, match="exactly one"):
        load_code()


@calcfunction
def describe(code: InstalledCode, argument: Str) -> Str:
    return Str(" ".join(code.get_executable_cmdline_params([argument.value])))


def test_a_code_is_an_input_of_a_process(localhost: Computer) -> None:
    code = InstalledCode(computer=localhost, filepath_executable="/bin/echo", label="echo")
    result, node = run_get_node(describe, code, Str("hi"))
    assert result == "/bin/echo hi"
    assert code.is_stored
    assert load_node(node.pk).inputs.code.full_label == "echo@localhost"


def test_the_code_label_is_checked_when_changed(localhost: Computer) -> None:
    code = InstalledCode(computer=localhost, filepath_executable="/bin/true", label="a").store()
    with pytest.raises(ValidationError):
        code.label = "a@b"
    code.label = "renamed"
    assert load_code("renamed@localhost") == code
    assert os.path.isabs(str(code.filepath_executable))


def test_an_unstored_code_in_a_checkpoint_keeps_its_computer(localhost: Computer) -> None:
    from miniengine.core import codec

    code = InstalledCode(computer=localhost, filepath_executable="/bin/cat", label="cat")
    decoded = codec.decode(codec.encode({"code": code}))["code"]
    assert not decoded.is_stored and decoded.uuid == code.uuid
    assert decoded.full_label == "cat@localhost"
    decoded.store()
    assert load_code("cat@localhost").computer == localhost
