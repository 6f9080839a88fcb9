"""The Folder that CalcJob plugins write their inputs into."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from miniengine.folders import Folder, SandboxFolder


def test_a_plugin_writes_reads_and_lists_files(tmp_path: Path) -> None:
    folder = Folder(tmp_path / "job")
    folder.create()
    with folder.open("aiida.in", "w") as handle:
        handle.write("x = 1\n")
    sub = folder.get_subfolder("pseudo", create=True)
    sub.create_file_from_filelike(io.BytesIO(b"\x00\x01"), "Si.upf")
    source = tmp_path / "local.txt"
    source.write_text("from disk")
    folder.insert_path(str(source), dest_name="copied.txt")
    assert folder.get_content_list() == ["aiida.in", "copied.txt", "pseudo"]
    assert folder.get_content_list(only_paths=False)[2] == ("pseudo", False)
    assert folder.walk() == ["aiida.in", "copied.txt", "pseudo/Si.upf"]
    assert folder.open("aiida.in").read() == "x = 1\n"
    assert Path(folder.get_abs_path("pseudo/Si.upf", check_existence=True)).read_bytes() == b"\0\1"
    folder.remove_path("pseudo")
    folder.remove_path("never-there")
    assert folder.get_content_list(pattern="*.txt") == ["copied.txt"]


@pytest.mark.parametrize("name", ["../escape.txt", "a/../../escape.txt", "/etc/passwd"])
def test_names_that_leave_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    folder = Folder(tmp_path / "job")
    folder.create()
    with pytest.raises(ValueError, match=r"outside|absolute"):
        folder.open(name, "w")
    with pytest.raises(ValueError, match=r"outside|absolute"):
        folder.get_subfolder(name)
    assert not (tmp_path / "escape.txt").exists()


def test_a_subfolder_keeps_its_parents_limit(tmp_path: Path) -> None:
    sub = Folder(tmp_path / "job").get_subfolder("sub", create=True)
    with pytest.raises(ValueError, match="outside"):
        sub.get_abs_path("../../outside.txt")
    assert sub.get_abs_path("../inside.txt") == str(tmp_path / "job" / "inside.txt")


def test_insert_path_respects_overwrite(tmp_path: Path) -> None:
    folder = Folder(tmp_path / "job")
    source = tmp_path / "a.txt"
    source.write_text("one")
    folder.insert_path(str(source))
    with pytest.raises(FileExistsError):
        folder.insert_path(str(source), overwrite=False)
    with pytest.raises(ValueError, match="absolute"):
        folder.insert_path("a.txt")


def test_a_sandbox_is_private_and_gone_after_its_block(tmp_path: Path) -> None:
    with SandboxFolder(tmp_path) as sandbox:
        with sandbox.open("input", "w") as handle:
            handle.write("data")
        path = Path(sandbox.abspath)
        assert path.stat().st_mode & 0o777 == 0o700
    assert not path.exists()
