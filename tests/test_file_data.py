"""File data: SinglefileData, FolderData and RemoteData, with their files in the repository."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from miniengine import (
    Data,
    EventLoopError,
    FolderData,
    ModificationNotAllowed,
    RemoteData,
    SinglefileData,
    Str,
    ValidationError,
    WorkChain,
    calcfunction,
    load_node,
    run_get_node,
)
from miniengine.core import codec
from miniengine.core.data import DATA_TYPES
from miniengine.runtime.computers import localhost_computer
from miniengine.storage.open import shared_backend
from miniengine.storage.repository import Repository, RepositoryError
from miniengine.storage.store import close_all_stores
from tests.services import sql
from tests.workchains.daemon_chains import python_env

pytestmark = pytest.mark.backends


def in_another_process(db: Path, code: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env=python_env(db),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def nodes_in(db: Path | str) -> int:
    """The nodes stored in ``db`` (0 while no store has created its schema)."""
    if isinstance(db, Path) and not db.exists():
        return 0
    try:
        return sql.count(db, "SELECT count(*) FROM nodes")
    except sql.errors(db):
        return 0


def repository_of(db: Path | str) -> Repository:
    """The repository of ``db`` as the engine finds it (beside a sqlite file; on PostgreSQL the
    folder ``$MINIENGINE_REPOSITORY`` names, else the one recorded in the database)."""
    return shared_backend(db).provenance.repository()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (root / "sub" / "deeper" / "c.txt").write_text("gamma\n")
    return root


def test_type_names_are_aiidas_entry_points() -> None:
    assert SinglefileData.type_name == "core.singlefile"
    assert FolderData.type_name == "core.folder"
    assert RemoteData.type_name == "core.remote"
    assert DATA_TYPES["core.singlefile"] is SinglefileData


def test_singlefile_from_a_path_is_stored_and_read_in_another_process(
    miniengine_db: Path, tmp_path: Path
) -> None:
    source = tmp_path / "input.txt"
    source.write_text("héllo\nworld\n")
    node = SinglefileData(source, label="greeting")
    assert node.filename == "input.txt"
    assert node.get_content() == "héllo\nworld\n"
    assert node.get_content("rb") == "héllo\nworld\n".encode()
    with node.open() as handle:
        assert handle.readline() == "héllo\n"
    assert node.base.attributes.all == {"filename": "input.txt"}
    node.store()
    source.unlink()  # the node has its own copy
    close_all_stores()
    out = in_another_process(
        miniengine_db,
        # only load_node: the file data module is imported by the node's type name
        "import json, sys\n"
        "from miniengine import load_node\n"
        f"n = load_node({node.pk})\n"
        "print(json.dumps([type(n).__name__, n.filename, n.get_content(), n.label,\n"
        "    n.base.repository.list_object_names(), n.base.attributes.all]))\n",
    )
    assert json.loads(out) == [
        "SinglefileData",
        "input.txt",
        "héllo\nworld\n",
        "greeting",
        ["input.txt"],
        {"filename": "input.txt"},
    ]


def test_singlefile_from_streams_and_strings(miniengine_db: Path) -> None:
    assert SinglefileData(io.BytesIO(b"\x00\x01")).filename == "file.txt"
    named = SinglefileData(io.BytesIO(b"x"), filename="data.bin")
    assert (named.filename, named.get_content("rb")) == ("data.bin", b"x")
    text = SinglefileData(io.StringIO("text stream"), filename="t.txt")
    assert text.get_content() == "text stream"
    assert SinglefileData.from_string("abc", filename="s.txt").get_content() == "abc"
    with pytest.raises(FileNotFoundError):
        SinglefileData("/no/such/file")
    with pytest.raises(TypeError):
        SinglefileData(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="plain file name"):
        SinglefileData(io.BytesIO(b"x"), filename="a/b")


def test_content_is_written_to_the_repository_before_the_node_is_stored(
    miniengine_db: Path,
) -> None:
    content = b"content-addressed\n"
    node = SinglefileData(io.BytesIO(content), filename="f")
    repository = repository_of(miniengine_db)
    key = hashlib.sha256(content).hexdigest()
    assert repository.has_object(key)  # already there while unstored
    assert node.base.repository.get_object_key("f") == key
    twin = SinglefileData(io.BytesIO(content), filename="g").store()
    node.store()
    assert list(repository.list_objects()) == [key]  # one object for both nodes
    assert twin.get_content("rb") == node.get_content("rb") == content


def test_a_node_whose_object_vanished_is_refused_and_nothing_is_stored(
    miniengine_db: Path,
) -> None:
    Str("make the database").store()
    node = SinglefileData(io.BytesIO(b"soon gone"), filename="f")
    node._repository_root = None  # no other repository to copy from
    repository_of(miniengine_db).delete_objects([node.base.repository.get_object_key("f")])
    with pytest.raises(RepositoryError, match="refers to the repository object"):
        node.store()
    assert not node.is_stored
    assert nodes_in(miniengine_db) == 1


@pytest.mark.sqlite_only(reason="two sqlite files, each with its repository beside it")
def test_a_node_made_for_one_database_is_stored_in_another_with_its_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first.sqlite", tmp_path / "second.sqlite"
    monkeypatch.setenv("MINIENGINE_DB", str(first))
    node = FolderData()
    node.base.repository.put_object_from_bytes(b"travels", "dir/file")
    monkeypatch.setenv("MINIENGINE_DB", str(second))
    node.store()
    key = node.base.repository.get_object_key("dir/file")
    assert Repository.for_database(second).get_object_content(key) == b"travels"
    close_all_stores()
    out = in_another_process(
        second,
        "from miniengine import load_node\n"
        f"print(load_node({node.pk}).get_object_content('dir/file'))",
    )
    assert out == "travels\n"


def test_stored_file_data_is_immutable(miniengine_db: Path, tree: Path) -> None:
    single = SinglefileData(io.BytesIO(b"x"), filename="x").store()
    with pytest.raises(ModificationNotAllowed):
        single.set_file(io.BytesIO(b"y"))
    folder = FolderData(tree=tree).store()
    with pytest.raises(ModificationNotAllowed):
        folder.put_object_from_file(tree / "a.txt", "new.txt")
    with pytest.raises(ModificationNotAllowed):
        folder.base.repository.delete_object("a.txt")
    assert folder.list_object_names() == ["a.txt", "empty", "sub"]


def test_folder_data_keeps_the_tree(miniengine_db: Path, tree: Path, tmp_path: Path) -> None:
    folder = FolderData(tree=tree).store()
    close_all_stores()
    loaded = load_node(folder.pk)
    repository = loaded.base.repository
    assert repository.list_object_names() == ["a.txt", "empty", "sub"]
    assert repository.list_object_names("sub") == ["b.bin", "deeper"]
    assert repository.list_object_names("empty") == []
    assert repository.get_object_content("sub/deeper/c.txt") == "gamma\n"
    assert repository.get_object_content("sub/b.bin", mode="rb") == bytes(range(256))
    with repository.open("a.txt", "rb") as handle:
        assert handle.read() == b"alpha\n"
    assert [(str(path), dirs, files) for path, dirs, files in loaded.walk()] == [
        (".", ["empty", "sub"], ["a.txt"]),
        ("empty", [], []),
        ("sub", ["deeper"], ["b.bin"]),
        ("sub/deeper", [], ["c.txt"]),
    ]
    target = tmp_path / "copy"
    loaded.copy_tree(target)
    assert (target / "sub" / "b.bin").read_bytes() == bytes(range(256))
    assert (target / "empty").is_dir()
    loaded.copy_tree(tmp_path / "only-sub", "sub")
    assert (tmp_path / "only-sub" / "deeper" / "c.txt").read_text() == "gamma\n"


def test_repository_paths_are_checked(miniengine_db: Path, tree: Path) -> None:
    folder = FolderData(tree=tree)
    with pytest.raises(FileNotFoundError):
        folder.get_object_content("missing.txt")
    with pytest.raises(IsADirectoryError):
        folder.get_object_content("sub")
    with pytest.raises(NotADirectoryError):
        folder.list_object_names("a.txt")
    with pytest.raises(TypeError, match="not a relative path"):
        folder.get_object_content("/etc/passwd")
    with pytest.raises(TypeError, match="leaves"):
        folder.get_object_content("../tree/a.txt")
    with pytest.raises(ValueError, match="reading only"):
        folder.open("a.txt", "w")
    with pytest.raises(FileNotFoundError):
        FolderData(tree=tree / "nope")


def test_unstored_file_data_puts_and_deletes(miniengine_db: Path, tree: Path) -> None:
    folder = FolderData()
    folder.put_object_from_filelike(io.BytesIO(b"one"), "x/one")
    folder.put_object_from_tree(tree / "sub", "copied")
    folder.base.repository.put_object_from_bytes(b"two", "two")
    folder.base.repository.delete_object("two")
    assert folder.list_object_names() == ["copied", "x"]
    assert folder.list_object_names("copied") == ["b.bin", "deeper"]
    folder.store()
    assert load_node(folder.pk).get_object_content("x/one") == "one"


def test_unstored_file_data_in_a_checkpoint_is_encoded_by_its_keys(
    miniengine_db: Path, tmp_path: Path
) -> None:
    big = b"0123456789" * 10_000
    node = SinglefileData(io.BytesIO(big), filename="big.dat")
    blob = codec.encode({"ctx": {"file": node}})
    assert len(blob) < 500  # the key, not the 100 kB content
    decoded = codec.decode(blob)["ctx"]["file"]
    assert (decoded.uuid, decoded.is_stored, decoded.filename) == (node.uuid, False, "big.dat")
    assert decoded.get_content("rb") == big
    (tmp_path / "checkpoint.bin").write_bytes(blob)
    close_all_stores()
    out = in_another_process(
        miniengine_db,
        "from pathlib import Path\n"
        "from miniengine.runtime import registry\n"
        f"blob = Path({str(tmp_path / 'checkpoint.bin')!r}).read_bytes()\n"
        "node = registry.decode(blob)['ctx']['file']\n"
        "node.store()\n"
        "print(node.pk, len(node.get_content('rb')))\n",
    )
    pk, size = map(int, out.split())
    assert size == len(big)
    assert load_node(pk).get_content("rb") == big


@calcfunction
def count_lines(folder: FolderData) -> SinglefileData:
    counts = {
        name: len(folder.get_object_content(name).splitlines())
        for name in folder.list_object_names()
        if name.endswith(".txt")
    }
    return SinglefileData.from_string(json.dumps(counts), filename="counts.json")


def test_a_calcfunction_takes_and_creates_file_data(miniengine_db: Path, tree: Path) -> None:
    result, node = run_get_node(count_lines, FolderData(tree=tree))
    assert node.is_finished_ok
    assert result.is_stored and result.creator.pk == node.pk
    assert json.loads(result.get_content()) == {"a.txt": 1}
    assert node.inputs.folder.list_object_names("sub/deeper") == ["c.txt"]


class FileWorkChain(WorkChain):
    @classmethod
    def define(cls, spec):  # type: ignore[no-untyped-def]
        super().define(spec)
        spec.input("text", valid_type=Str)
        spec.outline(cls.write, cls.emit)
        spec.output("file", valid_type=SinglefileData)

    def write(self):  # type: ignore[no-untyped-def]
        # unstored file data in the context: checkpointed between the two steps
        self.ctx.file = SinglefileData.from_string(self.inputs.text.value * 3, filename="out.txt")

    def emit(self):  # type: ignore[no-untyped-def]
        self.out("file", self.ctx.file)


def test_a_workchain_keeps_file_data_in_its_context_and_outputs_it(miniengine_db: Path) -> None:
    result, node = run_get_node(FileWorkChain, text=Str("ab"))
    assert node.is_finished_ok
    assert result["file"].is_stored
    close_all_stores()
    out = in_another_process(
        miniengine_db,
        f"from miniengine import load_node\nprint(load_node({node.pk}).outputs.file.get_content())",
    )
    assert out == "ababab\n"


def test_remote_data_reads_through_the_computer_transport(
    miniengine_db: Path, tmp_path: Path
) -> None:
    computer = localhost_computer(tmp_path / "work")
    remote_folder = tmp_path / "job"
    remote_folder.mkdir()
    (remote_folder / "out.log").write_text("ok\n")
    remote = RemoteData(remote_path=str(remote_folder), computer=computer).store()
    assert remote.base.attributes.all == {"remote_path": str(remote_folder)}
    close_all_stores()
    destination = tmp_path / "fetched.log"
    out = in_another_process(
        miniengine_db,
        "from miniengine import load_node\n"
        f"r = load_node({remote.pk})\n"
        "print(r.computer.label, r.get_remote_path(), r.listdir(), r.is_empty)\n"
        f"r.getfile('out.log', {str(destination)!r})\n",
    )
    assert out.split() == ["localhost", str(remote_folder), "['out.log']", "False"]
    assert destination.read_text() == "ok\n"
    empty = RemoteData(remote_path=str(tmp_path / "gone"), computer=computer)
    assert empty.is_empty


async def test_remote_data_in_an_event_loop_uses_the_awaitable_twins(
    miniengine_db: Path, tmp_path: Path
) -> None:
    computer = localhost_computer(tmp_path / "work")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "x").write_text("x")
    remote = RemoteData(remote_path=str(tmp_path / "job"), computer=computer)
    with pytest.raises(EventLoopError, match="alistdir"):
        remote.listdir()
    assert await remote.alistdir() == ["x"]
    async with computer.get_transport() as transport:  # a pooled transport is passed in
        assert await remote.alistdir(transport=transport) == ["x"]
        await remote.agetfile("x", tmp_path / "copy", transport=transport)
    assert (tmp_path / "copy").read_text() == "x"


def test_remote_data_checks_its_fields(miniengine_db: Path, tmp_path: Path) -> None:
    computer = localhost_computer(tmp_path / "work")
    with pytest.raises(ValidationError, match="absolute"):
        RemoteData(remote_path="relative/path", computer=computer)
    with pytest.raises(TypeError, match="Computer"):
        RemoteData(remote_path="/x", computer="localhost")  # type: ignore[arg-type]
    remote = RemoteData(remote_path="/x", computer=computer).store()
    with pytest.raises(ModificationNotAllowed):
        remote.set_remote_path("/y")
    with pytest.raises(TypeError, match="relative"):
        remote.listdir("/etc")


def test_file_data_subclasses_are_data(miniengine_db: Path) -> None:
    assert issubclass(SinglefileData, Data) and issubclass(RemoteData, Data)


def test_maintenance_keeps_every_object_a_node_or_checkpoint_refers_to(
    miniengine_db: Path,
) -> None:
    from miniengine.runtime.context import store_for

    stored = SinglefileData(io.BytesIO(b"stored"), filename="s").store()
    folder = FolderData()
    folder.put_object_from_filelike(io.BytesIO(b"in a folder"), "a/b")
    folder.store()
    SinglefileData(io.BytesIO(b"never stored"), filename="n")
    in_checkpoint = SinglefileData(io.BytesIO(b"checkpointed"), filename="c")
    store = store_for(miniengine_db)
    parent = Str("a node to hang a checkpoint on").store()
    blob = codec.encode({"ctx": {"file": in_checkpoint}})

    sql.execute(
        miniengine_db,
        "INSERT INTO checkpoints (node_pk, seq, data) VALUES (?, 1, ?)",
        parent.pk,
        blob,
    )
    referenced = store.provenance.referenced_object_keys()
    expected = {
        stored.base.repository.get_object_key("s"),
        folder.base.repository.get_object_key("a/b"),
        in_checkpoint.base.repository.get_object_key("c"),
    }
    assert referenced == expected
    repository = repository_of(miniengine_db)
    assert repository.maintain(referenced, grace_seconds=0) == 1  # only "never stored"
    assert set(repository.list_objects()) == expected


def test_names_that_utf8_cannot_encode_are_refused_when_put(miniengine_db: Path) -> None:
    with pytest.raises(ValueError, match="surrogate"):
        SinglefileData(io.BytesIO(b"x"), filename="bad\udcff.txt")
    with pytest.raises(ValueError, match="surrogate"):
        FolderData().put_object_from_filelike(io.BytesIO(b"x"), "dir\udcff/x")
    assert nodes_in(miniengine_db) == 0


def test_remote_data_clean_removes_the_remote_folder(miniengine_db: Path, tmp_path: Path) -> None:
    computer = localhost_computer(tmp_path / "work")
    folder = tmp_path / "job"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "f").write_text("x")
    remote = RemoteData(remote_path=str(folder), computer=computer).store()
    assert remote.get_computer_name() == "localhost"
    load_node(remote.pk)._clean()
    assert not folder.exists()
    assert load_node(remote.pk).is_empty
    load_node(remote.pk)._clean()  # a missing folder is not an error
    with pytest.raises(ValidationError, match="root"):
        RemoteData(remote_path="/", computer=computer)._clean()
