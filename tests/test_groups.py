"""Groups of nodes on sqlite and on PostgreSQL: the ``Group`` API as AiiDA's, group types by
subclass, and the ``miniengine group`` and ``miniengine node`` commands (real subprocesses)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from miniengine import (
    Group,
    Int,
    ModificationNotAllowed,
    MultipleObjectsError,
    Node,
    NotExistent,
    ValidationError,
    load_group,
    load_node,
    orm,
)
from miniengine.storage.open import close_all_backends
from miniengine.storage.store import close_all_stores
from tests.test_cli import cli, table_rows


class Family(Group, type_string="tests.family"):
    """A group type of its own, as an AiiDA plugin's ``UpfFamily``."""


def _close() -> None:
    close_all_stores()
    close_all_backends()


def test_names_are_exported_as_in_aiida() -> None:
    assert orm.Group is Group and orm.load_group is load_group and orm.Node is Node
    assert isinstance(Int(1), Node)
    assert Group.type_string == "core" and Family.type_string == "tests.family"


def test_store_add_remove_count(backend_db: Any) -> None:
    group = Group(label="runs", description="the first runs").store()
    assert group.is_stored and group.pk is not None and group.is_empty
    one, two = Int(1).store(), Int(2).store()
    group.add_nodes([one, two])
    group.add_nodes(one)  # adding twice is idempotent
    assert group.count() == 2 and len(group) == 2
    assert [node.pk for node in group.nodes] == [one.pk, two.pk]
    group.remove_nodes(one)
    assert [node.pk for node in load_group("runs").nodes] == [two.pk]
    with pytest.raises(ValueError, match="stored"):
        group.add_nodes(Int(3))
    with pytest.raises(ModificationNotAllowed, match="not stored"):
        Group(label="unstored").add_nodes(one)


def test_only_nodes_go_in_a_group_and_a_bad_one_changes_nothing(backend_db: Any) -> None:
    """A group (whose pk is some node's pk too), a pk or a string is refused, naming it, and
    the nodes given with it are not added: the group holds what it held."""
    from miniengine import MiniengineError

    group = Group(label="members").store()
    other = Group(label="not a node").store()
    one, two = Int(1).store(), Int(2).store()
    group.add_nodes(one)
    for bad in (other, [two, other], two.pk, [two, str(two.pk)], "abc"):
        with pytest.raises(TypeError, match="only nodes") as caught:
            group.add_nodes(bad)
        assert isinstance(caught.value, MiniengineError)
        with pytest.raises(TypeError, match="only nodes"):
            group.remove_nodes(bad)
    with pytest.raises(ValidationError, match="not stored"):
        group.add_nodes([two, Int(3)])
    assert [node.pk for node in load_group("members").nodes] == [one.pk]


