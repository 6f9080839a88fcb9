"""The content-addressed file repository beside the database."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from miniengine.exceptions import StoreError
from miniengine.storage.repository import Repository, RepositoryError


def test_objects_are_stored_once_under_the_hash_of_their_content(tmp_path: Path) -> None:
    repository = Repository(tmp_path / "repo")
    key = repository.put_object_from_bytes(b"hello")
    assert key == hashlib.sha256(b"hello").hexdigest()
    assert repository.put_object_from_filelike(io.BytesIO(b"hello")) == key
    assert list(repository.list_objects()) == [key]
    assert repository.get_object_content(key) == b"hello"
    assert repository.get_object_size(key) == 5
    assert repository.verify(key)
    assert not any((tmp_path / "repo" / "tmp").iterdir())  # no temporary file left


def test_large_files_stream_through(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    data = os.urandom(3 * (1 << 20) + 17)
    source.write_bytes(data)
    repository = Repository(tmp_path / "repo")
    key = repository.put_object_from_file(source)
    repository.copy_object_to(key, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == data


def test_folders_and_files_are_private(tmp_path: Path) -> None:
    repository = Repository(tmp_path / "repo")
    key = repository.put_object_from_bytes(b"secret input")
    assert (tmp_path / "repo").stat().st_mode & 0o777 == 0o700
    path = tmp_path / "repo" / "objects" / key[:2] / key[2:]
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("key", ["../../etc/passwd", "AB" * 32, "ab" * 31, "", "ab" * 32 + "/"])
def test_keys_that_are_not_hashes_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="not a repository key"):
        Repository(tmp_path / "repo").open(key)


def test_a_missing_object_is_a_store_error_naming_it(tmp_path: Path) -> None:
    missing = "0" * 64
    with pytest.raises(RepositoryError, match=missing) as raised:
        Repository(tmp_path / "repo").get_object_content(missing)
    assert isinstance(raised.value, StoreError)


def test_corruption_on_disk_is_detected(tmp_path: Path) -> None:
    repository = Repository(tmp_path / "repo")
    key = repository.put_object_from_bytes(b"original")
    (tmp_path / "repo" / "objects" / key[:2] / key[2:]).write_bytes(b"tampered")
    assert not repository.verify(key)


def test_maintain_removes_only_old_unreferenced_objects(tmp_path: Path) -> None:
    repository = Repository(tmp_path / "repo")
    kept = repository.put_object_from_bytes(b"referenced")
    old = repository.put_object_from_bytes(b"orphan")
    young = repository.put_object_from_bytes(b"about to be committed")
    past = time.time() - 7200
    for key in (kept, old):
        os.utime(tmp_path / "repo" / "objects" / key[:2] / key[2:], (past, past))
    assert repository.maintain({kept}, grace_seconds=3600) == 1
    assert set(repository.list_objects()) == {kept, young}


def test_storing_existing_content_again_protects_it_from_maintenance(tmp_path: Path) -> None:
    repository = Repository(tmp_path / "repo")
    key = repository.put_object_from_bytes(b"shared")
    past = time.time() - 7200
    os.utime(tmp_path / "repo" / "objects" / key[:2] / key[2:], (past, past))
    repository.put_object_from_bytes(b"shared")  # a new node refers to it, commit pending
    assert repository.maintain(set(), grace_seconds=3600) == 0


WRITER = """
import sys
from miniengine.storage.repository import Repository
repository = Repository(sys.argv[1])
for index in range(200):
    repository.put_object_from_bytes(str(index % 50).encode() * 1000)
"""


def test_concurrent_writers_of_the_same_content_leave_whole_objects(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(root)]) for _ in range(3)]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0, 0]
    repository = Repository(root)
    keys = list(repository.list_objects())
    assert len(keys) == 50
    assert all(repository.verify(key) for key in keys)
    assert not any((root / "tmp").iterdir())


def test_the_repository_of_a_database_sits_beside_it(tmp_path: Path) -> None:
    assert (
        Repository.for_database(tmp_path / "engine.sqlite").root == tmp_path / "engine.repository"
    )
