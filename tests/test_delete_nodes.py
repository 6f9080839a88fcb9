"""Deleting nodes with AiiDA's DELETE traversal rules, on sqlite and on PostgreSQL.

The nodes a deletion takes are checked against a closure computed here, in Python, from AiiDA's
rules written out again, on a provenance graph built by the test: a workfunction calling
calcfunctions, a WorkChain with submitted children, and inputs shared between them.
"""

from __future__ import annotations

from typing import Any

import pytest

from miniengine import (
    Group,
    Int,
    InvalidOperation,
    WorkChain,
    calcfunction,
    run,
    workfunction,
)
from miniengine.core.graph_rules import DELETE, EXPORT
from miniengine.runtime.context import current_process, store_for
from miniengine.tools import delete_nodes
from tests.test_cli import cli

pytestmark = pytest.mark.backends

#: AiiDA's deletion rules, written out again: (link type, forwards) -> followed by default.
AIIDA_DELETE = {
    ("input_calc", True): True,
    ("input_calc", False): False,
    ("create", True): True,
    ("create", False): True,
    ("return", True): False,
    ("return", False): True,
    ("input_work", True): True,
    ("input_work", False): False,
    ("call_calc", True): True,
    ("call_calc", False): True,
    ("call_work", True): True,
    ("call_work", False): True,
}


@calcfunction
def add(x: Any, y: Any) -> Int:
    return Int(x + y)


@calcfunction
def double(x: Any) -> Int:
    return Int(2 * x)


@workfunction
def add_and_double(x: Any, y: Any) -> Any:
    return double(add(x, y))


