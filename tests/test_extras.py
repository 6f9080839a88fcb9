"""Node metadata after the fact, on sqlite and on PostgreSQL: extras (mutable, JSON, kept
across reopening the database), attributes of stored nodes (immutable), comments, and the
migration from schema version 8 that adds them."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from miniengine import (
    Dict,
    Int,
    ModificationNotAllowed,
    NotExistent,
    ValidationError,
    calcfunction,
    load_node,
    run_get_node,
)
from miniengine.storage.open import close_all_backends, open_backend
from miniengine.storage.schema import SCHEMA_VERSION
from miniengine.storage.store import close_all_stores
from tests.services import old_schema


@calcfunction
def add(x: Int, y: Int) -> Int:
    return x + y  # type: ignore[no-any-return]


def _reopened(pk: int) -> Any:
    """The node loaded again after every open database was closed."""
    close_all_stores()
    close_all_backends()
    return load_node(pk)


# extras --------------------------------------------------------------------------------------


def test_extras_set_get_delete_survive_reopening(backend_db: Any) -> None:
    node = Int(5).store()
    extras = node.base.extras
    extras.set("score", 0.5)
    extras.set_many({"tags": ["a", "b"], "nested": {"x": None, "y": [1, {"z": True}]}})
    assert extras.get("score") == 0.5
    assert extras.get("missing", 7) == 7
    assert "tags" in extras and len(extras) == 3
    assert node.pk is not None
    again = _reopened(node.pk)
    assert again.base.extras.all == {
        "score": 0.5,
        "tags": ["a", "b"],
        "nested": {"x": None, "y": [1, {"z": True}]},
    }
    again.base.extras.delete("score")
    assert sorted(again.base.extras.keys()) == ["nested", "tags"]
    assert dict(_reopened(node.pk).base.extras.items()) == {
        "tags": ["a", "b"],
        "nested": {"x": None, "y": [1, {"z": True}]},
    }
    again.base.extras.reset({"only": 1})
    assert _reopened(node.pk).base.extras.all == {"only": 1}
    again.base.extras.clear()
    assert _reopened(node.pk).base.extras.all == {}


def test_extras_errors_name_the_key(backend_db: Any) -> None:
    extras = Int(1).store().base.extras
    with pytest.raises(AttributeError, match="'nope'"):
        extras.get("nope")
    with pytest.raises(AttributeError, match="'nope'"):
        extras.delete("nope")
    extras.set("kept", 1)
    with pytest.raises(AttributeError, match="'gone'"):
        extras.delete_many(["kept", "gone"])
    assert extras.all == {"kept": 1}  # nothing deleted
    with pytest.raises(ValidationError, match="'bad'"):
        extras.set("bad", object())
    with pytest.raises(ValidationError, match="'nan'"):
        extras.set("nan", float("nan"))
    with pytest.raises(ValidationError, match=r"'a\.b'"):
        extras.set("a.b", 1)
    with pytest.raises(ValidationError, match=r"'nul'.*NUL"):
        extras.set("nul", ["fine", {"x": "not\x00fine"}])
    with pytest.raises(ValidationError, match=r"'lone'.*surrogate"):
        extras.set("lone", "\udcff")
    assert extras.all == {"kept": 1}


def test_extras_of_an_unstored_node_are_written_when_it_is_stored(backend_db: Any) -> None:
    node = Dict({"a": 1})
    node.base.extras.set("before", "storing")
    assert node.base.extras.all == {"before": "storing"}
    node.store()
    assert node.pk is not None
    assert _reopened(node.pk).base.extras.all == {"before": "storing"}


def test_extras_of_process_nodes(backend_db: Any) -> None:
    _, node = run_get_node(add, 1, 2)
    node.base.extras.set("reviewed", True)
    assert _reopened(node.pk).base.extras.get("reviewed") is True
    # the process fields are attributes, not extras
    assert "process_state" not in node.base.extras


# attributes ----------------------------------------------------------------------------------


def test_attributes_of_a_stored_node_are_immutable(backend_db: Any) -> None:
    data = Int(3).store()
    _, process = run_get_node(add, 1, 2)
    for node in (data, process):
        attributes = node.base.attributes
        with pytest.raises(ModificationNotAllowed, match=r"'value'.*immutable"):
            attributes.set("value", 4)
        with pytest.raises(ModificationNotAllowed, match="immutable"):
            attributes.set_many({"value": 4})
        with pytest.raises(ModificationNotAllowed, match="immutable"):
            attributes.delete("value")
        with pytest.raises(ModificationNotAllowed, match="immutable"):
            attributes.clear()
    assert load_node(data.pk).base.attributes.get("value") == 3
    # and Data's own rule for its value
    with pytest.raises(ModificationNotAllowed):
        data.value = 4
    assert issubclass(ModificationNotAllowed, __import__("miniengine").MiniengineError)


def test_label_description_and_times(backend_db: Any) -> None:
    data = Int(3)
    assert data.ctime is None and data.mtime is None
    data.store()
    assert data.ctime is not None and data.ctime.tzinfo is not None
    _, process = run_get_node(add, 1, 2)
    process.label = "relabelled"
    process.description = "said after the run"
    again = _reopened(process.pk)
    assert (again.label, again.description) == ("relabelled", "said after the run")
    assert again.mtime >= again.ctime
    with pytest.raises(TypeError):
        process.label = 5


# comments ------------------------------------------------------------------------------------


def test_comments_add_update_remove(backend_db: Any) -> None:
    node = Int(2).store()
    before = time.time()
    first = node.base.comments.add("the first run")
    second = node.base.comments.add("looks wrong")
    assert first.pk != second.pk and first.content == "the first run"
    assert first.ctime.timestamp() >= before - 1
    assert [c.content for c in _reopened(node.pk).base.comments.all()] == [
        "the first run",
        "looks wrong",
    ]
    node.base.comments.update(second.pk, "fine after all")
    assert node.base.comments.get(second.pk).content == "fine after all"
    node.base.comments.remove(first.pk)
    assert [c.pk for c in _reopened(node.pk).base.comments.all()] == [second.pk]
    with pytest.raises(NotExistent, match=str(first.pk)):
        node.base.comments.remove(first.pk)
    other = Int(9).store()
    with pytest.raises(NotExistent):  # a comment of another node is not this node's
        other.base.comments.update(second.pk, "hijacked")
    with pytest.raises(NotExistent, match="unstored"):
        Int(1).base.comments.add("not stored")


# the migration from version 8 ------------------------------------------------------------------

#: A Data node of schema 8 (which had no extras).
_V8_NODE = (
    "INSERT INTO nodes (uuid, node_type, ctime, mtime) VALUES "
    "('01a247ea-2376-735a-99b1-34dea77619a5', 'core.data', 0, 0)"
)


def test_sqlite_version_8_database_migrates_to_9(tmp_path: Path) -> None:
    path = tmp_path / "v8.sqlite"
    old_schema.make_sqlite(path, 8, [_V8_NODE])
    store = open_backend(path)
    try:
        assert store.groups.extras(1) == {}
        store.groups.set_extras(1, {"after": "migration"})
        assert store.groups.extras(1) == {"after": "migration"}
        row, _ = store.groups.create_group("migrated", "core", "", False)
        assert store.groups.add_group_nodes(row.pk, [1]) == 1
        assert store.groups.add_comment(1, "hello").content == "hello"
    finally:
        store.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    connection.close()


def test_postgresql_version_8_database_migrates_to_9(postgres_url: str) -> None:
    import psycopg

    from miniengine.storage.postgres import schema

    old_schema.make_postgresql(postgres_url, 8, [_V8_NODE])
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        assert "extras" not in {
            row[0]
            for row in connection.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'nodes'"
            )
        }
    store = open_backend(postgres_url)
    try:
        (pk,) = [row.pk for row in store.provenance.nodes([1, 2, 3]).values()]
        assert store.groups.extras(pk) == {}
        store.groups.set_extras(pk, {"after": "migration", "none": None})
        assert store.groups.extras(pk) == {"after": "migration", "none": None}
        row, _ = store.groups.create_group("migrated", "core", "", False)
        assert store.groups.add_group_nodes(row.pk, [pk]) == 1
        assert store.groups.add_comment(pk, "hello").content == "hello"
    finally:
        store.close()
    with psycopg.connect(postgres_url, autocommit=True) as connection, connection.transaction():
        assert schema.read_schema_version(connection) == schema.SCHEMA_VERSION


# db copy ---------------------------------------------------------------------------------------


def test_db_copy_keeps_extras_comments_and_groups(
    miniengine_db: Path, postgres_url: str, tmp_path: Path
) -> None:
    from miniengine import Group, load_group
    from miniengine.storage.copy import copy_database

    node = Int(6).store()
    node.base.extras.set_many({"tag": "copied", "none": None, "list": [1, "two", {"x": 3.5}]})
    comment = node.base.comments.add("copied too")
    group = Group(label="copied").store()
    group.add_nodes(node)
    close_all_stores()
    close_all_backends()
    copy_database(miniengine_db, postgres_url)
    back = tmp_path / "back.sqlite"
    copy_database(postgres_url, back)
    for db in (postgres_url, back):
        again = load_node(node.pk, db=db)
        assert again.base.extras.all == {
            "tag": "copied",
            "none": None,
            "list": [1, "two", {"x": 3.5}],
        }, db
        assert [(c.pk, c.content) for c in again.base.comments.all()] == [
            (comment.pk, "copied too")
        ]
        copied = load_group("copied", db=db)
        assert copied.uuid == group.uuid
        assert [n.pk for n in copied.nodes] == [node.pk]
        # new rows after the copied ones (the identities were moved on)
        assert Group(label="new").store(db).pk != group.pk


def test_extras_read_in_one_key_order_on_both_backends(backend_db: Any) -> None:
    """PostgreSQL's jsonb keeps keys shortest first, sqlite in the order they were set: the
    guide's ``print(node.base.extras.all)`` printed differently; keys now come sorted, at
    every depth, on both, for a node, an unstored node and a group."""
    from miniengine import Group

    value = {"zeta": 1, "a": {"yy": 1, "b": [{"long key": 1, "k": 2}]}, "mid": None}
    expected = "{'a': {'b': [{'k': 2, 'long key': 1}], 'yy': 1}, 'mid': None, 'zeta': 1}"
    unstored = Int(1)
    unstored.base.extras.set_many({"reviewed": True, "score": 0.5, "tags": []})
    assert list(unstored.base.extras.all) == ["reviewed", "score", "tags"]
    node = unstored.store()
    node.base.extras.set_many({"zz": value, "reviewed": False})
    assert list(load_node(node.pk).base.extras.keys()) == ["reviewed", "score", "tags", "zz"]
    assert repr(load_node(node.pk).base.extras.get("zz")) == expected
    group = Group(label="ordered").store()
    group.base.extras.set_many(value)
    assert repr(group.base.extras.all) == expected
