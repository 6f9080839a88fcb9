"""``with_ancestors`` and ``with_descendants`` on both backends: one recursive statement, checked
against the closure of the graph's links computed in Python (AiiDA's rule: along ``create``
and ``input_calc`` links only, never a workflow's calls, inputs or returns)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from miniengine import Int, QueryBuilder, calcfunction, run, workfunction
from miniengine.core.query import QueryError
from miniengine.orm import CalcFunctionNode, Data, Node, WorkFunctionNode

pytestmark = pytest.mark.backends


@calcfunction
def add(x: Int, y: Int) -> Int:
    return Int(x.value + y.value)


@calcfunction
def double(x: Int) -> Int:
    return Int(2 * x.value)


@workfunction
def add_then_double(x: Int, y: Int) -> Int:
    return double(add(x, y))


def _graph() -> dict[int, set[int]]:
    """Builds a provenance graph; returns each node's children along create/input_calc."""
    a, b, c = Int(1).store(), Int(2).store(), Int(3).store()
    ab = run(add, a, b)  # a, b -> add -> ab
    abc = run(add, ab, c)  # ab, c -> add -> abc
    run(double, abc)
    run(add_then_double, a, c)  # a workflow: its calls' links count, its own do not
    Int(99).store()  # alone
    children: dict[int, set[int]] = defaultdict(set)
    qb = QueryBuilder().append(Node, tag="src", project="id")
    qb.append(Node, with_incoming="src", edge_project="type", project="id")
    for source, target, link_type in qb.all():
        if link_type in ("create", "input_calc"):
            children[source].add(target)
    return children


def _closure(start: int, step: dict[int, set[int]]) -> set[int]:
    found: set[int] = set()
    todo = list(step.get(start, ()))
    while todo:
        pk = todo.pop()
        if pk not in found:
            found.add(pk)
            todo.extend(step.get(pk, ()))
    return found


def test_descendants_and_ancestors_match_the_closure_of_the_links() -> None:
    children = _graph()
    parents: dict[int, set[int]] = defaultdict(set)
    for source, targets in children.items():
        for target in targets:
            parents[target].add(source)
    every = QueryBuilder().append(Node, project="id").all(flat=True)
    for pk in every:
        qb = QueryBuilder().append(Node, tag="n", filters={"id": pk})
        qb.append(Node, with_ancestors="n", project="id")
        found = qb.all(flat=True)
        assert sorted(found) == sorted(_closure(pk, children)), pk  # each one once
        assert qb.count() == len(found)
        qb = QueryBuilder().append(Node, tag="n", filters={"id": pk})
        qb.append(Node, with_descendants="n", project="id")
        assert sorted(qb.all(flat=True)) == sorted(_closure(pk, parents)), pk
    # types and filters on both ends, and pairs: every Int with its Int descendants above 5
    qb = QueryBuilder().append(Int, tag="root", project="id")
    qb.append(Int, with_ancestors="root", filters={"attributes.value": {">": 5}}, project="id")
    values = dict(QueryBuilder().append(Int, project=["id", "attributes.value"]).all())
    expected = sorted(
        [root, pk]
        for root in values
        for pk in _closure(root, children)
        if pk in values and values[pk] > 5
    )
    assert sorted(qb.all()) == expected
    # the calculations that used a given input, however deep, and the workflow is not one
    (a,) = QueryBuilder().append(Int, filters={"attributes.value": 1}, project="id").first()
    qb = QueryBuilder().append(Data, tag="a", filters={"id": a})
    qb.append(CalcFunctionNode, with_ancestors="a", project="id")
    assert sorted(qb.all(flat=True)) == sorted(
        pk for pk in _closure(a, children) if pk not in values
    )
    qb = QueryBuilder().append(Data, tag="a", filters={"id": a})
    assert qb.append(WorkFunctionNode, with_ancestors="a").count() == 0


def test_a_recursive_relationship_is_checked() -> None:
    with pytest.raises(QueryError, match="has no edge"):
        QueryBuilder().append(Int, tag="a").append(Int, with_ancestors="a", edge_filters={"x": 1})
    with pytest.raises(QueryError, match="no such tag"):
        QueryBuilder().append(Int, tag="a").append(Int, with_descendants="b")
