"""AiiDA's QueryBuilder idioms, as a ported script writes them, on both backends: a class where
a tag goes, several classes in one ``append``, a process class for its nodes, datetimes and enum
members in filters; and values no database can compare refused alike on sqlite and PostgreSQL
(a ``QueryError``, a ``MiniengineError``, before any SQL runs)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest

from miniengine import Int, ProcessState, QueryBuilder, WorkChain, calcfunction, run
from miniengine.core.query import QueryError
from miniengine.exceptions import MiniengineError
from miniengine.orm import CalcFunctionNode, Float, Node, ProcessNode, Str, WorkChainNode

pytestmark = pytest.mark.backends


@calcfunction
def add(x: Int, y: Int) -> Int:
    return Int(x.value + y.value)


@calcfunction
def negate(x: Int) -> Int:
    return Int(-x.value)


class AddTwice(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.outline(cls.twice)
        spec.output("result", valid_type=Int)

    def twice(self) -> None:
        self.out("result", add(add(self.inputs.x, Int(1)), Int(1)))


@pytest.fixture
def runs() -> dict[str, list[int]]:
    adds = [run.get_node(add, Int(i), Int(10))[1].pk for i in range(3)]
    negates = [run.get_node(negate, Int(i))[1].pk for i in range(2)]
    chains = [run.get_node(AddTwice, x=Int(i))[1].pk for i in range(2)]
    Str("x").store()
    return {"add": adds, "negate": negates, "chains": chains}


def test_a_class_stands_for_its_tag(runs: dict[str, list[int]]) -> None:
    qb = QueryBuilder().append(WorkChainNode, project="id")
    assert qb.order_by({WorkChainNode: {"id": "desc"}}).all(flat=True) == runs["chains"][::-1]
    qb.add_filter(WorkChainNode, {"id": runs["chains"][0]})
    assert qb.all(flat=True) == [runs["chains"][0]]
    qb.add_projection(WorkChainNode, "attributes.process_label")
    assert qb.all() == [[runs["chains"][0], "AddTwice"]]


def test_several_classes_in_one_append(runs: dict[str, list[int]]) -> None:
    qb = QueryBuilder().append([CalcFunctionNode, WorkChainNode], project="id")
    calcs = QueryBuilder().append(CalcFunctionNode).count()
    assert qb.count() == calcs + len(runs["chains"])
    assert set(runs["chains"]) <= set(qb.all(flat=True))
    either = QueryBuilder().append((Str, Float, WorkChainNode), project="node_type")
    assert sorted(set(either.all(flat=True))) == ["core.str", "process.workchain"]
    everything = QueryBuilder().append([ProcessNode, Int, Str]).count()
    assert everything == QueryBuilder().append(Node).count()


def test_a_process_class_selects_its_own_nodes(runs: dict[str, list[int]]) -> None:
    chains = QueryBuilder().append(AddTwice, tag="wc", project="id")
    assert sorted(chains.all(flat=True)) == runs["chains"]
    assert sorted(QueryBuilder().append(negate, project="id").all(flat=True)) == runs["negate"]
    both = QueryBuilder().append([negate, AddTwice], project="id").all(flat=True)
    assert sorted(both) == sorted(runs["negate"] + runs["chains"])
    # a process class joins the path as any node class does, and stands for its tag
    results = (
        QueryBuilder()
        .append(AddTwice)
        .append(
            Int,
            with_incoming=AddTwice,
            edge_filters={"label": "result"},
            project="attributes.value",
        )
    )
    assert sorted(results.all(flat=True)) == [2, 3]
    with pytest.raises(QueryError, match="mixes process classes"):
        QueryBuilder().append([AddTwice, Int])


def test_datetimes_and_enum_members_in_filters(runs: dict[str, list[int]]) -> None:
    first = QueryBuilder().append(ProcessNode, filters={"id": runs["chains"][0]}, project="ctime")
    ctime = first.first(flat=True)
    # a datetime has whole microseconds: step one back, so that the node itself is after it
    when = datetime.datetime.fromtimestamp(ctime, tz=datetime.UTC)
    when -= datetime.timedelta(microseconds=1)
    later = QueryBuilder().append(ProcessNode, filters={"ctime": {">=": when}}, project="id")
    seconds = {"ctime": {">=": when.timestamp()}}
    numbers = QueryBuilder().append(ProcessNode, filters=seconds, project="id")
    assert sorted(later.all(flat=True)) == sorted(numbers.all(flat=True))
    assert runs["chains"][0] in later.all(flat=True)
    finished = {"attributes.process_state": ProcessState.FINISHED}
    assert QueryBuilder().append(ProcessNode, filters=finished).count() == 7 + 4
    # a pk spelled as a string is read as the number, on both databases
    assert QueryBuilder().append(Node, filters={"id": str(runs["add"][0])}).count() == 1


#: (a query, what its error names): each refused before any SQL runs
REFUSED: list[tuple[Callable[[], QueryBuilder], str]] = [
    (lambda: QueryBuilder().append(Node, filters={"id": {"like": "1%"}}), "holds numbers"),
    (lambda: QueryBuilder().append(Node, filters={"ctime": {">": "2026-01-01"}}), "datetime"),
    (lambda: QueryBuilder().append(Node, filters={"id": {">": "five"}}), "needs a number"),
    (lambda: QueryBuilder().append(Node, filters={"label": 5}), "needs a string"),
    (lambda: QueryBuilder().append(Node, filters={"label": {"in": ["a", 1]}}), "string"),
    (lambda: QueryBuilder().append(Float, filters={"attributes.value": float("nan")}), "nan"),
    (
        lambda: QueryBuilder().append(Float, filters={"attributes.value": {">": -float("inf")}}),
        "-inf",
    ),
    (lambda: QueryBuilder().append(Node, filters={"id": 10**30}), "64-bit"),
    (lambda: QueryBuilder().append(Int, filters={"attributes.value": -(10**20)}), "64-bit"),
    (lambda: QueryBuilder().append(Node, filters={"label": "a\x00b"}), "NUL"),
    (lambda: QueryBuilder().append(Node, filters={"label": {"in": ["\ud800"]}}), "surrogate"),
    (lambda: QueryBuilder().append(Node, filters={"label": datetime.datetime.now()}), "time"),
    (lambda: QueryBuilder().append(Node).limit(True), "limit"),
    (
        lambda: QueryBuilder().append(Node, tag="n").order_by({"n": {"id": {"ordr": "desc"}}}),
        "unknown key 'ordr'",
    ),
]


def test_values_no_database_compares_are_refused_alike(backend_db: Any) -> None:
    for build, message in REFUSED:
        with pytest.raises(QueryError, match=".*" + message) as caught:
            build().all()
        assert isinstance(caught.value, MiniengineError) and isinstance(caught.value, ValueError)


def test_rows_without_the_value_sort_alike_on_both_backends(backend_db: Any) -> None:
    """A missing extra sorts where PostgreSQL puts NULL (last ascending, first descending) on
    both backends (sqlite's own default is the opposite), unless ``nulls_last`` says where."""
    for rank in (2, None, 1):
        node = Str(f"rank {rank}").store()
        if rank is not None:
            node.base.extras.set("rank", rank)

    def ranks(how: Any) -> list[Any]:
        qb = QueryBuilder().append(Str, tag="s", project="extras.rank")
        return qb.order_by({"s": [{"extras.rank": how}, "id"]}).all(flat=True)

    assert ranks("asc") == [1, 2, None]
    assert ranks("desc") == [None, 2, 1]
    assert ranks({"order": "desc", "nulls_last": True}) == [2, 1, None]
    assert ranks({"order": "asc", "nulls_last": False}) == [None, 1, 2]
    with pytest.raises(QueryError, match="nulls_last is True or False"):
        ranks({"order": "asc", "nulls_last": "yes"})


def test_iterall_reads_every_row_while_the_loop_changes_them(backend_db: Any) -> None:
    """AiiDA's loop that marks what it handled (the filter then no longer selects it) or
    deletes it: every row is read once, where pages by offset skipped half of them."""
    from miniengine.tools import delete_nodes

    pks = [Int(i).store().pk for i in range(25)]
    todo = QueryBuilder().append(Int, filters={"extras": {"!has_key": "done"}})
    seen = []
    for (node,) in todo.iterall(batch_size=4):
        node.base.extras.set("done", True)
        seen.append(node.pk)
    assert seen == pks and todo.count() == 0
    deleted = []
    for pk, value in QueryBuilder().append(Int, project=["id", "attributes.value"]).iterall(3):
        delete_nodes([pk], dry_run=False)
        deleted.append((pk, value))
    assert deleted == [(pk, i) for i, pk in enumerate(pks)]
    assert QueryBuilder().append(Int).count() == 0


def test_projected_extras_keep_one_key_order(backend_db: Any) -> None:
    """A projected extras dict reads in the order ``node.base.extras`` gives (sorted), not in
    jsonb's order on PostgreSQL."""
    node = Int(3).store()
    node.base.extras.set_many({"zeta": {"yy": 1, "b": 2}, "a": 1})
    qb = QueryBuilder().append(Int, filters={"id": node.pk}, project=["extras", "extras.zeta"])
    ((extras, zeta),) = qb.all()
    assert (
        repr(extras) == "{'a': 1, 'zeta': {'b': 2, 'yy': 1}}" and repr(zeta) == "{'b': 2, 'yy': 1}"
    )