class Child(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("result", valid_type=Int)
        spec.outline(cls.compute)

    def compute(self) -> None:
        self.out("result", double(self.inputs.x))


class Parent(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", valid_type=Int)
        spec.output("result", valid_type=Int)
        spec.outline(cls.launch, cls.collect)

    def launch(self) -> Any:
        return {"one": self.submit(Child, x=self.inputs.x), "two": self.submit(Child, x=Int(7))}

    def collect(self) -> None:
        self.out("result", self.ctx.two.outputs.result)


def _graph() -> dict[str, Any]:
    """The provenance graph of the test: its nodes by name, and every pk."""
    shared = Int(3).store()
    other = Int(4).store()
    result, workfunction_node = run.get_node(add_and_double, shared, other)
    _, lone_node = run.get_node(add, shared, Int(10))
    outputs, parent = run.get_node(Parent, x=shared)
    last = Int(0).store()
    store = store_for(None)
    pks = sorted(store.provenance.nodes(list(range(1, last.pk + 1))))
    return {
        "shared": shared.pk,
        "other": other.pk,
        "result": result.pk,
        "workfunction": workfunction_node.pk,
        "lone": lone_node.pk,
        "parent": parent.pk,
        "parent_result": outputs["result"].pk,
        "pks": pks,
    }


def _links() -> list[tuple[int, int, str]]:
    store = store_for(None)
    pks = sorted(store.provenance.nodes(list(range(1, 10_000))))
    return [
        (link.in_pk, link.out_pk, link.link_type)
        for link in store.traversal.neighbour_links(pks, incoming=False)
    ]


def _expected(start: list[int], rules: dict[tuple[str, bool], bool]) -> set[int]:
    """The closure of ``start`` under ``rules``, computed without the engine's traversal."""
    links = _links()
    found = set(start)
    changed = True
    while changed:
        changed = False
        for in_pk, out_pk, link_type in links:
            if in_pk in found and out_pk not in found and rules[(link_type, True)]:
                found.add(out_pk)
                changed = True
            if out_pk in found and in_pk not in found and rules[(link_type, False)]:
                found.add(in_pk)
                changed = True
    return found


def test_rule_sets_are_aiidas() -> None:
    assert {(r.link_type.value, r.forward): r.default for r in DELETE.rules} == AIIDA_DELETE
    assert set(DELETE.toggleable) == {"create_forward", "call_calc_forward", "call_work_forward"}
    assert EXPORT.links().backward == {
        "input_calc",
        "create",
        "input_work",
        "call_calc",
        "call_work",
    }
    assert EXPORT.links(call_work_backward=False).backward == {
        "input_calc",
        "create",
        "input_work",
        "call_calc",
    }
    assert EXPORT.links().forward == {"create", "return", "call_calc", "call_work"}
    with pytest.raises(ValueError, match="cannot be changed"):
        DELETE.links(input_calc_forward=False)
    with pytest.raises(ValueError, match="not a traversal rule"):
        DELETE.links(sideways=True)


def test_deletion_follows_aiidas_rules_and_leaves_no_dangling_link(backend_db: Any) -> None:
    graph = _graph()
    store = store_for(None)
    for pk in graph["pks"]:
        assert delete_nodes([pk])[0] == _expected([pk], AIIDA_DELETE), pk
    no_create = {**AIIDA_DELETE, ("create", True): False, ("call_calc", True): False}
    for name in ("workfunction", "parent"):
        found, deleted = delete_nodes(
            [graph[name]], dry_run=True, create_forward=False, call_calc_forward=False
        )
        assert not deleted and found == _expected([graph[name]], no_create)
    # a dry run changed nothing
    assert sorted(store.provenance.nodes(graph["pks"])) == graph["pks"]

    group = Group(label="kept and deleted").store()
    group.add_nodes([Int(99).store(), _node(graph["result"])])
    _node(graph["result"]).base.comments.add("about to go")
    expected = _expected([graph["other"]], AIIDA_DELETE)
    deleted, done = delete_nodes([graph["other"]], dry_run=False)
    assert done and deleted == expected
    assert graph["workfunction"] in deleted and graph["result"] in deleted
    assert graph["shared"] not in deleted and graph["lone"] not in deleted
    left = set(store.provenance.nodes(list(range(1, 10_000))))
    assert not left & deleted
    for in_pk, out_pk, _ in _links():
        assert in_pk in left and out_pk in left
    assert graph["result"] not in group_pks(group) and group.count() == 1

    # deleting the shared input takes every process that used it, and what they made
    deleted, _ = delete_nodes([graph["shared"]], dry_run=False)
    assert graph["parent"] in deleted and graph["lone"] in deleted
    assert set(store.provenance.nodes(list(range(1, 10_000)))) == (left - deleted)


def _node(pk: int) -> Any:
    from miniengine import load_node

    return load_node(pk)


def group_pks(group: Group) -> list[int]:
    return [node.pk for node in group.nodes]


def test_a_live_process_is_refused_and_nothing_is_deleted(backend_db: Any) -> None:
    refused: list[str] = []

    @calcfunction
    def deletes_itself(x: Any) -> Any:
        process = current_process()
        assert process is not None and process.pk is not None
        with pytest.raises(InvalidOperation, match=rf"live processes: {process.pk} ") as info:
            delete_nodes([x.pk], dry_run=False)
        refused.append(str(info.value))
        return Int(x + 1)

    data = Int(1).store()
    result, node = run.get_node(deletes_itself, data)
    assert "deletes_itself" in refused[0] and "kill" in refused[0]
    assert _node(data.pk).value == 1 and result.value == 2  # nothing was deleted
    # once it ended, it may go
    assert delete_nodes([data.pk], dry_run=False) == ({data.pk, node.pk, result.pk}, True)


@pytest.mark.long_on(
    "postgresql", reason="the command's parsing and printing; delete_nodes runs on both backends"
)
def test_node_delete_command(backend_db: Any) -> None:
    result, node = run.get_node(add_and_double, Int(1), Int(2))
    kept = Int(5).store()
    store = store_for(None)
    before = sorted(store.provenance.nodes(list(range(1, 100))))
    dry = cli("node", "delete", str(node.pk), "--dry-run", db=backend_db)
    assert dry.returncode == 0 and "dry run: nothing deleted" in dry.stdout, dry
    refused = cli("node", "delete", str(node.pk), db=backend_db)  # no terminal to ask on
    assert refused.returncode == 1 and "pass -f" in refused.stderr
    assert sorted(store.provenance.nodes(list(range(1, 100)))) == before
    done = cli("node", "delete", str(node.pk), "--force", "--no-create-forward", db=backend_db)
    assert done.returncode == 0, done
    left = set(store.provenance.nodes(list(range(1, 100))))
    assert node.pk not in left and result.pk in left and kept.pk in left


def test_confirmation_callback_group_nodes_and_export_sets(backend_db: Any) -> None:
    from miniengine.tools import delete_group_nodes, get_nodes_delete, get_nodes_export

    x, y = Int(1).store(), Int(2).store()
    result, _ = run.get_node(add_and_double, x, y)
    everything = set(range(x.pk, result.pk + 1))  # x, y, wf, add, sum, double, result
    # export takes the inputs, the creators and the callers: the whole graph from the result
    assert get_nodes_export([result.pk])["nodes"] == everything
    expected = get_nodes_delete([x.pk])["nodes"]
    asked: list[set[int]] = []
    found, deleted = delete_nodes([x.pk], dry_run=lambda pks: asked.append(pks) or True)
    assert (found, deleted) == (expected, False) and asked == [expected]
    group = Group(label="to clear").store()
    group.add_nodes([x, y])
    found, deleted = delete_group_nodes([group.pk], dry_run=lambda pks: False)
    assert deleted and found == everything and group.count() == 0
    assert load_group_exists(group.pk)


def load_group_exists(pk: int) -> bool:
    from miniengine import load_group

    return load_group(pk).pk == pk


def test_many_batches_leave_no_row_behind(backend_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes, links and memberships spread over many batches of the statements (on PostgreSQL
    every foreign key is checked at each statement)."""
    from miniengine.storage import traversal_rows

    monkeypatch.setattr(traversal_rows, "_BATCH", 3)
    x = Int(0).store()
    outputs, _ = run.get_node(Parent, x=x)
    group = Group(label="spread").store()
    group.add_nodes([x, outputs["result"]])
    expected = _expected([x.pk], AIIDA_DELETE)
    assert len(expected) > 2 * 3  # three batches at least
    assert delete_nodes([x.pk]) == (expected, False)
    assert delete_nodes([x.pk], dry_run=False) == (expected, True)
    store = store_for(None)
    assert not set(store.provenance.nodes(sorted(expected)))
    assert group.count() == 0 and not _links()


def test_what_names_no_node_is_refused_before_anything_is_deleted(backend_db: Any) -> None:
    """``int()`` read an ``Int(6)`` node as the pk 6 and ``True`` as the pk 1, and deleted those
    nodes; a node is taken by its pk, and what names no node is refused, naming it."""
    from miniengine import Group, MiniengineError, load_node
    from miniengine.core.graph_rules import TraversalRuleError
    from miniengine.tools.deletions import PkTypeError, delete_group_nodes

    first = Int(100).store()  # the node whose pk a wrong reading would give
    for _ in range(8):
        Int(0).store()
    victim = Int(first.pk).store()  # its value is the pk of ``first``
    assert delete_nodes([victim])[0] == {victim.pk}
    assert delete_nodes([str(victim.pk)])[0] == {victim.pk}
    for bad in ([True], ["abc"], [1.0], [None], "12", 7, [Int(5)], [Group(label="g")]):
        with pytest.raises(PkTypeError) as caught:
            delete_nodes(bad, dry_run=False)  # type: ignore[arg-type]
        assert isinstance(caught.value, MiniengineError) and isinstance(caught.value, TypeError)
    with pytest.raises(PkTypeError, match="dry_run"):
        delete_nodes([victim.pk], dry_run="no")  # type: ignore[arg-type]
    with pytest.raises(TraversalRuleError, match="True or False, not 'no'"):
        delete_nodes([victim.pk], dry_run=False, create_forward="no")  # type: ignore[arg-type]
    with pytest.raises(PkTypeError, match="not a group pk"):
        delete_group_nodes(["one"], dry_run=False)
    assert load_node(first.pk).value == 100 and load_node(victim.pk).value == first.pk
    group = Group(label="doomed").store()
    group.add_nodes(victim)
    assert delete_group_nodes([group], dry_run=False) == ({victim.pk}, True)
    assert load_node(first.pk).value == 100


def test_a_deleted_node_says_so_when_its_label_is_changed(backend_db: Any) -> None:
    """Setting the label or description of a node object whose node was deleted changed
    nothing and said nothing; it raises ``NotExistent``, as its extras and comments do."""
    from miniengine.exceptions import NotExistent

    data = Int(1).store()
    _, process = run.get_node(add, Int(1), Int(2))
    delete_nodes([data.pk, process.pk], dry_run=False)
    for node in (data, process):
        with pytest.raises(NotExistent, match=f"no node with the pk {node.pk}"):
            node.label = "gone"
        with pytest.raises(NotExistent, match=f"no node with the pk {node.pk}"):
            node.description = "gone"
        with pytest.raises(NotExistent):
            node.base.extras.set("gone", True)


def test_node_delete_json_for_scripts(backend_db: Any) -> None:
    """``node delete --json`` prints the nodes (with --dry-run: that would go) and whether they
    were deleted, as JSON; without --dry-run or --force it cannot ask, and refuses first."""
    import json

    result, node = run.get_node(add, Int(1), Int(2))
    store = store_for(None)
    dry = cli("node", "delete", str(node.pk), "--dry-run", "--json", db=backend_db)
    assert dry.returncode == 0, dry
    listed = json.loads(dry.stdout)
    assert listed["deleted"] is False
    assert [(n["pk"], n["process_label"]) for n in listed["nodes"]] == [
        (node.pk, "add"),
        (result.pk, None),
    ]
    assert listed["nodes"][1]["type"] == "core.int" and listed["nodes"][0]["uuid"] == node.uuid
    refused = cli("node", "delete", str(node.pk), "--json", db=backend_db)
    assert refused.returncode == 1 and "--dry-run or --force" in refused.stderr
    assert node.pk in store.provenance.nodes([node.pk])
    done = cli("node", "delete", str(node.pk), "-f", "--json", db=backend_db)
    assert done.returncode == 0, done
    gone = json.loads(done.stdout)
    assert gone["deleted"] is True and {n["pk"] for n in gone["nodes"]} == {node.pk, result.pk}
    assert store.provenance.nodes([node.pk, result.pk]) == {}
