"""Provenance graphs as Graphviz (``miniengine.tools.Graph`` and ``miniengine node graph``), on
sqlite and on PostgreSQL: the nodes and links for each depth and direction, AiiDA's styles,
escaped labels, svg when Graphviz's ``dot`` is installed and dot text when it is not."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from miniengine import Int, Str, calcfunction, run, workfunction
from miniengine.tools import Graph
from miniengine.tools.graph import pstate_node_styles
from tests.workchains.daemon_chains import python_env

pytestmark = pytest.mark.backends

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is missing")


@calcfunction
def add(x: Any, y: Any) -> Int:
    return Int(x + y)


@calcfunction
def double(x: Any) -> Int:
    return Int(2 * x)


@workfunction
def add_and_double(x: Any, y: Any) -> Any:
    return double(add(x, y))


def _provenance() -> dict[str, int]:
    """x, y -> add_and_double (calls add: x + y = s, then double: 2 s = r, returns r)."""
    x, y = Int(1).store(), Int(2).store()
    result, node = run.get_node(add_and_double, x, y)
    add_node, double_node = sorted(node.called, key=lambda child: child.pk)
    return {
        "x": x.pk,
        "y": y.pk,
        "wf": node.pk,
        "add": add_node.pk,
        "double": double_node.pk,
        "s": add_node.outputs.result.pk,
        "r": result.pk,
    }


def _names(pks: dict[str, int], found: set[int]) -> set[str]:
    return {name for name, pk in pks.items() if pk in found}


def _edges(pks: dict[str, int], graph: Graph) -> set[tuple[str, str, str]]:
    by_pk = {pk: name for name, pk in pks.items()}
    return {(by_pk[a], by_pk[b], pair.link_type.value) for a, b, pair in graph.edges if pair}


def test_depths_and_directions(backend_db: Any) -> None:
    pks = _provenance()
    graph = Graph()
    graph.recurse_descendants(pks["x"], depth=1)
    assert _names(pks, graph.nodes) == {"x", "wf", "add"}
    assert _edges(pks, graph) == {("x", "wf", "input_work"), ("x", "add", "input_calc")}
    graph = Graph()
    graph.recurse_descendants(pks["x"], depth=2)
    assert _names(pks, graph.nodes) == {"x", "wf", "add", "double", "s", "r"}
    graph = Graph()
    graph.recurse_descendants(pks["x"])
    assert _names(pks, graph.nodes) == {"x", "wf", "add", "double", "s", "r"}
    assert ("s", "double", "input_calc") in _edges(pks, graph)

    graph = Graph()
    graph.recurse_ancestors(pks["r"], depth=1)
    assert _names(pks, graph.nodes) == {"r", "double", "wf"}
    graph = Graph()
    graph.recurse_ancestors(pks["s"], depth=2)
    assert _names(pks, graph.nodes) == {"s", "add", "x", "y", "wf"}
    graph = Graph()  # with the outputs (CREATE, RETURN) of what was reached: wf returned r
    graph.recurse_ancestors(pks["s"], depth=2, include_process_outputs=True)
    assert _names(pks, graph.nodes) == {"s", "add", "x", "y", "wf", "r"}
    assert ("wf", "r", "return") in _edges(pks, graph)
    graph = Graph()
    graph.recurse_ancestors(pks["r"])
    assert _names(pks, graph.nodes) == set(pks)

    graph = Graph()  # with the inputs (INPUT links) of what was reached: y into wf and add
    graph.recurse_descendants(pks["x"], depth=1, include_process_inputs=True)
    assert _names(pks, graph.nodes) == {"x", "y", "wf", "add"}
    assert ("y", "add", "input_calc") in _edges(pks, graph)
    graph = Graph()
    incoming = graph.add_incoming(pks["add"], link_types=["input_calc"])
    assert sorted(incoming) == sorted([pks["add"], pks["x"], pks["y"]])
    assert graph.add_outgoing(pks["wf"], link_types="return") == [pks["wf"], pks["r"]]
    _, returned = graph.add_outgoing(pks["wf"], link_types=["return"], return_pks=False)
    assert returned.pk == pks["r"] and returned.value == 6


def test_styles_and_escaped_labels(backend_db: Any) -> None:
    pks = _provenance()
    odd = Str('say "hi" \\ bye').store()
    graph = Graph()
    graph.recurse_ancestors(pks["r"], annotate_links="both")
    graph.add_node(odd)
    source = graph.graphviz.source
    # the origin is outlined in red; data are green ellipses showing their value
    assert f'N{pks["r"]} [label="Int ({pks["r"]})\nvalue: 6" color=red' in source
    assert f'N{pks["x"]} [label="Int ({pks["x"]})\nvalue: 1" fillcolor="#8cd499ff"' in source
    assert "shape=ellipse" in source
    # calcfunctions light red, workflows orange rectangles, with their state and exit code
    wf_text = f'label="add_and_double ({pks["wf"]})\nState: finished\nExit Code: 0"'
    assert f'{wf_text} fillcolor="#e38851ff" penwidth=0 shape=rectangle' in source
    assert f'N{pks["add"]} [label="add ({pks["add"]})' in source and "#de707f77" in source
    assert f'N{pks["wf"]} -> N{pks["r"]} [label="RETURN\nresult" color="#000000" style=dashed]' in (
        source
    )
    assert 'say \\"hi\\" \\\\ bye' in source  # a Str shows its value; dot one backslash

    by_state = Graph(node_style_fn=pstate_node_styles, node_id_type=["pk", "uuid"])
    by_state.recurse_descendants(pks["wf"], depth=1)
    source = by_state.graphviz.source
    assert "shape=polygon sides=6" in source and "shape=ellipse" in source
    assert 'fillcolor="#8cd499ff"' in source and "shape=rectangle" in source  # data: plain
    assert f"add_and_double ({pks['wf']}|" in source


def _node_graph(cwd: Path, db: Any, *args: str, path: str | None = None) -> Any:
    env = python_env()
    env.pop("MINIENGINE_DB", None)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "miniengine", "node", "graph", *args, "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_graph_command_writes_dot_text_without_dot(backend_db: Any, tmp_path: Path) -> None:
    pks = _provenance()
    empty = tmp_path / "no-programs"
    empty.mkdir()
    done = _node_graph(tmp_path, backend_db, str(pks["wf"]), path=str(empty))
    assert done.returncode == 0, done.stderr
    assert "dot program is not installed" in done.stdout
    source = (tmp_path / f"{pks['wf']}.dot").read_text()
    assert source.startswith("digraph {") and f"N{pks['x']} -> N{pks['wf']}" in source
    assert not (tmp_path / f"{pks['wf']}.dot.svg").exists()
    limited = _node_graph(
        tmp_path, backend_db, str(pks["x"]), "-f", "dot", "-o", "x.dot", "-a", "0", "-l", "data"
    )
    assert limited.returncode == 0, limited.stderr
    text = (tmp_path / "x.dot").read_text()  # data provenance only: no workfunction
    assert f"N{pks['x']} -> N{pks['add']}" in text and f"N{pks['s']} -> N{pks['double']}" in text
    assert f"N{pks['wf']}" not in text and "INPUT_WORK" not in text


@needs_dot
def test_graph_command_writes_svg_with_dot(backend_db: Any, tmp_path: Path) -> None:
    pks = _provenance()
    done = _node_graph(tmp_path, backend_db, str(pks["r"]), "--process-out")
    assert done.returncode == 0, done.stderr
    svg = (tmp_path / f"{pks['r']}.dot.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert f"add_and_double ({pks['wf']})" in svg and f"add ({pks['add']})" in svg


@needs_dot
def test_huge_labels_and_values_are_clipped_so_dot_draws_them(
    backend_db: Any, tmp_path: Path
) -> None:
    """A label of 50,000 characters (drawn with ``--identifier label``), a long Str of many
    lines: each drawn node shows a clipped part of them, where ``dot`` refused the whole text."""
    pks = _provenance()
    from miniengine import load_node

    x = Str("v" * 50_000 + "\n" * 100).store()

    load_node(pks["wf"]).label = "L" * 50_000
    done = _node_graph(
        tmp_path, backend_db, str(pks["wf"]), "--identifier", "label", "-o", "wf.svg"
    )
    assert done.returncode == 0, done.stderr
    svg = (tmp_path / "wf.svg").read_text()
    assert "L" * 50 in svg and "L" * 100 not in svg and "…" in svg
    done = _node_graph(tmp_path, backend_db, str(x.pk), "-o", "x.svg")
    assert done.returncode == 0, done.stderr
    svg = (tmp_path / "x.svg").read_text()
    assert "v" * 70 in svg and "v" * 100 not in svg
