"""Filters, orders and projections on node attributes, on both backends: each operator against
nodes built here, checked against the answer computed in Python from the nodes' values; the
expression index is read (EXPLAIN); PostgreSQL's JSON copy is filled by the migration and by
``db copy``; sqlite's index and a program without miniengine's SQL functions."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from miniengine import Bool, Dict, Float, Int, List, QueryBuilder, Str, calcfunction, run
from miniengine.orm import CalcFunctionNode, Data
from miniengine.runtime.context import store_for

pytestmark = pytest.mark.backends


def _dicts() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for i in range(8):
        content: dict[str, Any] = {
            "name": f"Item_{i}" if i % 2 else f"item_{i}",
            "energy": -1.5 * i,
            "kpoints": [i] * (i % 4),
            "flag": i % 3 == 0,
            "params": {"ecut": 30 + 10 * i, "mode": {"kind": "scf" if i % 2 else "relax"}},
        }
        if i == 5:
            content["count"] = "five"  # a string where the others have numbers
        elif i != 4:
            content["count"] = i  # node 4 has none
        if i == 2:
            content["none"] = None
        if i == 3:
            content["blob"] = b"\x00\x01"  # bytes: not JSON, left out of queries
            content["mixed"] = [1, b"x"]  # a list holding bytes: left out whole
            content["nan"] = math.nan
        found.append(content)
    return found


def _build() -> dict[int, dict[str, Any]]:
    """The nodes stored, by pk, each with its attributes as AiiDA names them."""
    nodes: dict[int, dict[str, Any]] = {}
    for i in range(6):
        nodes[Int(i * 3).store().pk] = {"value": i * 3}
    for value in (2.5, -1.0, 7.0):
        nodes[Float(value).store().pk] = {"value": value}
    for text in ("alpha", "Beta", "gamma_1"):
        nodes[Str(text).store().pk] = {"value": text}
    for flag in (True, False):
        nodes[Bool(flag).store().pk] = {"value": flag}
    for content in _dicts():
        nodes[Dict(content).store().pk] = content
    for items in ([1, 2, 3], [], ["a"]):
        nodes[List(items).store().pk] = {"list": items}
    return nodes


_MISSING = object()


def _at(attributes: dict[str, Any], key: str) -> Any:
    value: Any = attributes
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(key: str, test: Callable[[Any], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda a: _number(_at(a, key)) and test(_at(a, key))


def _str(key: str, test: Callable[[str], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda a: isinstance(_at(a, key), str) and test(_at(a, key))


def _array(key: str, test: Callable[[list[Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda a: isinstance(_at(a, key), list) and test(_at(a, key))


#: (filters on Data nodes, the same test in Python on a node's attributes)
CASES: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"attributes.value": 6}, _num("value", lambda v: v == 6)),
    ({"attributes.value": {">": 5}}, _num("value", lambda v: v > 5)),
    ({"attributes.value": {"<": 2.5}}, _num("value", lambda v: v < 2.5)),
    ({"attributes.value": {">=": 7}}, _num("value", lambda v: v >= 7)),
    ({"attributes.value": {"<=": 0}}, _num("value", lambda v: v <= 0)),
    ({"attributes.value": {"==": "alpha"}}, lambda a: a.get("value") == "alpha"),
    ({"attributes.value": {">": "b"}}, _str("value", lambda v: v > "b")),
    ({"attributes.value": True}, lambda a: a.get("value") is True),
    ({"attributes.value": False}, lambda a: a.get("value") is False),
    ({"attributes.value": {"in": [3, 9, "Beta"]}}, lambda a: a.get("value") in (3, 9, "Beta")),
    # true is not the number 1, nor false 0, on either backend
    ({"attributes.value": {"in": [1, 0, 2.5]}}, _num("value", lambda v: v in (0, 1, 2.5))),
    ({"attributes.value": {"in": [True]}}, lambda a: a.get("value") is True),
    ({"attributes.none": {"in": [None, 5]}}, lambda a: "none" in a and a["none"] is None),
    (
        {"attributes.value": {"!in": [3, 9]}},
        lambda a: "value" in a and (not _number(a["value"]) or a["value"] not in (3, 9)),
    ),
    ({"attributes.value": {"like": "%a_1"}}, _str("value", lambda v: v == "gamma_1")),
    ({"attributes.value": {"like": "b%"}}, _str("value", lambda v: v.startswith("b"))),
    ({"attributes.value": {"ilike": "B%"}}, _str("value", lambda v: v.lower().startswith("b"))),
    ({"attributes.value": {"of_type": "number"}}, _num("value", lambda v: True)),
    ({"attributes.value": {"of_type": "string"}}, _str("value", lambda v: True)),
    ({"attributes.value": {"of_type": "boolean"}}, lambda a: isinstance(a.get("value"), bool)),
    ({"attributes.count": {">": 2}}, _num("count", lambda v: v > 2)),
    ({"attributes.count": "five"}, lambda a: a.get("count") == "five"),
    ({"attributes": {"has_key": "count"}}, lambda a: "count" in a),
    ({"attributes": {"!has_key": "count"}}, lambda a: "count" not in a),
    ({"attributes": {"has_key": "list"}}, lambda a: "list" in a),
    ({"attributes.params": {"has_key": "ecut"}}, lambda a: "params" in a),
    ({"attributes.params.ecut": {">": 60}}, _num("params.ecut", lambda v: v > 60)),
    ({"attributes.params.mode.kind": "scf"}, lambda a: _at(a, "params.mode.kind") == "scf"),
    ({"attributes.params.mode": {"of_type": "object"}}, lambda a: "params" in a),
    ({"attributes.energy": {"<": -4.0}}, _num("energy", lambda v: v < -4.0)),
    ({"attributes.name": {"like": "item%"}}, _str("name", lambda v: v.startswith("item"))),
    ({"attributes.name": {"!like": "item%"}}, _str("name", lambda v: not v.startswith("item"))),
    ({"attributes.flag": True}, lambda a: a.get("flag") is True),
    ({"attributes.none": None}, lambda a: "none" in a and a["none"] is None),
    ({"attributes.kpoints": [2, 2]}, lambda a: a.get("kpoints") == [2, 2]),
    ({"attributes.kpoints": {"of_length": 2}}, _array("kpoints", lambda v: len(v) == 2)),
    ({"attributes.kpoints": {"longer": 1}}, _array("kpoints", lambda v: len(v) > 1)),
    ({"attributes.kpoints": {"shorter": 1}}, _array("kpoints", lambda v: len(v) < 1)),
    ({"attributes.list": {"longer": 0}}, _array("list", lambda v: len(v) > 0)),
    ({"attributes.list": ["a"]}, lambda a: a.get("list") == ["a"]),
    ({"attributes.list": {"of_type": "array"}}, lambda a: "list" in a),
    # bytes, a list holding them and NaN are not JSON: no filter finds them
    ({"attributes": {"has_key": "blob"}}, lambda a: False),
    ({"attributes": {"has_key": "mixed"}}, lambda a: False),
    ({"attributes.nan": {"of_type": "number"}}, lambda a: False),
    (
        {"or": [{"attributes.value": 0}, {"attributes.count": {"<": 2}}]},
        lambda a: _num("value", lambda v: v == 0)(a) or _num("count", lambda v: v < 2)(a),
    ),
    (
        {"attributes.count": {"and": [{">": 0}, {"<": 7}]}},
        _num("count", lambda v: 0 < v < 7),
    ),
]


def test_each_operator_on_attributes_matches_python() -> None:
    nodes = _build()
    for filters, predicate in CASES:
        qb = QueryBuilder().append(Data, filters=filters, project="id")
        expected = {pk for pk, attributes in nodes.items() if predicate(attributes)}
        assert set(qb.all(flat=True)) == expected, filters
        assert qb.count() == len(expected), filters


def test_order_and_projection_on_attribute_paths() -> None:
    nodes = _build()
    qb = QueryBuilder().append(
        Dict,
        tag="d",
        filters={"attributes.count": {"of_type": "number"}},
        project=["id", "attributes.params.ecut", "attributes.params.mode", "attributes.blob"],
    )
    rows = qb.order_by({"d": [{"attributes.params.ecut": {"order": "desc"}}]}).all()
    expected = sorted(
        (pk for pk, a in nodes.items() if _number(a.get("count"))),
        key=lambda pk: -nodes[pk]["params"]["ecut"],
    )
    assert [row[0] for row in rows] == expected
    for pk, ecut, mode, blob in rows:
        assert ecut == nodes[pk]["params"]["ecut"] and mode == nodes[pk]["params"]["mode"]
        assert blob == nodes[pk].get("blob")  # projections read the stored value: bytes too
    # numbers order as numbers (an Int and a Float in one order)
    qb = QueryBuilder().append(
        Data, tag="n", filters={"attributes.value": {"of_type": "number"}}, project="id"
    )
    numbers = sorted((a["value"], pk) for pk, a in nodes.items() if _number(a.get("value")))
    assert qb.order_by({"n": "attributes.value"}).all(flat=True) == [pk for _, pk in numbers]
    # the whole attributes and a List's list, under AiiDA's names
    for pk, attributes in nodes.items():
        if "blob" in attributes or "nan" in attributes:
            continue
        qb = QueryBuilder().append(Data, filters={"id": pk}, project=["attributes"])
        assert qb.one() == [attributes]
    lists = QueryBuilder().append(List, project="attributes.list").all(flat=True)
    assert sorted(map(str, lists)) == sorted(str(a["list"]) for a in nodes.values() if "list" in a)


@calcfunction
def scale(x: Int, factor: Float) -> Float:
    return Float(x.value * factor.value)


def test_attribute_filters_along_links() -> None:
    results = {}
    for i in range(4):
        result, node = run.get_node(scale, Int(i), Float(0.5))
        results[node.pk] = result.value
    qb = QueryBuilder()
    qb.append(Int, tag="x", filters={"attributes.value": {">=": 2}})
    qb.append(CalcFunctionNode, tag="calc", with_incoming="x", project="id")
    qb.append(Float, with_incoming="calc", project="attributes.value")
    assert sorted(qb.all()) == sorted([pk, v] for pk, v in results.items() if v >= 1)


def test_an_index_on_an_attribute_is_used() -> None:
    for i in range(1200):
        Int(i).store()
        Dict({"serial": i, "nested": {"step": i % 10}}).store()
    store = store_for(None)
    name = store.query_builder.index_field("attributes", ("value",))
    assert store.query_builder.index_field("attributes", ("value",)) == name  # twice is fine
    nested = store.query_builder.index_field("attributes", ("nested", "step"))
    for qb, index in (
        (QueryBuilder().append(Int, filters={"attributes.value": 77}), name),
        (QueryBuilder().append(Int, filters={"attributes.value": {">": 1190}}), name),
        (QueryBuilder().append(Dict, filters={"attributes.nested.step": 3}), nested),
    ):
        plan = "\n".join(store.query_builder.explain(qb.spec()))
        assert index in plan, plan
    qb = QueryBuilder().append(Int, filters={"attributes.value": {">": 1190}})
    assert sorted(qb.add_projection("int_1", "attributes.value").all(flat=True)) == list(
        range(1191, 1200)
    )
    assert QueryBuilder().append(Dict, filters={"attributes.nested.step": 3}).count() == 120
    Int(5000).store()  # the index follows new nodes
    assert QueryBuilder().append(Int, filters={"attributes.value": 5000}).count() == 1
    assert store.query_builder.drop_index("attributes", ("value",)) is True
    assert store.query_builder.drop_index("attributes", ("value",)) is False
    assert QueryBuilder().append(Int, filters={"attributes.value": {">": 1190}}).count() == 10


def _cli(db: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "miniengine", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MINIENGINE_DB": str(db)},
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.sqlite_only(reason="writes the sqlite file with a connection of its own")
def test_db_index_on_an_attribute_and_a_program_without_the_functions(
    miniengine_db: Path,
) -> None:
    pk = Int(41).store().pk
    indexed = _cli(miniengine_db, "db", "index", "attributes.value", "extras.batch")
    assert indexed.returncode == 0, indexed.stderr
    assert "indexed attributes.value (nodes_attributes_value)" in indexed.stdout
    assert "indexed extras.batch (nodes_extras_batch)" in indexed.stdout
    refused = _cli(miniengine_db, "db", "index", "attributes.process_state")
    assert refused.returncode != 0 and "extras.KEY or attributes.KEY" in refused.stderr
    # a plain sqlite3 connection reads, but cannot write nodes while the index exists
    plain = sqlite3.connect(miniengine_db)
    try:
        assert plain.execute("SELECT count(*) FROM nodes").fetchone() == (1,)
        with pytest.raises(sqlite3.OperationalError, match="msgpack_extract"):
            plain.execute("UPDATE nodes SET attributes = attributes WHERE pk = ?", (pk,))
    finally:
        plain.close()
    dropped = _cli(miniengine_db, "db", "index", "--drop", "attributes.value")
    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout.strip() == "dropped the index on attributes.value"
    plain = sqlite3.connect(miniengine_db)
    try:
        plain.execute("UPDATE nodes SET label = 'written' WHERE pk = ?", (pk,))
        plain.commit()
    finally:
        plain.close()
    assert QueryBuilder().append(Int, filters={"label": "written"}, project="id").all() == [[pk]]
    again = _cli(miniengine_db, "db", "index", "--drop", "attributes.value")
    assert again.returncode == 0 and again.stdout.strip() == "no index on attributes.value"


@pytest.mark.sqlite_only(reason="copies the sqlite file into a PostgreSQL database of its own")
def test_db_copy_into_postgresql_and_the_migration_fill_the_json_copy(
    miniengine_db: Path, postgres_url: str, tmp_path: Path
) -> None:
    from miniengine.storage.copy import copy_database
    from miniengine.storage.open import open_backend
    from miniengine.storage.postgres.attribute_rows import backfill
    from miniengine.storage.postgres.schema import MIGRATIONS

    nodes = _build()
    copy_database(miniengine_db, postgres_url, repository=tmp_path / "repository")
    target = open_backend(postgres_url)
    try:
        for filters, predicate in CASES[:3] + CASES[-8:]:
            qb = QueryBuilder(db=target).append(Data, filters=filters, project="id")
            expected = {pk for pk, attributes in nodes.items() if predicate(attributes)}
            assert set(qb.all(flat=True)) == expected, filters

        # the rows of a database older than the JSON copy: the migration's step fills them
        def forget(connection: Any) -> None:
            connection.execute("UPDATE nodes SET attributes_json = NULL")

        target.write_sync(forget)
        qb = QueryBuilder(db=target).append(Data, filters=CASES[1][0], project="id")
        assert qb.count() == 0
        (step,) = [m for m in MIGRATIONS if m.after is not None and m.target == 11]
        assert step.after is not None
        assert target.write_sync(backfill, 4) == len(nodes)  # in batches of 4
        expected = {pk for pk, attributes in nodes.items() if CASES[1][1](attributes)}
        assert set(qb.all(flat=True)) == expected
    finally:
        target.close()


@pytest.mark.sqlite_only(reason="imports the sqlite file's archive into PostgreSQL")
def test_an_archive_imported_into_postgresql_is_queryable_by_attributes(
    miniengine_db: Path, postgres_url: str, tmp_path: Path
) -> None:
    from miniengine.storage.open import open_backend
    from miniengine.tools.archive import create_archive, import_archive

    values = {Int(i).store().uuid: i for i in range(6)}
    create_archive(tmp_path / "ints.aiida", all=True)
    target = open_backend(postgres_url)
    try:
        import_archive(tmp_path / "ints.aiida", db=target)
        qb = QueryBuilder(db=target).append(
            Int, filters={"attributes.value": {">=": 3}}, project="uuid"
        )
        assert sorted(qb.all(flat=True)) == sorted(u for u, v in values.items() if v >= 3)
    finally:
        target.close()


def test_aiterall_filters_on_attributes() -> None:
    import asyncio

    nodes = _build()
    qb = QueryBuilder().append(Data, tag="d", filters={"attributes.value": {">": 5}}, project="id")
    qb.order_by({"d": "id"})

    async def read() -> list[int]:
        return [row[0] async for row in qb.aiterall(batch_size=2)]

    expected = sorted(pk for pk, a in nodes.items() if _number(a.get("value")) and a["value"] > 5)
    assert asyncio.run(read()) == expected
