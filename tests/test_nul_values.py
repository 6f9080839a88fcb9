"""NUL in the strings of a Data node's value: PostgreSQL's text and jsonb cannot hold it, so it
is refused when a node is written, on every backend (as labels and extras are), and an archive
import or ``db copy`` into PostgreSQL refuses an older sqlite node holding one before writing.
Nodes stored before the rule are still read."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from miniengine import Dict, Int, List, Str, calcfunction, find_processes, load_node, run
from miniengine.core.data import DataValueError
from miniengine.exceptions import ArchiveError, InputValidationError, StoreError
from miniengine.storage.copy import copy_database
from miniengine.storage.interfaces.provenance import pack_attributes
from miniengine.storage.open import close_all_backends
from miniengine.tools.archive import create_archive, import_archive


@calcfunction
def with_nul(x: Int) -> Str:
    return Str(f"{x.value}\x00")


@pytest.mark.backends
@pytest.mark.parametrize(
    ("node", "named"),
    [
        (Str("a\x00b"), "the Str node holds the character NUL,"),
        (Dict({"k": ["x", "a\x00"]}), "the Dict node holds the character NUL at ['k'][1],"),
        (Dict({"a\x00": 1}), "the Dict node holds the character NUL (in the key 'a\\x00'),"),
        (List(["ok", {"b": "c\x00"}]), "the List node holds the character NUL at [1]['b'],"),
    ],
)
def test_storing_a_value_holding_nul_is_refused(node: Any, named: str) -> None:
    with pytest.raises(DataValueError) as caught:
        node.store()
    assert named in str(caught.value) and "PostgreSQL cannot store" in str(caught.value)
    assert not node.is_stored
    assert Str("a\\x00b").store().is_stored  # an escaped NUL is only text
    assert Dict({"k": [0, 256, "fine"]}).store().is_stored  # zero bytes that are no NUL


@pytest.mark.backends
def test_a_process_returning_nul_excepts_and_stores_no_such_output() -> None:
    with pytest.raises(DataValueError, match="the Str node holds the character NUL"):
        run.get_node(with_nul, Int(4))
    [node] = find_processes()
    assert node.is_excepted and "character NUL" in (node.exception or "")
    assert not node.outputs


@pytest.mark.backends
def test_an_input_holding_nul_is_refused_naming_its_port() -> None:
    with pytest.raises(InputValidationError, match=r"the input 'x' cannot be stored: .* NUL"):
        run.get_node(with_nul, {"k": "a\x00"})
    assert find_processes() == []


@pytest.fixture
def old_node(miniengine_db: Path) -> Str:
    """A Str holding NUL, written into the sqlite file as a version without the rule did."""
    node = Str("a-b").store()
    with sqlite3.connect(miniengine_db) as connection:
        connection.execute(
            "UPDATE nodes SET attributes = ? WHERE pk = ?", (pack_attributes("a\x00b"), node.pk)
        )
    close_all_backends()
    return node


def _nodes(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT count(*) FROM nodes").fetchone()
    return int(row[0]) if row is not None else -1


def test_a_node_stored_before_is_read_and_archived_but_not_imported_into_postgresql(
    old_node: Str, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_node(old_node.pk).value == "a\x00b"
    path = tmp_path / "old.miniengine"
    assert create_archive(path, all=True).counts["nodes"] == 1
    monkeypatch.setenv("MINIENGINE_REPOSITORY", str(tmp_path / "pg-repository"))
    with pytest.raises(ArchiveError, match=f"node {old_node.uuid} holds the character NUL"):
        import_archive(path, db=postgres_url)
    assert _nodes(postgres_url) == 0
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    report = import_archive(path, db=target / "copy.sqlite")  # sqlite still takes it
    assert report.new_nodes == 1
    close_all_backends()


def test_db_copy_into_postgresql_refuses_it_before_writing(
    old_node: Str,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    miniengine_db: Path,
) -> None:
    monkeypatch.setenv("MINIENGINE_REPOSITORY", str(tmp_path / "pg-repository"))
    with pytest.raises(StoreError, match=f"cannot copy the node {old_node.uuid}: .* NUL"):
        copy_database(miniengine_db, postgres_url)
    assert _nodes(postgres_url) == 0
    close_all_backends()
