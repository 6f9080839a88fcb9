"""A label, description, comment or group label holding NUL is refused on both backends with a
``DataValueError`` naming the field, before anything is written: PostgreSQL's text cannot store
it (it raised a ``StoreError`` from the write), and sqlite refuses it too, so that a database can
be copied to PostgreSQL.  Non-ASCII text of every kind goes through unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from miniengine import Group, Int, QueryBuilder, calcfunction, load_group, load_node, run
from miniengine.core.data import DataValueError
from miniengine.exceptions import InputValidationError
from miniengine.orm import CalcFunctionNode

pytestmark = pytest.mark.backends

TEXT = "Énergie ✓ 日本語 \U0001f9ea \u202e"  # accents, CJK, an emoji, a bidi override


@calcfunction
def double(x: Int) -> Int:
    return Int(2 * x.value)


def test_non_ascii_text_round_trips(backend_db: Any) -> None:
    node = Int(1).store()
    node.label, node.description = TEXT, TEXT
    comment = node.base.comments.add(TEXT)
    group = Group(label=TEXT, description=TEXT).store()
    group.add_nodes(node)
    _, process = run.get_node(double, Int(2), metadata={"label": TEXT})
    assert load_node(node.pk).label == load_node(node.pk).description == TEXT
    assert load_node(node.pk).base.comments.get(comment.pk).content == TEXT
    assert load_group(TEXT).description == TEXT and load_group(TEXT).count() == 1
    assert load_node(process.pk).label == TEXT


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda node, group: setattr(node, "label", "a\x00b"), "a node's label"),
        (lambda node, group: setattr(node, "description", "\x00"), "a node's description"),
        (lambda node, group: node.base.comments.add("a\x00b"), "a comment"),
        (lambda node, group: setattr(group, "label", "g\x00"), "a group's label"),
        (lambda node, group: setattr(group, "description", "g\x00"), "a group's description"),
        (lambda node, group: Group(label="new\x00").store(), "a group's label"),
        (lambda node, group: Int(3, label="x\x00"), "a node's label"),
    ],
)
def test_nul_is_refused_before_any_write(
    backend_db: Any, change: Callable[[Any, Any], Any], field: str
) -> None:
    node = Int(1).store()
    node.label = "kept"
    node.base.comments.add("kept")
    group = Group(label="kept").store()
    with pytest.raises(DataValueError, match=f"{field} cannot hold the character NUL"):
        change(node, group)
    loaded = load_node(node.pk)
    assert loaded.label == "kept" and loaded.description == ""
    assert [c.content for c in loaded.base.comments.all()] == ["kept"]
    assert [(g.label, g.description) for g in Group.collection.all()] == [("kept", "")]


def test_nul_in_a_process_label_is_an_input_error(backend_db: Any) -> None:
    with pytest.raises(
        InputValidationError, match=r"metadata\.label cannot hold the character NUL"
    ):
        run(double, Int(2), metadata={"label": "a\x00"})
    assert QueryBuilder().append(CalcFunctionNode).count() == 0
