"""``db backup`` carries the file repository along; ``db maintain`` removes unnamed objects."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from miniengine import FolderData, SinglefileData
from miniengine.storage.repository import Repository
from miniengine.storage.store import close_all_stores
from tests.test_cli import cli
from tests.test_file_data import in_another_process


def _store_files(tmp_path: Path) -> tuple[int, int]:
    source = tmp_path / "input.txt"
    source.write_text("some input\n")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "data.bin").write_bytes(bytes(range(256)))
    single = SinglefileData(source).store()
    folder = FolderData(tree=tree).store()
    close_all_stores()
    assert single.pk is not None and folder.pk is not None
    return single.pk, folder.pk


def test_a_backup_carries_the_files_its_nodes_name(miniengine_db: Path, tmp_path: Path) -> None:
    single, folder = _store_files(tmp_path)
    backup = tmp_path / "copies" / "backup.sqlite"
    backup.parent.mkdir()
    out = cli("db", "backup", str(backup), db=miniengine_db).ok()
    assert "2 repository objects" in out
    copy = Repository.for_database(backup)
    assert len(list(copy.list_objects())) == 2
    assert all(copy.verify(key) for key in copy.list_objects())
    # the backup alone (the original moved away) still gives the files back
    os.rename(miniengine_db, tmp_path / "gone.sqlite")
    os.rename(Repository.for_database(miniengine_db).root, tmp_path / "gone.repository")
    read = in_another_process(
        backup,
        "from miniengine import load_node\n"
        f"print(load_node({single}).get_content(), end='')\n"
        f"print(load_node({folder}).base.repository.get_object_content('sub/data.bin', 'rb')"
        ".hex())\n",
    )
    assert read == "some input\n" + bytes(range(256)).hex() + "\n"


def test_a_corrupt_object_stops_the_backup_and_writes_nothing(
    miniengine_db: Path, tmp_path: Path
) -> None:
    _store_files(tmp_path)
    repository = Repository.for_database(miniengine_db)
    key = hashlib.sha256(b"some input\n").hexdigest()
    (repository.root / "objects" / key[:2] / key[2:]).write_bytes(b"bit rot\n")
    backup = tmp_path / "backup.sqlite"
    error = cli("db", "backup", str(backup), db=miniengine_db).failed()
    assert key in error and "corrupt" in error
    assert not backup.exists()


def test_maintain_removes_only_old_unnamed_objects(miniengine_db: Path, tmp_path: Path) -> None:
    single, _ = _store_files(tmp_path)
    repository = Repository.for_database(miniengine_db)
    named = set(repository.list_objects())
    old_orphan = repository.put_object_from_bytes(b"left by a crash before its commit")
    young_orphan = repository.put_object_from_bytes(b"its transaction is committing now")
    past = time.time() - 7200
    os.utime(repository.root / "objects" / old_orphan[:2] / old_orphan[2:], (past, past))

    assert "would remove 1 " in cli("db", "maintain", "--dry-run", db=miniengine_db).ok()
    assert set(repository.list_objects()) == named | {old_orphan, young_orphan}
    assert "removed 1 " in cli("db", "maintain", db=miniengine_db).ok()
    assert set(repository.list_objects()) == named | {young_orphan}
    assert "removed 1 " in cli("db", "maintain", "--grace", "0", db=miniengine_db).ok()
    assert set(repository.list_objects()) == named
    read = in_another_process(
        miniengine_db, f"from miniengine import load_node\nprint(load_node({single}).get_content())"
    )
    assert read == "some input\n\n"