def test_a_node_of_another_database_is_refused(
    backend_db: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node stored in another database file has a pk that names another node here: adding
    it added that other node; it is refused, naming the other database, before the group
    changes."""
    here = Int(100).store()
    assert here.pk is not None
    with monkeypatch.context() as elsewhere:
        elsewhere.setenv("MINIENGINE_DB", str(tmp_path / "elsewhere.sqlite"))
        other = Int(1).store()
        while other.pk is not None and other.pk < here.pk:
            other = Int(1).store()
    assert other.pk == here.pk  # the same pk, another node
    group = Group(label="here").store()
    for change in (group.add_nodes, group.remove_nodes):
        with pytest.raises(ValidationError, match="stored in another database"):
            change([here, other])
    assert group.count() == 0


def test_load_group_by_label_pk_and_uuid(backend_db: Any) -> None:
    group = Group(label="by-any-name").store()
    assert group.uuid is not None
    _close()
    for identifier in ("by-any-name", group.pk, str(group.pk), group.uuid, group.uuid[:13]):
        loaded = load_group(identifier)
        assert loaded == group and loaded.label == "by-any-name", identifier
    assert load_group(label="by-any-name") == load_group(pk=group.pk) == load_group(uuid=group.uuid)
    with pytest.raises(NotExistent, match="nothing-like-it"):
        load_group("nothing-like-it")


def test_a_node_in_many_groups_and_delete_keeps_the_nodes(backend_db: Any) -> None:
    node = Int(7).store()
    first = Group(label="first").store()
    second = Group(label="second").store()
    first.add_nodes(node)
    second.add_nodes(node)
    assert first.pk is not None
    Group.collection.delete(first.pk)
    assert load_node(node.pk).value == 7
    assert [n.pk for n in second.nodes] == [node.pk]
    assert [g.label for g in Group.collection.all()] == ["second"]
    with pytest.raises(NotExistent):
        load_group("first")
    with pytest.raises(NotExistent):
        Group.collection.delete(first.pk)


def test_label_and_type_are_unique_and_the_error_names_the_label(backend_db: Any) -> None:
    Group(label="taken").store()
    with pytest.raises(ValidationError, match="'taken'"):
        Group(label="taken").store()
    # the same label of another type is another group
    family = Family(label="taken").store()
    assert family.type_string == "tests.family"
    with pytest.raises(MultipleObjectsError, match="pk"):
        load_group("taken")
    assert isinstance(load_group(pk=family.pk), Family)
    assert load_group("taken", sub_classes=(Family,)) == family
    renamed = Group(label="other").store()
    with pytest.raises(ValidationError, match="'taken'"):
        renamed.label = "taken"
    renamed.label = "renamed"
    renamed.description = "now described"
    again = load_group("renamed")
    assert (again.label, again.description) == ("renamed", "now described")


def test_collection_by_type_and_get_or_create(backend_db: Any) -> None:
    made, created = Family.collection.get_or_create("pseudos")
    same, created_again = Family.collection.get_or_create("pseudos")
    assert created and not created_again and made == same
    assert isinstance(same, Family)
    plain, plain_created = Group.collection.get_or_create("pseudos")
    assert plain_created and type(plain) is Group and plain != made
    assert [g.pk for g in Family.collection.all()] == [made.pk]
    assert {g.pk for g in Group.collection.all()} == {made.pk, plain.pk}
    assert Family.collection.get(label="pseudos") == made
    with pytest.raises(NotExistent):
        Family.collection.get(label="nothing")


# the command line ------------------------------------------------------------------------------


@pytest.mark.long_on(
    "postgresql", reason="the commands' parsing and printing; the API tests run on both backends"
)
def test_group_commands(backend_db: Any) -> None:
    db = backend_db
    one, two = Int(1).store(), Int(2).store()
    _close()
    assert "created group 'calcs'" in cli("group", "create", "calcs", "-D", "some", db=db).ok()
    assert "'calcs'" in cli("group", "create", "calcs", db=db).failed()
    assert (
        "added 2 node(s)"
        in cli("group", "add-nodes", "calcs", str(one.pk), str(two.pk), db=db).ok()
    )
    assert "added 0 node(s)" in cli("group", "add-nodes", "calcs", str(one.pk), db=db).ok()
    assert "999999" in cli("group", "add-nodes", "calcs", "999999", db=db).failed()
    # as verdi, a node may be named by its uuid (or a unique prefix of it) too
    three = Int(3).store()
    assert three.uuid is not None
    _close()
    added = cli("group", "add-nodes", "calcs", three.uuid, db=db).ok()
    assert "added 1 node(s) to group 'calcs' (3 in it)" in added
    removed = cli("group", "remove-nodes", "calcs", three.uuid[14:], db=db).ok()
    assert "removed 1 node(s) from group 'calcs' (2 in it)" in removed
    rows = table_rows(cli("group", "list", db=db).ok())
    assert rows == [[rows[0][0], "calcs", "core", "2", "some"]]
    listed = json.loads(cli("group", "list", "--json", db=db).ok())
    assert [(g["label"], g["count"], g["type_string"]) for g in listed] == [("calcs", 2, "core")]
    shown = json.loads(cli("group", "show", "calcs", "--json", db=db).ok())
    assert [n["pk"] for n in shown["nodes"]] == [one.pk, two.pk]
    assert "removed 1 node(s)" in cli("group", "remove-nodes", "calcs", str(one.pk), db=db).ok()
    assert str(two.pk) in cli("group", "show", str(shown["pk"]), db=db).ok()
    assert "kept" in cli("group", "delete", "calcs", db=db).ok()
    assert "no groups" in cli("group", "list", db=db).ok()
    assert json.loads(cli("group", "list", "--json", db=db).ok()) == []
    assert load_node(two.pk).value == 2


@pytest.mark.long_on(
    "postgresql", reason="the commands' parsing and printing; the API tests run on both backends"
)
def test_node_commands(backend_db: Any) -> None:
    db = backend_db
    node = Int(41).store()
    node.base.extras.set_many({"tag": "answer", "tries": [1, 2]})
    node.base.comments.add("almost")
    Group(label="answers").store().add_nodes(node)
    _close()
    shown = json.loads(cli("node", "show", str(node.pk), "--json", db=db).ok())
    assert shown["pk"] == node.pk and shown["type"] == "core.int" and shown["extras"] == 2
    assert [g["label"] for g in shown["groups"]] == ["answers"]
    assert [c["content"] for c in shown["comments"]] == ["almost"]
    text = cli("node", "show", str(node.pk), db=db).ok()
    assert "answers" in text and "almost" in text
    assert json.loads(cli("node", "attributes", str(node.pk), "--json", db=db).ok()) == {
        "value": 41
    }
    assert json.loads(cli("node", "extras", str(node.pk), "--json", db=db).ok()) == {
        "tag": "answer",
        "tries": [1, 2],
    }
    assert 'tag    "answer"' in cli("node", "extras", str(node.pk), db=db).ok()
    assert "999999" in cli("node", "show", "999999", db=db).failed()


def test_pks_no_column_can_hold_name_nothing(backend_db: Any) -> None:
    from miniengine.runtime.context import store_for

    store = store_for(None)
    group = Group(label="bounds").store()
    assert group.pk is not None
    huge = 2**70
    with pytest.raises(NotExistent, match=str(huge)):
        store.groups.add_group_nodes(group.pk, [huge])
    assert store.groups.remove_group_nodes(group.pk, [huge, -huge]) == 0
    assert store.groups.delete_group(huge) is False
    assert store.groups.find_groups(pk=huge) == []
    assert store.groups.group_node_pks(huge) == [] and store.groups.group_count(huge) == 0
    assert store.groups.comments(huge) == [] and store.groups.node_groups(huge) == []
    assert store.groups.remove_comment(huge) is False
    with pytest.raises(NotExistent):
        store.groups.extras(huge)
    with pytest.raises(NotExistent):
        store.groups.set_extras(huge, {"a": 1})
    with pytest.raises(NotExistent):
        load_group(huge)
    with pytest.raises(ValidationError, match="label"):
        Group(label="  ")


def test_group_extras(backend_db: Any) -> None:
    group = Group(label="with-extras")
    group.base.extras.set("before", "storing")
    group.store()
    group.base.extras.set_many({"n": 3, "list": [1, None]})
    _close()
    extras = load_group("with-extras").base.extras
    assert extras.all == {"before": "storing", "n": 3, "list": [1, None]}
    extras.delete("before")
    with pytest.raises(AttributeError, match=r"'before'.*group"):
        extras.delete("before")
    extras.reset({"only": True})
    assert load_group("with-extras").base.extras.all == {"only": True}
    with pytest.raises(ValidationError, match="'bad'"):
        extras.set("bad", {1, 2})
