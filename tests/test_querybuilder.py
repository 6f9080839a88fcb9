"""The QueryBuilder on both backends: every operator and traversal against a graph built here,
checked against the same answer computed in Python; errors before any SQL; batches; async."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import miniengine
import miniengine.orm
from miniengine import Float, Int, QueryBuilder, Str, calcfunction, run
from miniengine.core.query import QueryError
from miniengine.exceptions import MultipleObjectsError, NotExistent
from miniengine.orm import CalcFunctionNode, Data, Group, Node, ProcessNode, WorkFunctionNode
from miniengine.runtime.context import store_for

pytestmark = pytest.mark.backends


@calcfunction
def add(x: Int, y: Int) -> Int:
    return Int(x.value + y.value)


@dataclass
class Graph:
    calcs: dict[int, dict[str, Any]]  # calc pk -> its extras
    inputs: dict[int, dict[str, int]]  # calc pk -> input label -> input pk
    outputs: dict[int, int]  # calc pk -> result pk
    values: dict[int, int]  # Int pk -> value
    group_pk: int
    grouped: set[int]  # the calcs in the group


def _extras(i: int) -> dict[str, Any]:
    extras: dict[str, Any] = {
        "name": f"Run_{i}" if i % 2 else f"run_{i}",
        "parity": "odd" if i % 2 else "even",
        "weight": i * 1.5,
        "tags": [i, "t"],
        "flag": i % 3 == 0,
        "meta": {"level": i, "nested": {"deep": i % 2}},
    }
    if i == 5:
        extras["idx"] = "five"  # a string where the others have numbers
    elif i != 4:
        extras["idx"] = i  # node 4 has no idx at all
    if i == 3:
        extras["none"] = None
    return extras


@pytest.fixture
def graph() -> Graph:
    calcs: dict[int, dict[str, Any]] = {}
    inputs: dict[int, dict[str, int]] = {}
    outputs: dict[int, int] = {}
    values: dict[int, int] = {}
    for i in range(7):
        x, y = Int(i).store(), Int(100).store()
        result, node = run.get_node(add, x, y)
        node.base.extras.set_many(_extras(i))
        calcs[node.pk] = _extras(i)
        inputs[node.pk] = {"x": x.pk, "y": y.pk}
        outputs[node.pk] = result.pk
        values.update({x.pk: i, y.pk: 100, result.pk: i + 100})
    Str("not an int").store()
    Float(2.5).store()
    group = Group(label="odd runs").store()
    grouped = {pk for pk, extras in calcs.items() if extras["parity"] == "odd"}
    group.add_nodes([miniengine.load_node(pk) for pk in grouped])
    return Graph(calcs, inputs, outputs, values, group.pk, grouped)


def _pks(filters: dict[str, Any]) -> set[int]:
    qb = QueryBuilder().append(CalcFunctionNode, filters=filters, project="id")
    found = qb.all(flat=True)
    assert len(found) == qb.count()
    return set(found)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_MISSING = object()

#: (filters, the same test in Python on a calc's extras)
CASES: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"extras.idx": 2}, lambda e: _number(e.get("idx")) and e["idx"] == 2),
    ({"extras.idx": {"==": "five"}}, lambda e: e.get("idx") == "five"),
    ({"extras.idx": {">": 2}}, lambda e: _number(e.get("idx")) and e["idx"] > 2),
    ({"extras.idx": {"<": 2}}, lambda e: _number(e.get("idx")) and e["idx"] < 2),
    ({"extras.idx": {">=": 3}}, lambda e: _number(e.get("idx")) and e["idx"] >= 3),
    ({"extras.idx": {"<=": 3}}, lambda e: _number(e.get("idx")) and e["idx"] <= 3),
    ({"extras.weight": {">": 4.4}}, lambda e: e["weight"] > 4.4),
    ({"extras.idx": {"in": [1, 3, "five"]}}, lambda e: e.get("idx") in (1, 3, "five")),
    ({"extras.idx": {"!in": [1, 3]}}, lambda e: "idx" in e and e["idx"] not in (1, 3)),
    ({"extras.name": {"like": "run%"}}, lambda e: e["name"].startswith("run")),
    ({"extras.name": {"like": "R_n\\_3"}}, lambda e: e["name"] == "Run_3"),
    ({"extras.name": {"ilike": "RUN%"}}, lambda e: True),
    ({"extras.name": {"!like": "run%"}}, lambda e: not e["name"].startswith("run")),
    ({"extras.parity": {"!==": "odd"}}, lambda e: e["parity"] != "odd"),
    ({"extras.flag": True}, lambda e: e["flag"] is True),
    ({"extras.flag": False}, lambda e: e["flag"] is False),
    ({"extras.none": None}, lambda e: "none" in e and e["none"] is None),
    ({"extras.tags": [3, "t"]}, lambda e: e["tags"] == [3, "t"]),
    ({"extras.idx": {"of_type": "string"}}, lambda e: isinstance(e.get("idx"), str)),
    ({"extras.idx": {"of_type": "number"}}, lambda e: _number(e.get("idx"))),
    ({"extras.tags": {"of_type": "array"}}, lambda e: True),
    ({"extras.meta": {"of_type": "object"}}, lambda e: True),
    ({"extras.flag": {"of_type": "boolean"}}, lambda e: True),
    ({"extras": {"has_key": "idx"}}, lambda e: "idx" in e),
    ({"extras.meta": {"has_key": "nested"}}, lambda e: True),
    ({"extras.meta.nested.deep": 1}, lambda e: e["meta"]["nested"]["deep"] == 1),
    ({"extras.meta.level": {">": 4}}, lambda e: e["meta"]["level"] > 4),
    (
        {"or": [{"extras.idx": 1}, {"extras.parity": "even", "extras.weight": {"<": 4}}]},
        lambda e: e.get("idx") == 1 or (e["parity"] == "even" and e["weight"] < 4),
    ),
    (
        {"and": [{"extras.idx": {">": 0}}, {"extras.idx": {"<": 3}}]},
        lambda e: _number(e.get("idx")) and 0 < e["idx"] < 3,
    ),
    (
        {"extras.idx": {"or": [{"==": 0}, {">": 5}]}},
        lambda e: _number(e.get("idx")) and (e["idx"] == 0 or e["idx"] > 5),
    ),
]


def test_each_operator_on_extras_matches_python(graph: Graph) -> None:
    for filters, predicate in CASES:
        expected = {pk for pk, extras in graph.calcs.items() if predicate(extras)}
        assert _pks(filters) == expected, filters


def test_filters_on_columns(graph: Graph) -> None:
    pks = sorted(graph.calcs)
    assert _pks({"id": pks[2]}) == {pks[2]}
    assert _pks({"id": {"in": pks[:3]}}) == set(pks[:3])
    assert _pks({"id": {">": pks[3]}}) == set(pks[4:])
    assert _pks({"attributes.process_state": "finished"}) == set(pks)
    assert _pks({"attributes.exit_status": 0, "process_label": "add"}) == set(pks)
    assert _pks({"attributes.exception": None}) == set(pks)
    assert _pks({"process_label": {"like": "A%"}}) == set()
    assert _pks({"process_label": {"ilike": "A%"}}) == set(pks)
    assert _pks({"attributes.process_state": {"!in": ["finished"]}}) == set()
    assert _pks({"paused": False}) == set(pks) and _pks({"attributes.paused": True}) == set()
    # values are parameters, never SQL
    assert _pks({"process_label": "add' OR '1'='1"}) == set()
    assert _pks({"extras": {"has_key": 'idx" OR 1=1 --'}}) == set()
    assert _pks({"extras.name": {"in": ["run_0') OR ('1'='1"]}}) == set()
    uuid = miniengine.load_node(pks[0]).uuid
    assert _pks({"uuid": {"like": "%" + uuid[-12:]}}) == {pks[0]}
    ctime = QueryBuilder().append(Node, filters={"id": pks[3]}, project="ctime").first(flat=True)
    assert _pks({"ctime": {"<=": ctime}}) == set(pks[:4])


def test_entity_classes_and_subclassing(graph: Graph) -> None:
    all_nodes = len(graph.values) + 2 + len(graph.calcs)
    assert QueryBuilder().append(Node).count() == all_nodes
    assert QueryBuilder().append(Data).count() == len(graph.values) + 2
    assert QueryBuilder().append(Int).count() == len(graph.values)
    assert QueryBuilder().append(miniengine.orm.NumericType).count() == len(graph.values) + 1
    assert QueryBuilder().append(miniengine.orm.NumericType, subclassing=False).count() == 0
    assert QueryBuilder().append(ProcessNode).count() == len(graph.calcs)
    assert QueryBuilder().append(WorkFunctionNode).count() == 0
    assert QueryBuilder().append(Group, project="id").all(flat=True) == [graph.group_pk]
    value = QueryBuilder().append(Str, project="attributes.value").one()
    assert value == ["not an int"]


def test_traversal_along_links(graph: Graph) -> None:
    # outputs of the calcs whose extras say odd: with_incoming
    qb = QueryBuilder()
    qb.append(CalcFunctionNode, tag="calc", filters={"extras.parity": "odd"}, project="id")
    qb.append(Int, with_incoming="calc", project=["id", "attributes.value"])
    expected = sorted(
        [pk, graph.outputs[pk], graph.values[graph.outputs[pk]]]
        for pk in graph.calcs
        if graph.calcs[pk]["parity"] == "odd"
    )
    assert sorted(qb.all()) == expected
    assert qb.count() == len(expected)

    # inputs labelled x: with_outgoing and an edge filter and projection
    qb = QueryBuilder()
    qb.append(CalcFunctionNode, tag="calc", project="id")
    qb.append(
        Int,
        with_outgoing="calc",
        edge_filters={"label": "x"},
        edge_project=["label", "type"],
        project="id",
    )
    found = qb.all()
    assert sorted(row[0] for row in found) == sorted(graph.calcs)
    assert all(row[1:] == [graph.inputs[row[0]]["x"], "x", "input_calc"] for row in found)
    rows = qb.dict()
    assert rows[0]["calc--int_2"]["label"] == "x"

    # a path of three: the calcs whose input y is 100, then their outputs above 103
    qb = QueryBuilder()
    qb.append(Int, tag="y", filters={"id": {"in": [v["y"] for v in graph.inputs.values()]}})
    qb.append(CalcFunctionNode, tag="calc", with_incoming="y")
    qb.append(Int, with_incoming="calc", project="id", filters={"label": ""})
    assert sorted(qb.all(flat=True)) == sorted(graph.outputs.values())
    # distinct: each calc has two inputs, so its label comes twice unless distinct
    qb = QueryBuilder().append(CalcFunctionNode, tag="c", project="process_label")
    qb.append(Int, with_incoming="c")
    assert qb.count() == len(graph.calcs)
    qb = QueryBuilder().append(Int, tag="i").append(CalcFunctionNode, with_incoming="i")
    qb.add_projection("i", "id")
    assert qb.count() == 2 * len(graph.calcs)
    qb = QueryBuilder().append(CalcFunctionNode, tag="c", project="process_label")
    qb.append(Int, with_outgoing="c")
    assert qb.count() == 2 * len(graph.calcs)
    assert qb.distinct().all() == [["add"]] and qb.count() == 1


def test_traversal_through_groups(graph: Graph) -> None:
    qb = QueryBuilder().append(Group, tag="g", filters={"label": "odd runs"})
    qb.append(CalcFunctionNode, with_group="g", project="id")
    assert set(qb.all(flat=True)) == graph.grouped
    qb = QueryBuilder().append(CalcFunctionNode, tag="n", filters={"id": min(graph.grouped)})
    qb.append(Group, with_node="n", project="*")
    (group,) = qb.all(flat=True)
    assert isinstance(group, Group) and group.label == "odd runs"


def test_projections_order_limit_offset(graph: Graph) -> None:
    qb = QueryBuilder().append(
        CalcFunctionNode, tag="c", project=["id", "extras.weight", "extras.meta", "extras"]
    )
    qb.order_by({"c": [{"extras.weight": {"order": "desc"}}]})
    rows = qb.all()
    assert [row[0] for row in rows] == sorted(graph.calcs, reverse=True)
    assert all(row[3] == graph.calcs[row[0]] for row in rows)
    assert all(row[1:3] == [row[3]["weight"], row[3]["meta"]] for row in rows)
    assert qb.limit(2).offset(1).all() == rows[1:3]
    assert qb.count() == 2
    node = QueryBuilder().append(CalcFunctionNode).order_by({"calcfunctionnode_1": "id"}).first()
    assert node[0].pk == min(graph.calcs) and node[0].process_label == "add"
    assert QueryBuilder().append(CalcFunctionNode, filters={"id": -1}).first() is None
    assert miniengine.orm.QueryBuilder is QueryBuilder


def test_one_raises_as_aiida(graph: Graph) -> None:
    with pytest.raises(NotExistent):
        QueryBuilder().append(Int, filters={"id": -1}).one()
    with pytest.raises(MultipleObjectsError):
        QueryBuilder().append(Int).one()
    pk = min(graph.calcs)
    (node,) = QueryBuilder().append(Node, filters={"id": pk}).one()
    assert node.pk == pk


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: QueryBuilder().append(Int, filters={"extras.x": {"~": 1}}), "'~'"),
        (lambda: QueryBuilder().append(Int, tag="n", filters={"nope": 1}), "'n': no field 'nope'"),
        (lambda: QueryBuilder().append(Int, filters={"extras.a-b": 1}), "'a-b'"),
        (lambda: QueryBuilder().append(Int, filters={"attributes": 1}), "only 'has_key'"),
        (lambda: QueryBuilder().append(Int, filters={"extras.x": {"longer": -1}}), "non-negative"),
        (lambda: QueryBuilder().append(Int, filters={"id": {"in": 3}}), "needs a list"),
        (lambda: QueryBuilder().append(Int, filters={"label": {"like": 3}}), "needs a string"),
        (lambda: QueryBuilder().append(Int, filters={"extras.a": {"of_type": "x"}}), "of_type"),
        (
            lambda: QueryBuilder().append(Int, filters={"id": {"has_key": "a"}}),
            "extras and attributes only",
        ),
        (lambda: QueryBuilder().append(Int).append(Int), "say how it joins"),
        (lambda: QueryBuilder().append(Int).append(Int, with_incoming="x"), "no such tag"),
        (lambda: QueryBuilder().append(Int, tag="a").append(Int, with_callee="a"), "with_callee"),
        (
            lambda: QueryBuilder().append(Int, tag="a").append(Int, tag="a", with_incoming="a"),
            "already",
        ),
        (
            lambda: QueryBuilder().append(Int, tag="a").append(Group, with_incoming="a"),
            "joins a node",
        ),
        (lambda: QueryBuilder().append(Int).order_by({"z": "id"}), "no tag 'z'"),
        (lambda: QueryBuilder().append(Int, tag="a").order_by({"a": {"id": "up"}}), "'asc'"),
        (lambda: QueryBuilder().append(dict), "node or group class"),
        (lambda: QueryBuilder().count(), "empty"),
        (lambda: QueryBuilder().append(Int).limit(-1), "limit"),
        (lambda: list(QueryBuilder().append(Int).iterall(batch_size=0)), "batch_size"),
    ],
)
def test_mistakes_are_named_before_any_sql(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(QueryError, match=".*" + message.replace("(", "\\(")):
        build()


def test_iterall_reads_in_batches(graph: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    concern = type(store_for(None).query_builder)
    read = concern.rows
    calls: list[int | None] = []

    def rows(self: Any, spec: Any) -> Any:
        calls.append(spec.limit)
        return read(self, spec)

    monkeypatch.setattr(concern, "rows", rows)
    qb = QueryBuilder().append(Int, project="id").order_by({"int_1": "id"})
    assert [row[0] for row in qb.iterall(batch_size=4)] == sorted(graph.values)
    assert calls == [4] * (len(graph.values) // 4 + 1)
    calls.clear()
    assert len(list(qb.limit(5).iterall(batch_size=2))) == 5
    assert calls == [2, 2, 1]
    assert len(qb.limit(None).all(batch_size=7)) == len(graph.values)
    assert [row["int_1"]["id"] for row in qb.iterdict(batch_size=3)] == sorted(graph.values)


def test_aiterall_keeps_the_loop_running(graph: Graph) -> None:
    qb = QueryBuilder().append(Int, project=["id", "*"]).order_by({"int_1": "id"})
    expected = [row[0] for row in qb.all()]

    async def main() -> tuple[list[int], int]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        found = [row[0] async for row in qb.aiterall(batch_size=3)]
        done = True
        await task
        return found, ticks

    found, ticks = asyncio.run(main())
    assert found == expected
    assert ticks >= len(expected) // 3  # the loop ran while each batch was read


def test_an_index_on_an_extra_is_used() -> None:
    for i in range(1200):
        node = Int(i)
        node.base.extras.set("serial", i)
        node.store()
    store = store_for(None)
    name = store.query_builder.index_extra("serial")
    assert store.query_builder.index_extra("serial") == name  # twice is fine
    qb = QueryBuilder().append(Int, filters={"extras.serial": 77}, project="attributes.value")
    plan = "\n".join(store.query_builder.explain(qb.spec()))
    assert name in plan, plan
    assert qb.all(flat=True) == [77]


def _cli(db: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "miniengine", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MINIENGINE_DB": str(db)},
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_process_list_filters_and_db_index(graph: Graph, miniengine_db: Path | str) -> None:
    listed = _cli(miniengine_db, "process", "list", "-a", "-X", "parity=odd", "--json")
    assert listed.returncode == 0, listed.stderr
    odd = {pk for pk, extras in graph.calcs.items() if extras["parity"] == "odd"}
    assert {row["pk"] for row in json.loads(listed.stdout)} == odd
    listed = _cli(miniengine_db, "process", "list", "-a", "-L", "a%", "-E", "0", "-X", "idx=2")
    assert listed.returncode == 0, listed.stderr
    (pk,) = [pk for pk, extras in graph.calcs.items() if extras.get("idx") == 2]
    assert f"\n{pk} " in listed.stdout.replace("  ", " ") and "Total results: 1" in listed.stdout
    refused = _cli(miniengine_db, "process", "list", "-X", "a-b=1")
    assert refused.returncode != 0 and "'a-b'" in refused.stderr

    indexed = _cli(miniengine_db, "db", "index", "extras.idx")
    assert indexed.returncode == 0, indexed.stderr
    assert "indexed extras.idx (nodes_extras_idx)" in indexed.stdout
    refused = _cli(miniengine_db, "db", "index", "attributes.process_state")
    assert refused.returncode != 0 and "extras.KEY" in refused.stderr
